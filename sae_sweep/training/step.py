"""One optimizer step: loss, backward, constraint, clipping, Adam. The loop and bench/step.py
both call `Stepper.step`, so the benchmark times exactly what training runs.

Which loss implementation runs (all give the loss and gradients of the architecture's
reference loss, `sae.loss_terms`); the architecture's registry entry says which kernels it has:
- reference: `sae(x)` + `sae_loss`, plain autograd (train.fast_path=false, autocast, or an
  architecture without kernels, e.g. JumpReLU);
- compiled: the reference under `torch.compile` (train.compile=true);
- dense: its "dense" kernel, the minimum of matrix products with reused buffers;
- sparse: its "sparse" kernel, only the encoder product dense (train.sparse_path; `auto`
  switches on once the logged L0 falls to train.sparse_density_threshold * d_sae; TopK and
  BatchTopK have only this one and use it from the first step). On CUDA, and with bf16
  products, `auto` stays dense: the threshold was tuned on CPU cores, and no GPU benchmark
  has yet shown the sparse kernels (fp32 only, one host sync per step) faster there.
"""

from __future__ import annotations

import contextlib
from enum import Enum
from typing import NamedTuple

import torch

from ..config.schema import Config, SparsePath
from ..kernels import Workspace
from ..kernels.dense import threads
from ..losses import LossTerms, sae_loss
from ..models.base import SparseAutoencoder
from ..models.registry import architecture
from ..penalties import make_penalty
from .constraint import remove_parallel_grad_, unit_norm_decoder_
from .precision import products_dtype


class LossPath(str, Enum):
    reference = "reference"
    compiled = "compiled"
    dense = "dense"
    sparse = "sparse"


class StepOutput(NamedTuple):
    terms: LossTerms
    """The loss terms of the batch (on device; never read here)."""
    counts: torch.Tensor
    """(M,) how many inputs of the batch each feature fired on (f > 0)."""


def make_optimizer(sae: SparseAutoencoder, lr: float, betas) -> torch.optim.Adam:
    """Adam; the fused kernel where this torch has it for the device (same update rule)."""
    try:
        return torch.optim.Adam(sae.parameters(), lr=lr, betas=tuple(betas), fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(sae.parameters(), lr=lr, betas=tuple(betas))


class Stepper:
    """Holds what persists between steps: the loss path, its buffers, the compiled function."""

    # with `auto`, leave the sparse path again only when L0 has doubled past the threshold
    HYSTERESIS = 2.0

    def __init__(self, cfg: Config, sae: SparseAutoencoder, optimizer: torch.optim.Optimizer):
        tr = cfg.train
        self.sae, self.optimizer, self.tr = sae, optimizer, tr
        self.penalty = make_penalty(cfg.penalty)
        self.kernels = architecture(sae.kind).kernels
        self.workspace = Workspace(tr.cpu_small_op_threads, products_dtype(tr.matmul_dtype))
        self.base_path = _base_path(cfg, self.kernels)
        self.path = self.base_path
        has_sparse = "sparse" in self.kernels
        if self.base_path == LossPath.dense and tr.sparse_path == SparsePath.on and has_sparse:
            self.path = LossPath.sparse
        self.paths_used: list[LossPath] = []
        """Every loss path a step has run on, in order of first use (recorded in the summary)."""
        self._compiled = None
        device_type = sae.W_dec.device.type
        self._autocast = torch.autocast(device_type, dtype=torch.bfloat16) if tr.autocast else None

    def step(self, x: torch.Tensor, lr: float, coefficient: float) -> StepOutput:
        """Set lr, compute the loss, backward, constraint, clip, Adam step."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        out = self.loss(x, coefficient)
        if self.path not in self.paths_used:
            self.paths_used.append(self.path)
        self.optimizer.zero_grad(set_to_none=True)
        out.terms.total.backward()
        with threads(self.tr.cpu_small_op_threads, x.device):  # the update: memory-bound
            if self.tr.unit_norm_decoder:
                remove_parallel_grad_(self.sae.W_dec)
            if self.tr.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.sae.parameters(), self.tr.grad_clip)
            self.optimizer.step()
            if self.tr.unit_norm_decoder:
                unit_norm_decoder_(self.sae.W_dec)
            self.sae.after_step_(out.counts, x.shape[0])
        return out

    def loss(self, x: torch.Tensor, coefficient: float) -> StepOutput:
        if self.path in (LossPath.dense, LossPath.sparse):
            kernel = self.kernels[self.path.value]
            return StepOutput(*kernel(self.sae, x, self.penalty, coefficient, self.workspace))
        fn = self._reference
        if self.path == LossPath.compiled:
            if self._compiled is None:
                self._compiled = torch.compile(self._reference)
            fn = self._compiled
        with self._autocast or contextlib.nullcontext():
            terms, counts = fn(x, torch.as_tensor(coefficient, device=x.device))
        return StepOutput(LossTerms(*(t.float() for t in terms)), counts)

    def _reference(self, x: torch.Tensor, coefficient: torch.Tensor):
        out = self.sae(x)
        terms = sae_loss(self.sae, x, out, self.penalty, coefficient)
        return terms, (out.f > 0).sum(0)

    def update_path(self, l0: float) -> LossPath:
        """With train.sparse_path=auto: sparse once the window's mean L0 is low enough."""
        if (
            self.tr.sparse_path != SparsePath.auto
            or self.base_path != LossPath.dense
            or "sparse" not in self.kernels
            or self.sae.W_dec.device.type == "cuda"
            or self.workspace.products_dtype is not None
        ):
            return self.path
        limit = self.tr.sparse_density_threshold * self.sae.d_sae
        if self.path == LossPath.dense and l0 <= limit:
            self.path = LossPath.sparse
        elif self.path == LossPath.sparse and l0 > self.HYSTERESIS * limit:
            self.path = LossPath.dense
        return self.path


def _base_path(cfg: Config, kernels: dict) -> LossPath:
    tr = cfg.train
    if tr.compile:
        return LossPath.compiled
    if not tr.fast_path or tr.autocast:
        return LossPath.reference
    if "dense" in kernels:
        return LossPath.dense
    if "sparse" in kernels and SparsePath(tr.sparse_path) != SparsePath.off:
        return LossPath.sparse  # sparse by construction (TopK): no dense kernel to fall back on
    return LossPath.reference


def to_device(batch: torch.Tensor, device: torch.device, dtype, pin_memory: bool):
    """Host batch -> device; pinned and asynchronous (non_blocking) when the target is CUDA."""
    if pin_memory and device.type == "cuda" and batch.device.type == "cpu":
        return batch.pin_memory().to(device, dtype, non_blocking=True)
    return batch.to(device, dtype)
