"""BatchTopK sparse autoencoder (Bussmann, Leask, Nanda 2024, arXiv 2412.06410).

TopK (models/topk.py) with the selection made over the whole batch:
    training:   f = ReLU of the k x B largest pre-activations of the batch, zero elsewhere
                (per-input L0 varies; its batch mean is k)
    evaluation: f = pre * 1[pre > theta]     (a JumpReLU with one global threshold)
theta is estimated during training as a running mean of the smallest kept activation of each
batch (momentum `threshold_momentum`), stored as the buffer `threshold` with the weights, and
used at evaluation and export. AuxK, init and the L0 axis (`sae.k`) are TopK's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config.schema import PenaltyKind
from ..kernels.topk import ActiveSet, batch_topk, topk_sparse_loss
from .registry import Architecture
from .topk import TOPK, TopKSAE, TopKSAEConfig


@dataclass
class BatchTopKSAEConfig(TopKSAEConfig):
    kind: str = "batchtopk"
    threshold_momentum: float = 0.99
    """theta <- m theta + (1 - m) (smallest kept activation of the batch), every step."""


class BatchTopKSAE(TopKSAE):
    kind = "batchtopk"

    def __init__(self, d_in: int, d_sae: int, *, threshold_momentum: float = 0.99, **kwargs):
        super().__init__(d_in, d_sae, **kwargs)
        self.threshold_momentum = threshold_momentum
        self.options = {**self.options, "threshold_momentum": threshold_momentum}
        # -1 until the first training step: evaluation then uses theta = 0 (plain ReLU)
        self.register_buffer("threshold", torch.tensor(-1.0))
        self._batch_min: torch.Tensor | None = None

    def select(self, pre: torch.Tensor) -> ActiveSet:
        return batch_topk(pre, self.k)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.pre_activations(x)
        if self.training:
            f = self._keep(pre)
        else:
            f = pre * (pre > self.threshold.clamp_min(0.0)).to(pre.dtype)
        return f, f

    @torch.no_grad()
    def observe_training_batch_(self, f: torch.Tensor) -> None:
        positive = torch.where(f > 0, f, torch.full_like(f, float("inf")))
        self._batch_min = positive.min()

    @torch.no_grad()
    def after_step_(self, counts: torch.Tensor, batch_size: int) -> None:
        super().after_step_(counts, batch_size)
        if self._batch_min is None:
            return
        m, new = self.threshold_momentum, self._batch_min.to(self.threshold.dtype)
        updated = torch.where(self.threshold < 0, new, m * self.threshold + (1 - m) * new)
        # a batch with nothing kept above 0 (min = inf) says nothing about theta
        self.threshold.copy_(torch.where(torch.isfinite(new), updated, self.threshold))
        self._batch_min = None


def _batchtopk_problems(cfg):
    yield from TOPK.problems(cfg)
    if not 0.0 <= cfg.sae.threshold_momentum < 1.0:
        yield f"sae.threshold_momentum={cfg.sae.threshold_momentum} must lie in [0, 1)"


BATCHTOPK = Architecture(
    name="batchtopk",
    config=BatchTopKSAEConfig,
    model=BatchTopKSAE,
    penalties=(PenaltyKind.none,),
    kernels={"sparse": topk_sparse_loss},
    l0_knob="sae.k",
    irrelevant_knobs=TOPK.irrelevant_knobs,
    problems=_batchtopk_problems,
)
