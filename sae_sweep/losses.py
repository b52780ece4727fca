"""The training loss, term by term (DESIGN 2.3), as pure functions with the papers' names.

Shapes: x, x_hat (B, d); g (B, M); W_dec (d, M); b_dec (d,); decoder_norms (M,).
Each freeze mode is defined by exactly one `.detach()` in `sae_loss`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .config.schema import AuxDecoder, NormGrad, PenaltyKind
from .models.base import SAEOutput, SparseAutoencoder


class LossTerms(NamedTuple):
    total: torch.Tensor
    recon: torch.Tensor
    sparse: torch.Tensor
    aux: torch.Tensor
    """Zero for the standard SAE."""


def L_recon(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """||x - x_hat||^2, summed over d, averaged over the batch."""
    return (x - x_hat).pow(2).sum(-1).mean()


def L_sparse(
    g: torch.Tensor, coefficient: float, decoder_norms: torch.Tensor | None = None
) -> torch.Tensor:
    """lambda * sum_i g_i (l1), or lambda * sum_i g_i ||W_dec[:, i]|| (decoder_norm)."""
    weighted = g if decoder_norms is None else g * decoder_norms
    return coefficient * weighted.sum(-1).mean()


def L_aux(x: torch.Tensor, g: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor):
    """Gated auxiliary term ||x - (W_dec g + b_dec)||^2: the gate path must reconstruct alone."""
    return L_recon(x, g @ W_dec.T + b_dec)


def sae_loss(
    sae: SparseAutoencoder,
    x: torch.Tensor,
    out: SAEOutput,
    *,
    penalty: PenaltyKind,
    coefficient: float,
    norm_grad: NormGrad | None,
    aux_decoder: AuxDecoder | None,
) -> LossTerms:
    """L = L_recon + L_sparse + L_aux, with the freeze modes of the config."""
    recon = L_recon(x, out.x_hat)

    decoder_norms = None
    if penalty == PenaltyKind.decoder_norm:
        decoder_norms = sae.W_dec.norm(dim=0)  # (M,), once per step
        if norm_grad == NormGrad.detached:
            decoder_norms = decoder_norms.detach()  # fix (B): ||sg(W_dec[:, i])||
    sparse = L_sparse(out.g, coefficient, decoder_norms)

    aux = torch.zeros((), device=x.device, dtype=recon.dtype)
    if aux_decoder is not None:
        W_dec, b_dec = sae.W_dec, sae.b_dec
        if aux_decoder == AuxDecoder.frozen:
            W_dec, b_dec = W_dec.detach(), b_dec.detach()  # the paper's stop-gradient copies
        aux = L_aux(x, out.g, W_dec, b_dec)

    return LossTerms(recon + sparse + aux, recon, sparse, aux)
