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
    batches an uninterrupted one would. A source whose data has known true features also
    implements `GroundTruthSource`.
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


class GroundTruthSource(ActivationSource, Protocol):
    """A source whose data is built from known true features (synthetic data): besides their
    directions (`ground_truth`), it tells which features are active in each held-out row, which
    the ground-truth metrics need (precision, recall and F1 of each latent as a detector of its
    matched true feature: `evaluation.ground_truth`)."""

    ground_truth: torch.Tensor

    def eval_batches_with_truth(
        self, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`eval_batches`' chunks, each with its (rows, G) true feature activations: the
        coefficient of true feature g (row g of `ground_truth`) in each activation, 0 where
        the feature is not active. Both on the source's device, the same on every call."""
        ...


def held_out_batches(
    source: ActivationSource, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The held-out split as (activations, true feature activations or None) chunks: the
    latter where the source implements `GroundTruthSource`, None for every other source."""
    with_truth = getattr(source, "eval_batches_with_truth", None)
    if with_truth is None or source.ground_truth is None:
        return ((x, None) for x in source.eval_batches(batch_size))
    return with_truth(batch_size)


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
