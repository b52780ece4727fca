"""Language-model metrics (docs/design.md, "Language-model metrics"): the model's next-token
predictions with the SAE spliced in.

On the held-out sequences, the hooked site's output h is replaced at the spliced positions:
    clean  h unchanged
    sae    h -> x_hat(h * s) / s      (s: the normalisation scalar the SAE was trained with)
    zero   h -> 0
    mean   h -> mu, the mean of h over the spliced positions of the held-out sequences
CE_r is the mean next-token cross-entropy over every position of every sequence with
replacement r; KL_r the mean over the same positions of KL(P_clean || P_r) of the next-token
distributions. Then
    loss_recovered       = (CE_zero - CE_sae) / (CE_zero - CE_clean)
    loss_recovered_mean  = (CE_mean - CE_sae) / (CE_mean - CE_clean)
    delta_lm_loss        = CE_sae - CE_clean
    kl_score             = (KL_zero - KL_sae) / KL_zero          (SAEBench's kl_div_score)
    kl_score_mean        = (KL_mean - KL_sae) / KL_mean
The spliced positions are those the SAE was trained on: with `exclude_special_tokens`,
BOS/EOS keep their clean activation in every run. The data side (the model, its hooked
site, the held-out sequences) is `data.hf.HeldOutLM`; the names are the catalogue's `lm`
metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..data.hf_model import LoadedModel, find_site, replaced_output, site_activations


@torch.no_grad()
def mean_ce(model: torch.nn.Module, tokens: torch.Tensor, batch_size: int) -> float:
    """Mean next-token cross-entropy (nats) of `model` over (N, T) token ids."""
    total, count = torch.zeros((), dtype=torch.float64), 0
    for ids in tokens.split(batch_size):
        logits = model(input_ids=ids).logits[:, :-1].float()  # (B, T-1, vocab)
        total += _ce_sum(logits, ids[:, 1:]).cpu()
        count += ids[:, 1:].numel()
    return (total / count).item()


def _ce_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of (B, T', vocab) logits against (B, T') targets, float64."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
    return ce.double()


def _kl_sum(clean_logp: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Sum over positions of KL(P_clean || P) for (B, T', vocab) inputs, float64."""
    logp = logits.log_softmax(-1)
    return (clean_logp.exp() * (clean_logp - logp)).sum().double()


@torch.no_grad()
def site_mean(
    lm: LoadedModel, site_name: str, tokens: torch.Tensor, exclude_ids: list[int], batch_size: int
) -> torch.Tensor:
    """(d,) mean of the site's clean output over the positions the SAE is spliced into."""
    site = find_site(lm.model, site_name)
    excluded = torch.tensor(exclude_ids, dtype=tokens.dtype, device=lm.device)
    total, count = None, 0
    for ids in tokens.to(lm.device).split(batch_size):
        h = site_activations(lm.model, site, ids)  # (B, T, d)
        kept = h[~torch.isin(ids, excluded)].double()
        total = kept.sum(0) if total is None else total + kept.sum(0)
        count += kept.shape[0]
    return (total / max(count, 1)).float()


def evaluate_lm(held_out, sae, norm_scale: float) -> dict[str, float]:
    """Every LM metric of `sae` spliced into `held_out` (a `data.hf.HeldOutLM`)."""
    return lm_metrics(
        held_out.model(),
        held_out.site,
        held_out.tokens(),
        sae_reconstruction(sae, norm_scale),
        held_out.exclude_ids,
        held_out.batch_size,
    )


@torch.no_grad()
def lm_metrics(
    lm: LoadedModel,
    site_name: str,
    tokens: torch.Tensor,
    reconstruct: Callable[[torch.Tensor], torch.Tensor],
    exclude_ids: list[int],
    batch_size: int,
) -> dict[str, float]:
    """Every `lm` metric of the catalogue for a reconstruction function (N', d) -> (N', d),
    in model units."""
    site = find_site(lm.model, site_name)
    tokens = tokens.to(lm.device)
    excluded = torch.tensor(exclude_ids, dtype=tokens.dtype, device=lm.device)
    mu = site_mean(lm, site_name, tokens, exclude_ids, batch_size)
    replacements = {
        "sae": reconstruct,
        "zero": torch.zeros_like,
        "mean": lambda h: mu.to(h.device, h.dtype).expand_as(h),
    }
    ce = dict.fromkeys(["clean", *replacements], torch.zeros((), dtype=torch.float64))
    kl = dict.fromkeys(replacements, torch.zeros((), dtype=torch.float64))
    count = 0
    for ids in tokens.split(batch_size):
        keep = ~torch.isin(ids, excluded)  # (B, T): the positions to replace
        targets = ids[:, 1:]
        clean = lm.model(input_ids=ids).logits[:, :-1].float()
        clean_logp = clean.log_softmax(-1)
        ce["clean"] = ce["clean"] + _ce_sum(clean, targets).cpu()
        for name, replacement in replacements.items():
            with replaced_output(site, _at_positions(keep, replacement)):
                logits = lm.model(input_ids=ids).logits[:, :-1].float()
            ce[name] = ce[name] + _ce_sum(logits, targets).cpu()
            kl[name] = kl[name] + _kl_sum(clean_logp, logits).cpu()
        count += targets.numel()
    ce = {k: (v / count).item() for k, v in ce.items()}
    kl = {k: (v / count).item() for k, v in kl.items()}
    return {
        "loss_recovered": _score(ce["zero"] - ce["sae"], ce["zero"] - ce["clean"]),
        "loss_recovered_mean": _score(ce["mean"] - ce["sae"], ce["mean"] - ce["clean"]),
        "delta_lm_loss": ce["sae"] - ce["clean"],
        "ce_clean": ce["clean"],
        "ce_sae": ce["sae"],
        "ce_zero": ce["zero"],
        "ce_mean": ce["mean"],
        "kl_div": kl["sae"],
        "kl_zero": kl["zero"],
        "kl_mean": kl["mean"],
        "kl_score": _score(kl["zero"] - kl["sae"], kl["zero"]),
        "kl_score_mean": _score(kl["mean"] - kl["sae"], kl["mean"]),
    }


def _at_positions(keep: torch.Tensor, replacement: Callable[[torch.Tensor], torch.Tensor]):
    """h (B, T, d) -> h with `replacement` applied to the rows where `keep` (B, T) is true."""

    def replace(h: torch.Tensor) -> torch.Tensor:
        out = h.clone()
        out[keep] = replacement(h[keep]).to(h.dtype)
        return out

    return replace


def _score(gain: float, scale: float) -> float:
    """gain / scale, NaN when the ablation does not move the model (scale 0)."""
    return gain / scale if scale != 0 else float("nan")


def sae_reconstruction(sae, norm_scale: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """h (N, d) in model units -> x_hat(h * s) / s, the SAE's reconstruction in model units."""
    param = next(sae.parameters())

    def reconstruct(h: torch.Tensor) -> torch.Tensor:
        x = h.to(param.device, param.dtype) * norm_scale
        return (sae(x).x_hat / norm_scale).to(h.device)

    return reconstruct
