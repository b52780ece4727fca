"""TopK / BatchTopK (and Matryoshka) fast path: only the encoder's forward product is dense.

With the selected entries (k per row, or k x B per batch) and the AuxK entries (k_aux per
row, among dead latents) fixed, everything else costs nnz * d:
    pre at the selected entries     read from the dense product (bias included)
    x_hat, AuxK reconstruction      row bags: embedding_bag over W_dec^T rows, weights f / z
    backward through the bags       autograd of embedding_bag: nnz-sized
    backward into W_enc, b_enc, x   `_ActiveEncoder`: column bags over rows of (x - b_dec)
Loss and gradients equal `TopKSAE.loss_terms`'s (models/topk.py) up to fp32 summation order.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as nnf

from ..losses import L_recon, LossTerms
from .dense import Workspace, threads


class ActiveSet(NamedTuple):
    """The selected (row, latent) entries of a (B, M) batch, in row-major order."""

    rows: torch.Tensor
    """(nnz,) batch row of each entry, non-decreasing."""
    cols: torch.Tensor
    """(nnz,) latent of each entry."""
    offsets: torch.Tensor
    """(B + 1,) entries of row b are [offsets[b], offsets[b + 1])."""


def row_topk(pre: torch.Tensor, k: int) -> ActiveSet:
    """The k largest entries of each row of a (B, M) matrix."""
    B = pre.shape[0]
    idx = pre.topk(k, dim=1, sorted=False).indices  # (B, k)
    rows = torch.arange(B, device=pre.device).repeat_interleave(k)
    offsets = torch.arange(0, B * k + 1, k, device=pre.device)
    return ActiveSet(rows, idx.reshape(-1), offsets)


def batch_topk(pre: torch.Tensor, k: int, oversample: int = 4) -> ActiveSet:
    """The k x B largest entries of a (B, M) matrix, wherever they lie.

    Exact, without a top-k over all B x M entries (7x slower on a CPU than the row-wise
    one): the candidates are each row's `oversample` x k largest. Their k x B-th largest, v,
    is at most the batch's; an entry above v missing from the candidates lies in a row
    whose every candidate is >= v, so those rows (rare) contribute all their entries >= v."""
    B, M = pre.shape
    n = min(k * B, pre.numel())
    c = min(M, oversample * k)
    vals, cols = pre.topk(c, dim=1, sorted=False)  # (B, c) candidates
    flat = (torch.arange(B, device=pre.device).unsqueeze(1) * M + cols).reshape(-1)
    kept_vals, keep = vals.reshape(-1).topk(n, sorted=False)
    full = (vals.min(1).values >= kept_vals.min()).nonzero().squeeze(1)  # rows that may hold more
    if c < M and full.numel():
        sub = pre[full]
        r, cc = (sub >= kept_vals.min()).nonzero(as_tuple=True)
        others = ~torch.isin(flat // M, full)
        values = torch.cat([vals.reshape(-1)[others], sub[r, cc]])
        flat = torch.cat([flat[others], full[r] * M + cc])
        keep = values.topk(n, sorted=False).indices
    flat = flat[keep].sort().values  # row-major
    rows = flat // M
    offsets = torch.searchsorted(rows, torch.arange(B + 1, device=pre.device))
    return ActiveSet(rows, flat % M, offsets)


def topk_sparse_loss(sae, x: torch.Tensor, penalty, coefficient, ws: Workspace):
    """(LossTerms, (M,) firing counts) for the batch x, with the gradients of the reference."""
    B, M = x.shape[0], sae.d_sae
    xc = x - sae.b_dec  # autograd carries b_dec's centring gradient from here
    with torch.no_grad():  # the one dense product; its backward is `_ActiveEncoder`'s
        P = torch.addmm(sae.b_enc, xc, sae.W_enc.t(), out=ws.get("P", (B, M), x))
        active = sae.select(P)
    with threads(ws.small_op_threads, x.device):
        f = torch.relu(_ActiveEncoder.apply(xc, sae.W_enc, sae.b_enc, P, active, ws))
        # (M, d) rows for the bags: gathering strided columns of W_dec is ~30x slower
        W_dec_t = sae.W_dec.t().contiguous()
        x_hat = _row_bags(W_dec_t, active, f) + sae.b_dec
        recon = L_recon(x, x_hat)
        inner = _inner_prefixes(sae, x, active, f, W_dec_t)
        counts = torch.zeros(M, dtype=x.dtype, device=x.device)
        counts.index_add_(0, active.cols, (f > 0).to(x.dtype))
        sae.observe_training_batch_(f.detach())
        aux = _auxk(sae, x, xc, x_hat, P, W_dec_t, ws)
    sparse = torch.zeros((), dtype=x.dtype, device=x.device)  # TopK takes penalty=none
    total = recon + inner + aux
    return LossTerms(total, recon.detach(), sparse, aux.detach()), counts


def _inner_prefixes(sae, x, active, f, W_dec_t) -> torch.Tensor:
    """Matryoshka BatchTopK (models/matryoshka.py): the squared errors of the inner prefixes,
    each a row bag of the active entries below its width. TopK and BatchTopK have none."""
    total = torch.zeros((), dtype=x.dtype, device=x.device)
    for width in getattr(sae, "prefix_sizes", ())[:-1]:
        x_hat = _row_bags(W_dec_t, active, f * (active.cols < width)) + sae.b_dec
        total = total + L_recon(x, x_hat)
    return total


def _auxk(sae, x, xc, x_hat, P, W_dec_t, ws: Workspace) -> torch.Tensor:
    """AuxK (models/topk.py; weighted by `sae.auxk`): dead latents reconstruct the residual."""
    dead = sae.dead_latents()
    if x.device.type == "cpu" and not dead.any():  # free to check on a CPU; a sync on a GPU
        return torch.zeros((), dtype=x.dtype, device=x.device)
    with torch.no_grad():
        candidates = ws.get("P_aux", P.shape, P).copy_(P).masked_fill_(~dead, float("-inf"))
        picked = row_topk(candidates, sae.k_aux)
    pre = _ActiveEncoder.apply(xc, sae.W_enc, sae.b_enc, P, picked, ws)
    z = torch.relu(pre) * dead[picked.cols]
    e = (x - x_hat).detach()
    aux = sae.auxk(x, e, _row_bags(W_dec_t, picked, z), dead)
    return torch.where(dead.any(), aux, 0.0)


def _row_bags(table: torch.Tensor, active, weights: torch.Tensor) -> torch.Tensor:
    """(B, d): row b = sum over its active entries i of weights * table[i] (autograd: both)."""
    return nnf.embedding_bag(
        active.cols, table, active.offsets[:-1], mode="sum", per_sample_weights=weights
    )


class _ActiveEncoder(torch.autograd.Function):
    """(nnz,) pre = W_enc (x - b_dec) + b_enc at the active entries, read from the dense
    product P; the backward pass touches only those entries."""

    @staticmethod
    def forward(ctx, xc, W_enc, b_enc, P, active, ws):
        M = P.shape[1]
        ctx.save_for_backward(xc, W_enc)
        ctx.active, ctx.M, ctx.threads = active, M, ws.small_op_threads
        return P.view(-1)[active.rows * M + active.cols]

    @staticmethod
    def backward(ctx, grad):
        xc, W_enc = ctx.saved_tensors
        active, M = ctx.active, ctx.M
        with threads(ctx.threads, xc.device):
            d_xc = nnf.embedding_bag(
                active.cols, W_enc, active.offsets[:-1], mode="sum", per_sample_weights=grad
            )
            perm = torch.argsort(active.cols, stable=True)  # column-major: one bag per latent
            arange = torch.arange(M + 1, device=grad.device)
            col_offsets = torch.searchsorted(active.cols[perm], arange)
            d_W_enc = nnf.embedding_bag(
                active.rows[perm], xc, col_offsets[:-1], mode="sum", per_sample_weights=grad[perm]
            )
            d_b_enc = torch.zeros(M, dtype=grad.dtype, device=grad.device)
            d_b_enc.index_add_(0, active.cols, grad)
        return d_xc, d_W_enc, d_b_enc, None, None, None
