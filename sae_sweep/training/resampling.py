"""Dead-feature resampling (Anthropic, "Towards Monosemanticity", 2023).

Dead features get a new direction taken from an input the SAE reconstructs badly:
inputs are sampled with probability proportional to their squared reconstruction error;
the decoder column becomes the normalised input, the encoder row the normalised input
times `encoder_scale` x the mean norm of the alive encoder rows, and every other
per-feature parameter (biases, gated r_mag) of those features 0. The Adam moments of
exactly those rows, columns and entries are reset; nothing else is touched.
"""

from __future__ import annotations

import torch

from ..models.base import SparseAutoencoder


@torch.no_grad()
def resample_dead_features_(
    sae: SparseAutoencoder,
    optimizer: torch.optim.Optimizer,
    dead: torch.Tensor,
    inputs: torch.Tensor,
    encoder_scale: float,
    generator: torch.Generator,
    chunk_rows: int | None = None,
) -> int:
    """Re-initialise the features where `dead` (M,) is True; returns how many were.

    inputs: (N, d) activations (already normalised) to draw new directions from.
    chunk_rows: rows per forward pass (the loop passes train.batch_size): N rows at once
    would hold several (N, M) activations, N = resample.loss_sample_batches x the batch.
    """
    idx = dead.nonzero().squeeze(1)
    n_dead = idx.numel()
    if n_dead == 0:
        return 0
    chunks = inputs.split(chunk_rows or len(inputs))
    errors = torch.cat([(x - sae(x).x_hat).pow(2).sum(-1).float() for x in chunks])  # (N,)
    if errors.sum() <= 0:  # perfect reconstruction: fall back to uniform sampling
        errors = torch.ones_like(errors)
    # Without replacement while there are enough inputs with non-zero error to go round.
    replace = n_dead > torch.count_nonzero(errors).item()
    picks = torch.multinomial(errors.cpu(), n_dead, replacement=replace, generator=generator)
    new = inputs[picks.to(inputs.device)]
    new = new / new.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (n_dead, d)

    W_enc = sae.encoder_weight
    alive = ~dead
    alive_norm = W_enc[alive].norm(dim=1).mean() if alive.any() else torch.tensor(1.0)
    params = sae.feature_params()
    for param, axis in params.values():
        param.index_fill_(axis, idx, 0.0)  # biases and gated r_mag to 0; matrices rewritten below
        state = optimizer.state.get(param, {})
        for moment in ("exp_avg", "exp_avg_sq"):
            if moment in state:
                state[moment].index_fill_(axis, idx, 0.0)
    sae.W_dec[:, idx] = new.T.to(sae.W_dec.dtype)
    W_enc[idx] = (new * encoder_scale * alive_norm).to(W_enc.dtype)
    return n_dead
