"""Divergence: a loss or weights that became NaN or infinite fail the SAE with what to change."""

from __future__ import annotations

import torch

from ..config.schema import Config
from ..models.base import SparseAutoencoder


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


def divergence_fix(cfg: Config) -> str:
    """What to change after a divergence: grad clipping only where it is not already on."""
    tr = cfg.train
    if tr.grad_clip is None:
        return "Fix: lower train.lr or penalty.coefficient, or set train.grad_clip."
    return (
        f"Fix: lower train.lr (now {tr.lr}) or penalty.coefficient (now "
        f"{cfg.penalty.coefficient}), or tighten train.grad_clip (now {tr.grad_clip})."
    )


def check_finite_weights(sae: SparseAutoencoder, step: int, fix: str) -> None:
    """Raise TrainingDivergedError if a parameter holds NaN/inf (one device sync)."""
    flags = torch.stack([torch.isfinite(p).all() for p in sae.parameters()])
    if not bool(flags.all()):
        params = (name for name, _ in sae.named_parameters())
        names = [name for name, ok in zip(params, flags.tolist(), strict=True) if not ok]
        raise TrainingDivergedError(
            f"the SAE's weights became non-finite (NaN/inf) by step {step}, in {names}. {fix}"
        )
