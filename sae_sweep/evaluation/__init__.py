"""Held-out evaluation of a trained SAE (DESIGN 3)."""

from __future__ import annotations

import torch

from ..data.source import ActivationSource
from ..data.splice import LM_METRICS
from ..models.base import SparseAutoencoder
from .metrics import StreamingMetrics, fvu, l0, l2_ratio, mmcs, mse, shrinkage

__all__ = ["StreamingMetrics", "evaluate", "fvu", "l0", "l2_ratio", "mmcs", "mse", "shrinkage"]


@torch.no_grad()
def evaluate(
    sae: SparseAutoencoder,
    source: ActivationSource,
    norm_scale: float,
    batch_size: int,
    firing: dict | None = None,
) -> dict[str, float | None]:
    """Every metric on the held-out split, in normalised units (MSE also in original units).

    `firing`, when given, receives `frequency`: the (M,) per-latent firing frequency.
    """
    was_training = sae.training
    sae.eval()
    acc = StreamingMetrics(sae.d_sae, sae.W_dec.device)
    dtype = sae.W_dec.dtype
    for x in source.eval_batches(batch_size):
        x = x.to(sae.W_dec.device, dtype) * norm_scale
        out = sae(x)
        acc.update(x, out.x_hat, out.f)
    sae.train(was_training)
    result: dict[str, float | None] = acc.result()
    if firing is not None:
        firing["frequency"] = acc.firing_frequency().float().cpu()
    result["mse_original_units"] = result["mse"] / norm_scale**2
    result["mmcs"] = result["frac_recovered"] = result["mmcs_random"] = None
    if source.ground_truth is not None:
        m, frac = mmcs(source.ground_truth, sae.W_dec.float())
        result["mmcs"], result["frac_recovered"] = m.item(), frac.item()
        result["mmcs_random"] = _random_dictionary_mmcs(source.ground_truth, sae.d_sae)
    # Loss recovered, when the source has a live causal LM to splice the SAE into
    result.update(dict.fromkeys(LM_METRICS))
    lm_eval = getattr(source, "lm_eval", None)
    if lm_eval is not None:
        sae.eval()
        result.update(lm_eval(sae, norm_scale))
        sae.train(was_training)
    return result


def _random_dictionary_mmcs(true_directions: torch.Tensor, d_sae: int) -> float:
    """MMCS of a random dictionary of the same size: the chance level MMCS is compared with."""
    gen = torch.Generator().manual_seed(0)
    random_dec = torch.randn(true_directions.shape[1], d_sae, generator=gen)
    return mmcs(true_directions.cpu().float(), random_dec)[0].item()
