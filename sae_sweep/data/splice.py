"""Loss recovered (docs/design.md, "Metrics"): the language model's loss with the SAE
spliced in at the site.

On the held-out sequences, with the hooked site's output h replaced at the spliced positions:
    CE_clean  h unchanged
    CE_sae    h -> x_hat(h * s) / s      (s: the normalisation scalar the SAE was trained with)
    CE_zero   h -> 0
    loss_recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean)
    delta_lm_loss  = CE_sae - CE_clean
CE is the mean next-token cross-entropy over every position of every sequence. The spliced
positions are those the SAE was trained on: with `exclude_special_tokens`, BOS/EOS keep their
clean activation in all three runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .hf_model import LoadedModel, find_site, replaced_output

LM_METRICS = ("loss_recovered", "delta_lm_loss", "ce_clean", "ce_sae", "ce_zero")


@torch.no_grad()
def mean_ce(model: torch.nn.Module, tokens: torch.Tensor, batch_size: int) -> float:
    """Mean next-token cross-entropy (nats) of `model` over (N, T) token ids."""
    total, count = torch.zeros((), dtype=torch.float64), 0
    for ids in tokens.split(batch_size):
        logits = model(input_ids=ids).logits[:, :-1].float()  # (B, T-1, vocab)
        targets = ids[:, 1:]
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
        )
        total += ce.double().cpu()
        count += targets.numel()
    return (total / count).item()


@torch.no_grad()
def loss_recovered(
    lm: LoadedModel,
    site_name: str,
    tokens: torch.Tensor,
    reconstruct: Callable[[torch.Tensor], torch.Tensor],
    exclude_ids: list[int],
    batch_size: int,
) -> dict[str, float]:
    """The five LM metrics for a reconstruction function (N', d) -> (N', d) in model units."""
    site = find_site(lm.model, site_name)
    tokens = tokens.to(lm.device)
    excluded = torch.tensor(exclude_ids, dtype=tokens.dtype, device=lm.device)
    current: dict[str, torch.Tensor] = {}

    def splice(replacement: Callable[[torch.Tensor], torch.Tensor]):
        def replace(h: torch.Tensor) -> torch.Tensor:  # h: (B, T, d)
            keep = ~torch.isin(current["ids"], excluded)  # (B, T): positions to replace
            out = h.clone()
            out[keep] = replacement(h[keep]).to(h.dtype)
            return out

        return replaced_output(site, replace)

    def ce(replacement=None) -> float:
        total, count = 0.0, 0
        for ids in tokens.split(batch_size):
            current["ids"] = ids
            if replacement is None:
                value = mean_ce(lm.model, ids, batch_size)
            else:
                with splice(replacement):
                    value = mean_ce(lm.model, ids, batch_size)
            total += value * ids[:, 1:].numel()
            count += ids[:, 1:].numel()
        return total / count

    clean = ce()
    with_sae = ce(reconstruct)
    zero = ce(torch.zeros_like)
    return {
        "loss_recovered": (zero - with_sae) / (zero - clean),
        "delta_lm_loss": with_sae - clean,
        "ce_clean": clean,
        "ce_sae": with_sae,
        "ce_zero": zero,
    }


def sae_reconstruction(sae, norm_scale: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """h (N, d) in model units -> x_hat(h * s) / s, the SAE's reconstruction in model units."""
    param = next(sae.parameters())

    def reconstruct(h: torch.Tensor) -> torch.Tensor:
        x = h.to(param.device, param.dtype) * norm_scale
        return (sae(x).x_hat / norm_scale).to(h.device)

    return reconstruct
