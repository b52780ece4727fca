"""The interface shared by every SAE architecture."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..losses import L_recon, LossTerms


class SAEOutput(NamedTuple):
    x_hat: torch.Tensor
    """(B, d) reconstruction W_dec f + b_dec."""
    f: torch.Tensor
    """(B, M) feature activations used by the reconstruction."""
    g: torch.Tensor
    """(B, M) what the sparsity penalty acts on (gated: ReLU(pi_gate), also the input of its
    aux term; standard, TopK: f itself; JumpReLU: the straight-through step H(pre - theta))."""


class SparseAutoencoder(nn.Module):
    """Common parts: the decoder x_hat = W_dec f + b_dec and the feature bookkeeping.

    W_dec is (d, M): column i is feature i's direction. Subclasses define `encode`, name
    their per-feature parameters in `feature_params`, and take their config's fields
    (`<Name>SAEConfig`, beyond the shared ones) as keyword arguments of `__init__`.
    """

    kind: str
    """The architecture's registry name (`sae.kind`)."""

    def __init__(self, d_in: int, d_sae: int, decoder_init_norm: float, generator: torch.Generator):
        super().__init__()
        self.d_in, self.d_sae = d_in, d_sae
        self.options: dict = {}
        """The architecture's own config knobs, saved with the weights to rebuild the model."""
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

    def loss_terms(self, x: torch.Tensor, out: SAEOutput, penalty, coefficient) -> LossTerms:
        """The reference loss (the specification the kernels are tested against):
        L_recon + L_sparse, and the architecture's auxiliary term where it has one."""
        recon = L_recon(x, out.x_hat)
        sparse = penalty.value(out.g, self.W_dec, coefficient)
        aux = torch.zeros((), device=x.device, dtype=recon.dtype)
        return LossTerms(recon + sparse + aux, recon, sparse, aux)

    @torch.no_grad()
    def after_step_(self, counts: torch.Tensor, batch_size: int) -> None:
        """Training state kept between steps (TopK's dead latents, BatchTopK's threshold).

        counts: (M,) how many inputs of the step's batch each feature fired on."""

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
