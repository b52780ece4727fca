"""Sparsity penalties as objects: L_sparse = lambda * sum_i g_i w_i, one weight w_i per feature.

Each penalty gives its reference value (autograd sees everything, including the one
`.detach()` of a freeze mode) and what the fast kernels need instead: the (M,) gradient
dL_sparse/dg of one input and, when the weights depend on W_dec, their gradient into W_dec.
g is what the architecture penalises (docs/design.md, "Penalties"): ReLU(pi_gate) for gated,
f for standard, the straight-through step H(pre - theta) for JumpReLU.
"""

from __future__ import annotations

import torch

from .config.schema import NormGrad, PenaltyConfig, PenaltyKind
from .losses import L_sparse


class Penalty:
    """lambda * sum_i g_i (the l1 penalty; also l0, where g is a 0/1 step)."""

    kind = PenaltyKind.l1
    uses_decoder_norm = False
    """w_i = ||W_dec[:, i]|| (else w_i = 1)."""
    decoder_grad = False
    """Gradient flows from the penalty into W_dec (decoder_norm with norm live)."""

    def feature_weights(self, W_dec: torch.Tensor) -> torch.Tensor | None:
        """(M,) w_i as autograd should see them (None = all ones)."""
        return None

    def value(self, g: torch.Tensor, W_dec: torch.Tensor, coefficient) -> torch.Tensor:
        """lambda * sum_i g_i w_i, summed over features, averaged over the (B, M) batch g."""
        return L_sparse(g, coefficient, self.feature_weights(W_dec))

    @torch.no_grad()
    def kernel_terms(self, gsum: torch.Tensor, W_dec: torch.Tensor, coefficient: float, B: int):
        """For the kernels: (L_sparse from the (M,) column sums of g, (M,) dL_sparse/dg per
        input, the (M,) decoder norms when they were computed, else None)."""
        if self.uses_decoder_norm:
            norms = W_dec.norm(dim=0)  # (M,), once per step
            return coefficient * (gsum @ norms) / B, norms * (coefficient / B), norms
        sparse = coefficient * gsum.sum() / B
        return sparse, torch.full_like(gsum, coefficient / B), None

    @torch.no_grad()
    def add_decoder_grad_(self, dW_dec, W_dec, gsum, norms, coefficient: float, B: int, s):
        """d/dW_dec of lambda/B sum_i gsum_i ||W_dec[:, i]||, scaled by s (in place)."""
        if self.decoder_grad:
            dW_dec.addcmul_(W_dec, (gsum / norms) * (s * coefficient / B))


class L1Penalty(Penalty):
    kind = PenaltyKind.l1


class L0Penalty(Penalty):
    """lambda * ||f||_0, with g_i = H(pre_i - theta_i) carrying the straight-through gradient."""

    kind = PenaltyKind.l0


class NoPenalty(Penalty):
    """TopK, BatchTopK: sparsity is structural (L0 = k)."""

    kind = PenaltyKind.none

    def value(self, g, W_dec, coefficient):
        return torch.zeros((), dtype=W_dec.dtype, device=W_dec.device)


class DecoderNormPenalty(Penalty):
    """lambda * sum_i g_i ||W_dec[:, i]|| (Anthropic, April 2024)."""

    kind = PenaltyKind.decoder_norm
    uses_decoder_norm = True

    def __init__(self, norm_grad: NormGrad):
        self.norm_grad = NormGrad(norm_grad)
        self.decoder_grad = self.norm_grad == NormGrad.live

    def feature_weights(self, W_dec):
        norms = W_dec.norm(dim=0)  # (M,), once per step
        if self.norm_grad == NormGrad.detached:
            norms = norms.detach()  # fix (B): ||sg(W_dec[:, i])||
        return norms


def make_penalty(cfg: PenaltyConfig) -> Penalty:
    kind = PenaltyKind(cfg.kind)
    if kind == PenaltyKind.decoder_norm:
        return DecoderNormPenalty(cfg.decoder_norm_grad)
    return {PenaltyKind.l1: L1Penalty, PenaltyKind.l0: L0Penalty, PenaltyKind.none: NoPenalty}[
        kind
    ]()
