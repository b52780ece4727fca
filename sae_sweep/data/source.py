"""The interface every activation source implements, and the input-normalisation scalar."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Protocol

import torch


class DataError(ValueError):
    """The activation data cannot be trained on (missing, corrupt, non-finite, wrong shape)."""


class ActivationSource(Protocol):
    """Activations to train on, plus a held-out split that training never sees.

    `train_batch` is a pure function of (source, step): a resumed run sees exactly the
    batches an uninterrupted one would.
    """

    d: int
    """Activation dimension."""
    ground_truth: torch.Tensor | None
    """(G, d) unit-norm true feature directions, when the data has them (synthetic)."""

    def train_batch(self, step: int, batch_size: int) -> torch.Tensor:
        """(batch_size, d) training activations for this step, on the source's device."""
        ...

    def eval_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Held-out activations in (<= batch_size, d) chunks, the same on every call."""
        ...

    def close(self) -> None:
        """Release what the source holds (a background reader); called when the job ends."""
        ...


def estimate_norm_scale(source: ActivationSource, batches: int, batch_size: int) -> float:
    """The scalar s with E||s x|| = sqrt(d), estimated on the first training batches.

    Also the first look at the data, so it is where non-finite inputs are caught before
    training starts.
    """
    norms = []
    for step in range(batches):
        x = source.train_batch(step, batch_size)
        bad = (~torch.isfinite(x)).sum().item()
        if bad:
            raise DataError(
                f"training batch {step} holds {bad} non-finite values (NaN/inf). Fix the "
                "activation data (e.g. recompute it in float32), or drop the bad rows."
            )
        norms.append(x.float().norm(dim=-1).mean().item())
    mean_norm = sum(norms) / len(norms)
    if mean_norm == 0.0:
        raise DataError("every training activation is zero: nothing to normalise or learn")
    return math.sqrt(source.d) / mean_norm
