"""The training loss, term by term (docs/design.md, "Losses"), as pure functions with the
papers' names.

Shapes: x, x_hat (B, d); g (B, M); W_dec (d, M); b_dec (d,); weights (M,).
Each architecture assembles its reference loss from these in `loss_terms` (models/), and each
freeze mode is exactly one `.detach()`: the gated aux decoder in `models/gated.py`, the
decoder norms of the penalty in `penalties.py`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class LossTerms(NamedTuple):
    total: torch.Tensor
    recon: torch.Tensor
    sparse: torch.Tensor
    aux: torch.Tensor
    """The architecture's auxiliary term (gated: L_aux; TopK/BatchTopK: AuxK); else zero."""


def L_recon(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """||x - x_hat||^2, summed over d, averaged over the batch."""
    return (x - x_hat).pow(2).sum(-1).mean()


def L_sparse(
    g: torch.Tensor, coefficient: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """lambda * sum_i g_i (l1, l0), or lambda * sum_i g_i w_i (decoder_norm: w = the norms)."""
    weighted = g if weights is None else g * weights
    return coefficient * weighted.sum(-1).mean()


def L_aux(x: torch.Tensor, g: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor):
    """Gated auxiliary term ||x - (W_dec g + b_dec)||^2: the gate path must reconstruct alone."""
    return L_recon(x, g @ W_dec.T + b_dec)


def L_auxk(e: torch.Tensor, e_hat: torch.Tensor, coefficient: float) -> torch.Tensor:
    """TopK's AuxK: alpha ||e - e_hat||^2 / ||e - mean(e)||^2 over the batch, where e is the
    (detached) residual x - x_hat and e_hat its reconstruction by dead latents alone."""
    return coefficient * (e - e_hat).pow(2).sum() / (e - e.mean(0)).pow(2).sum().clamp_min(1e-12)


def sae_loss(sae, x: torch.Tensor, out, penalty, coefficient) -> LossTerms:
    """L = L_recon + L_sparse + the architecture's auxiliary term (its `loss_terms`)."""
    return sae.loss_terms(x, out, penalty, coefficient)
