"""Gated sparse autoencoder (Rajamanoharan et al. 2024, arXiv 2404.16014).

    pi_gate(x) = W_gate (x - b_dec) + b_gate
    pi_mag(x)  = (exp(r_mag) * W_gate) (x - b_dec) + b_mag     # exp(r_mag)_i scales row i
    f(x)       = 1[pi_gate(x) > 0] * ReLU(pi_mag(x))           # the step passes no gradient
    x_hat      = W_dec f + b_dec
The sparsity penalty and the auxiliary term act on g = ReLU(pi_gate(x)):
    L_aux = ||x - (W_dec' g + b_dec')||^2, with W_dec', b_dec' the decoder either frozen
    (stop-gradient copies, the paper's loss) or trainable (sae.aux_decoder).

Scaling row i of W_gate by exp(r_mag)_i equals scaling entry i of W_gate (x - b_dec), so
both paths share one encoder matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config.schema import AuxDecoder, PenaltyKind, SAEConfig
from ..kernels import gated_dense_loss, gated_sparse_loss
from ..losses import L_aux, L_recon, LossTerms
from .base import SAEOutput, SparseAutoencoder
from .registry import Architecture


@dataclass
class GatedSAEConfig(SAEConfig):
    kind: str = "gated"
    aux_decoder: AuxDecoder | None = AuxDecoder.frozen
    """Decoder in the auxiliary term: `frozen` (stop-gradient, the paper) or `trainable`."""


class GatedSAE(SparseAutoencoder):
    kind = "gated"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        decoder_init_norm: float,
        encoder_init_transpose: bool,
        generator: torch.Generator,
        aux_decoder: AuxDecoder = AuxDecoder.frozen,
    ):
        super().__init__(d_in, d_sae, decoder_init_norm, generator)
        self.aux_decoder = AuxDecoder(aux_decoder)
        self.options = {"aux_decoder": self.aux_decoder.value}
        self.W_gate = nn.Parameter(torch.empty(d_sae, d_in))  # (M, d)
        self.b_gate = nn.Parameter(torch.zeros(d_sae))
        self.r_mag = nn.Parameter(torch.zeros(d_sae))
        self.b_mag = nn.Parameter(torch.zeros(d_sae))
        self._default_encoder_init(self.W_gate, generator, encoder_init_transpose)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = (x - self.b_dec) @ self.W_gate.T  # (B, M), shared by both paths
        pi_gate = h + self.b_gate
        pi_mag = torch.exp(self.r_mag) * h + self.b_mag
        # The Heaviside step: a comparison, so no gradient flows through the gate here.
        f = (pi_gate > 0).to(pi_mag.dtype) * torch.relu(pi_mag)
        return f, torch.relu(pi_gate)

    def loss_terms(self, x: torch.Tensor, out: SAEOutput, penalty, coefficient) -> LossTerms:
        recon = L_recon(x, out.x_hat)
        sparse = penalty.value(out.g, self.W_dec, coefficient)
        W_dec, b_dec = self.W_dec, self.b_dec
        if self.aux_decoder == AuxDecoder.frozen:
            W_dec, b_dec = W_dec.detach(), b_dec.detach()  # the paper's stop-gradient copies
        aux = L_aux(x, out.g, W_dec, b_dec)
        return LossTerms(recon + sparse + aux, recon, sparse, aux)

    @property
    def encoder_weight(self) -> nn.Parameter:
        return self.W_gate

    def feature_params(self) -> dict[str, tuple[nn.Parameter, int]]:
        return {
            "W_gate": (self.W_gate, 0),
            "b_gate": (self.b_gate, 0),
            "r_mag": (self.r_mag, 0),
            "b_mag": (self.b_mag, 0),
            "W_dec": (self.W_dec, 1),
        }


def _gated_problems(cfg):
    if cfg.sae.aux_decoder is None:
        yield "sae.aux_decoder must be `frozen` or `trainable` for the gated SAE"


GATED = Architecture(
    name="gated",
    config=GatedSAEConfig,
    model=GatedSAE,
    penalties=(PenaltyKind.l1, PenaltyKind.decoder_norm),
    kernels={"dense": gated_dense_loss, "sparse": gated_sparse_loss},
    problems=_gated_problems,
)
