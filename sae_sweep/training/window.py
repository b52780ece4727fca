"""The logging window: training metrics summed on the device, read once per `train.log_every`.

Reading is the window's one device synchronisation; it also catches non-finite training inputs
(a DataError) and a non-finite loss (a divergence) over the window.
"""

from __future__ import annotations

import math

import torch

from ..data.source import DataError
from .divergence import TrainingDivergedError
from .step import StepOutput


class MetricWindow:
    """On-device sums of the training metrics over one logging window."""

    NAMES = ("loss", "recon", "sparse", "aux", "l0", "variance", "nonfinite_inputs")

    def __init__(self, device: torch.device, divergence_fix: str):
        self.divergence_fix = divergence_fix
        self.sums = torch.zeros(len(self.NAMES), dtype=torch.float64, device=device)
        self.steps = 0

    def add(self, x: torch.Tensor, out: StepOutput) -> torch.Tensor:
        """Add one step's values; returns the (M,) mask of features that fired in the batch."""
        terms = out.terms
        with torch.no_grad():
            values = torch.stack(
                [
                    terms.total,
                    terms.recon,
                    terms.sparse,
                    terms.aux,
                    out.counts.sum().float() / x.shape[0],
                    (x - x.mean(0)).pow(2).sum(-1).mean(),
                    (~torch.isfinite(x)).sum().float(),
                ]
            )
            self.sums += values.double()
        self.steps += 1
        return out.counts > 0

    def read_and_reset(self, step: int) -> tuple[dict[str, float], int]:
        """Mean of each metric over the window, and the window's number of steps."""
        values = dict(zip(self.NAMES, (self.sums / self.steps).tolist(), strict=True))
        first, n_steps = step - self.steps + 1, self.steps
        self.sums.zero_()
        self.steps = 0
        bad_inputs = values.pop("nonfinite_inputs") * n_steps
        if bad_inputs:
            raise DataError(
                f"the training activations of steps {first}..{step} hold {int(bad_inputs)} "
                "non-finite values (NaN/inf). Fix or recompute the activation data."
            )
        if not all(map(math.isfinite, values.values())):
            raise TrainingDivergedError(
                f"the loss became non-finite between steps {first} and {step} ({values}). "
                f"{self.divergence_fix}"
            )
        variance = values.pop("variance")
        values["mse"] = values["recon"]
        values["fvu"] = values["recon"] / variance if variance > 0 else float("nan")
        return values, n_steps
