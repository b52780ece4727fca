"""Held-out evaluation of a trained SAE (docs/design.md, "Metrics").

catalogue.py     every metric a job records: name, title, direction, who reads it
metrics.py       the activation metrics' definitions, and their streaming form
ground_truth.py  synthetic data's metrics against its true features, as SAELens defines them
lm.py            the language-model metrics: the SAE spliced into the model
reevaluate.py    evaluate finished SAEs again after a definition changed
"""

from __future__ import annotations

import math

import torch

from ..data.source import ActivationSource, DataError, held_out_batches
from ..models.base import SparseAutoencoder
from ..training.memory import eval_rows_that_fit
from .catalogue import names
from .ground_truth import GroundTruthMetrics
from .lm import evaluate_lm
from .metrics import StreamingMetrics, fvu, l0, l2_ratio, mmcs, mse, shrinkage

__all__ = [
    "NonFiniteMetricsError",
    "StreamingMetrics",
    "check_finite_metrics",
    "evaluate",
    "fvu",
    "l0",
    "l2_ratio",
    "mmcs",
    "mse",
    "shrinkage",
]


class NonFiniteMetricsError(RuntimeError):
    """A held-out metric is NaN or infinite: the job has no usable result."""


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
    batch_size = eval_rows_that_fit(sae, batch_size)  # fewer rows at once when memory is short
    was_training = sae.training
    sae.eval()
    acc = StreamingMetrics(sae.d_sae, sae.W_dec.device)
    dtype = sae.W_dec.dtype
    bad = torch.zeros((), dtype=torch.long, device=sae.W_dec.device)  # read once, at the end
    truth = (
        None if source.ground_truth is None else GroundTruthMetrics(sae.W_dec, source.ground_truth)
    )
    for x, true_acts in held_out_batches(source, batch_size):
        x = x.to(sae.W_dec.device, dtype) * norm_scale
        bad += (~torch.isfinite(x)).sum()
        out = sae(x)
        acc.update(x, out.x_hat, out.f)
        if truth is not None and true_acts is not None:
            truth.update(out.f, true_acts)
    sae.train(was_training)
    if bad.item():  # sources reading files name the file and row themselves, earlier
        raise DataError(
            f"the held-out activations of {type(source).__name__} hold {bad.item()} non-finite "
            "values (NaN/inf): held-out metrics on them would be NaN. Fix or recompute the "
            "activation data."
        )
    result: dict[str, float | None] = acc.result()
    if firing is not None:
        firing["frequency"] = acc.firing_frequency().float().cpu()
    result["mse_original_units"] = result["mse"] / norm_scale**2
    result.update(dict.fromkeys(names(source="ground_truth")))
    if truth is not None:
        result.update(truth.result())
        m, frac = mmcs(source.ground_truth, sae.W_dec.float())
        result["mmcs"], result["frac_recovered"] = m.item(), frac.item()
        result["mmcs_random"] = _random_dictionary_mmcs(source.ground_truth, sae.d_sae)
    # Loss recovered, when the source has a live causal LM to splice the SAE into
    result.update(dict.fromkeys(names(source="lm")))
    held_out_lm = getattr(source, "held_out_lm", None)
    if held_out_lm is not None:
        sae.eval()
        result.update(evaluate_lm(held_out_lm, sae, norm_scale))
        sae.train(was_training)
    return result


def check_finite_metrics(metrics: dict[str, float | None]) -> None:
    """Raise NonFiniteMetricsError naming the required metrics (every frontier and verdict is
    built from them: catalogue `required`) that are NaN/inf."""
    bad = {k: metrics.get(k) for k in names(required=True)}
    bad = {k: v for k, v in bad.items() if v is None or not math.isfinite(v)}
    if bad:
        shown = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise NonFiniteMetricsError(
            f"the held-out metrics are not finite ({shown}): the trained SAE gives no usable "
            "result (its outputs overflow, or the held-out data has no variance). Fix: lower "
            "train.lr or penalty.coefficient, set train.grad_clip, or check the held-out data."
        )


def _random_dictionary_mmcs(true_directions: torch.Tensor, d_sae: int) -> float:
    """MMCS of a random dictionary of the same size: the chance level MMCS is compared with."""
    gen = torch.Generator().manual_seed(0)
    random_dec = torch.randn(true_directions.shape[1], d_sae, generator=gen)
    return mmcs(true_directions.cpu().float(), random_dec)[0].item()
