"""The interface shared by every SAE architecture."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class SAEOutput(NamedTuple):
    x_hat: torch.Tensor
    """(B, d) reconstruction W_dec f + b_dec."""
    f: torch.Tensor
    """(B, M) feature activations used by the reconstruction."""
    g: torch.Tensor
    """(B, M) non-negative activations the sparsity penalty and the gated aux term act on
    (gated: ReLU(pi_gate); standard: f itself)."""


class SparseAutoencoder(nn.Module):
    """Common parts: the decoder x_hat = W_dec f + b_dec and the feature bookkeeping.

    W_dec is (d, M): column i is feature i's direction.
    Subclasses define `encode` and name their per-feature parameters in `feature_params`.
    """

    def __init__(self, d_in: int, d_sae: int, decoder_init_norm: float, generator: torch.Generator):
        super().__init__()
        self.d_in, self.d_sae = d_in, d_sae
        W_dec = torch.randn(d_in, d_sae, generator=generator)
        W_dec *= decoder_init_norm / W_dec.norm(dim=0, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, g) for a (B, d) batch; see SAEOutput."""
        raise NotImplementedError

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec.T + self.b_dec

    def forward(self, x: torch.Tensor) -> SAEOutput:
        f, g = self.encode(x)
        return SAEOutput(self.decode(f), f, g)

    @property
    def encoder_weight(self) -> nn.Parameter:
        """The (M, d) encoder matrix that transpose-init sets and resampling rewrites."""
        raise NotImplementedError

    def feature_params(self) -> dict[str, tuple[nn.Parameter, int]]:
        """Every parameter with one slice per feature: name -> (parameter, feature axis)."""
        raise NotImplementedError

    def _default_encoder_init(self, W: torch.Tensor, generator: torch.Generator, transpose: bool):
        """Encoder = decoder transpose (at init only; never tied), or nn.Linear's default init."""
        with torch.no_grad():
            if transpose:
                W.copy_(self.W_dec.T)
            else:
                bound = 1.0 / self.d_in**0.5
                W.copy_(torch.rand(W.shape, generator=generator) * 2 * bound - bound)
