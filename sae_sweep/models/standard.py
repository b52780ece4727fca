"""Standard (ReLU) sparse autoencoder.

    f(x)  = ReLU(W_enc (x - b_dec) + b_enc)
    x_hat = W_dec f + b_dec
The sparsity penalty acts on g = f.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config.schema import PenaltyKind, SAEConfig
from ..kernels import standard_dense_loss, standard_sparse_loss
from .base import SparseAutoencoder
from .registry import Architecture


@dataclass
class StandardSAEConfig(SAEConfig):
    kind: str = "standard"


class StandardSAE(SparseAutoencoder):
    kind = "standard"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        decoder_init_norm: float,
        encoder_init_transpose: bool,
        generator: torch.Generator,
    ):
        super().__init__(d_in, d_sae, decoder_init_norm, generator)
        self.W_enc = nn.Parameter(torch.empty(d_sae, d_in))  # (M, d)
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self._default_encoder_init(self.W_enc, generator, encoder_init_transpose)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.relu((x - self.b_dec) @ self.W_enc.T + self.b_enc)
        return f, f

    @property
    def encoder_weight(self) -> nn.Parameter:
        return self.W_enc

    def feature_params(self) -> dict[str, tuple[nn.Parameter, int]]:
        return {"W_enc": (self.W_enc, 0), "b_enc": (self.b_enc, 0), "W_dec": (self.W_dec, 1)}


STANDARD = Architecture(
    name="standard",
    config=StandardSAEConfig,
    model=StandardSAE,
    penalties=(PenaltyKind.l1, PenaltyKind.decoder_norm),
    kernels={"dense": standard_dense_loss, "sparse": standard_sparse_loss},
)
