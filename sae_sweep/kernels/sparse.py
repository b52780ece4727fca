"""Sparse fast path: at low density only the encoder's forward product stays dense.

The active entries are those with pi > 0 (gated: the open gates, which hold every non-zero
of f and g; standard: pi_enc > 0). With nnz of them, every other product costs nnz * d:
    x_hat, aux reconstruction   row bags:    embedding_bag over W_dec^T rows, weights f / g
    dL/df, dL/dg at active      sampled products (e W_dec)[b, i] on the CSR pattern
    dW_dec^T, dW_gate           column bags: embedding_bag over rows of e / ea / (x - b_dec)
Loss and gradients equal the reference loss's (and the dense path's) up to fp32 summation order.

Everything but the encoder product works on nnz-sized vectors, where thread start-up and
barriers can cost more than extra threads save: on a CPU it runs on
`Workspace.small_op_threads` threads (train.cpu_small_op_threads, default 1). Measured on 2
shared cores: a stable argsort of 170k column indices took 170 ms with 2 threads, 2 ms with 1;
the bag and sampled products were twice as fast with 1.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as nnf

from ..config.schema import AuxDecoder
from ..penalties import Penalty
from .dense import (
    KernelSpec,
    Workspace,
    _terms,
    add_norm_grad_,
    colsum,
    penalty_terms,
    sqnorm,
    threads,
)


def standard_sparse_loss(sae, x, penalty: Penalty, coefficient, ws: Workspace):
    """(LossTerms, (M,) firing counts) of a standard SAE, with the gradients of its reference
    loss."""
    spec = KernelSpec(penalty, float(coefficient))
    return _terms(_StandardSparse.apply(x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, spec, ws))


def gated_sparse_loss(sae, x, penalty: Penalty, coefficient, ws: Workspace):
    """The same for a gated SAE."""
    spec = KernelSpec(penalty, float(coefficient), sae.aux_decoder == AuxDecoder.trainable)
    params = (sae.W_gate, sae.b_gate, sae.r_mag, sae.b_mag, sae.W_dec, sae.b_dec)
    return _terms(_GatedSparse.apply(x, *params, spec, ws))


class _Pattern:
    """The active entries (pi = H + b > 0) of a (B, M) pre-activation, in row-major and
    column-major order. H is the bias-free product: the bias is added at active entries only.

    Row and column indices and offsets are int32 (half the memory traffic of int64, and
    half the radix passes of the column sort on a GPU); only the flat index into the
    (B, M) matrix, which can pass 2^31, stays int64."""

    def __init__(self, H: torch.Tensor, b: torch.Tensor, ws: Workspace):
        B, M = H.shape
        mask = torch.gt(H, -b, out=ws.get("mask", (B, M), H, torch.bool))
        with threads(ws.small_op_threads, H.device):
            flat = mask.view(-1).nonzero().squeeze(1)  # row-major
            self.rows, self.cols = (flat // M).int(), (flat % M).int()
            self.values = H.view(-1)[flat] + b[self.cols]  # (nnz,) pi there, all > 0
            arange = torch.arange(max(B, M) + 1, device=H.device, dtype=torch.int32)
            self.row_offsets = torch.searchsorted(self.rows, arange[: B + 1], out_int32=True)
        self.shape, self._arange = (B, M), arange

    def column_order(self):
        """(rows, offsets of each feature's bag, permutation row-major -> column-major)."""
        M = self.shape[1]
        perm = torch.argsort(self.cols, stable=True)  # rows stay sorted within a feature
        offsets = torch.searchsorted(self.cols[perm], self._arange[: M + 1], out_int32=True)
        return self.rows[perm], offsets, perm

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # "CSR support is in beta": we use two stable ops
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                self.row_offsets, self.cols, values, self.shape, check_invariants=False
            )


def _row_bags(table: torch.Tensor, pat: _Pattern, weights: torch.Tensor) -> torch.Tensor:
    """(B, d): row b = sum over its active entries i of weights * table[i]."""
    return nnf.embedding_bag(
        pat.cols, table, pat.row_offsets[:-1], mode="sum", per_sample_weights=weights
    )


def _column_bags(table, rows_t, offsets, weights) -> torch.Tensor:
    """(M, d): row i = sum over the batch rows b active in feature i of weights * table[b]."""
    return nnf.embedding_bag(rows_t, table, offsets[:-1], mode="sum", per_sample_weights=weights)


def _sampled(a: torch.Tensor, W: torch.Tensor, pat: _Pattern) -> torch.Tensor:
    """(nnz,): (a W)[b, i] at the active entries only; a (B, d), W (d, M)."""
    zeros = torch.zeros_like(pat.values)
    return torch.sparse.sampled_addmm(pat.csr(zeros), a, W, beta=0.0).values()


def _column_sums(values: torch.Tensor, pat: _Pattern, M: int) -> torch.Tensor:
    """(M,) sums of per-entry values by feature."""
    return torch.zeros(M, dtype=values.dtype, device=values.device).index_add_(0, pat.cols, values)


class _GatedSparse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_gate, b_gate, r_mag, b_mag, W_dec, b_dec, spec, ws):
        B, M = x.shape[0], W_gate.shape[0]
        xc = torch.sub(x, b_dec, out=ws.get("xc", x.shape, x))
        H = torch.mm(xc, W_gate.t(), out=ws.get("P", (B, M), x))  # the one dense product
        pat = _Pattern(H, b_gate, ws)
        with threads(ws.small_op_threads, x.device):
            er = r_mag.exp()
            er_a = er[pat.cols]
            gv = pat.values  # g = pi_gate at the open gates
            fv = (er_a * (gv - b_gate[pat.cols]) + b_mag[pat.cols]).relu_()  # relu(pi_mag)
            fires = (fv > 0).to(fv.dtype)
            counts = _column_sums(fires, pat, M)
            W_dec_t = W_dec.t().contiguous()  # (M, d): bag tables are row-indexed
            e = _row_bags(W_dec_t, pat, fv).add_(b_dec).sub_(x)  # x_hat - x
            ea = _row_bags(W_dec_t, pat, gv).add_(b_dec).sub_(x)  # aux reconstruction - x
            recon = sqnorm(e) / B
            aux = sqnorm(ea) / B
            gsum = _column_sums(gv, pat, M)
            sparse, dg_pen, norms = penalty_terms(gsum, W_dec, spec, B)
        ctx.save_for_backward(e, ea, W_gate, b_gate, er_a, fv, fires, W_dec, gsum, dg_pen)
        ctx.norms, ctx.pat, ctx.spec, ctx.ws = norms, pat, spec, ws
        for t in (recon, sparse, aux, counts):
            ctx.mark_non_differentiable(t)
        return recon + sparse + aux, recon.detach(), sparse.detach(), aux.detach(), counts

    @staticmethod
    def backward(ctx, s, *_):
        e, ea, W_gate, b_gate, er_a, fv, fires, W_dec, gsum, dg_pen = ctx.saved_tensors
        norms, pat, spec, (xc,) = ctx.norms, ctx.pat, ctx.spec, ctx.ws.take("xc")
        B, M = pat.shape
        trainable = spec.aux_trainable
        with threads(ctx.ws.small_op_threads, xc.device):
            ec, eac = e.mul_(2 * s / B), ea.mul_(2 * s / B)
            rows_t, offsets, perm = pat.column_order()

            dW_dec_t = _column_bags(ec, rows_t, offsets, fv[perm])  # (M, d) = (c e^T F)^T
            if trainable:
                dW_dec_t += _column_bags(eac, rows_t, offsets, pat.values[perm])
            dW_dec = dW_dec_t.t()
            add_norm_grad_(dW_dec, W_dec, gsum, norms, spec, B, s)

            dpi_mag = _sampled(ec, W_dec, pat).mul_(fires)
            dpi_gate = _sampled(eac, W_dec, pat).add_(dg_pen[pat.cols] * s)  # gates all open
            db_mag = _column_sums(dpi_mag, pat, M)
            db_gate = _column_sums(dpi_gate, pat, M)
            h = pat.values - b_gate[pat.cols]
            dr_mag = _column_sums(dpi_mag * h * er_a, pat, M)
            dh = dpi_gate.addcmul_(dpi_mag, er_a)
            dW_gate = _column_bags(xc, rows_t, offsets, dh[perm])
            db_dec = colsum(ec, ctx.ws) - (db_gate + _column_sums(dpi_mag * er_a, pat, M)) @ W_gate
            if trainable:
                db_dec += colsum(eac, ctx.ws)
        return None, dW_gate, db_gate, dr_mag, db_mag, dW_dec, db_dec, None, None


class _StandardSparse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, spec, ws):
        B, M = x.shape[0], W_enc.shape[0]
        xc = torch.sub(x, b_dec, out=ws.get("xc", x.shape, x))
        H = torch.mm(xc, W_enc.t(), out=ws.get("P", (B, M), x))  # the one dense product
        pat = _Pattern(H, b_enc, ws)
        with threads(ws.small_op_threads, x.device):
            fv = pat.values  # f = relu(pi) at the active entries
            counts = _column_sums(torch.ones_like(fv), pat, M)
            e = _row_bags(W_dec.t().contiguous(), pat, fv).add_(b_dec).sub_(x)
            recon = sqnorm(e) / B
            fsum = _column_sums(fv, pat, M)
            sparse, dg_pen, norms = penalty_terms(fsum, W_dec, spec, B)
        aux = torch.zeros((), dtype=x.dtype, device=x.device)
        ctx.save_for_backward(e, W_enc, W_dec, fsum, dg_pen)
        ctx.norms, ctx.pat, ctx.spec, ctx.ws = norms, pat, spec, ws
        for t in (recon, sparse, aux, counts):
            ctx.mark_non_differentiable(t)
        return recon + sparse, recon.detach(), sparse.detach(), aux, counts

    @staticmethod
    def backward(ctx, s, *_):
        e, W_enc, W_dec, fsum, dg_pen = ctx.saved_tensors
        norms, pat, spec, (xc,) = ctx.norms, ctx.pat, ctx.spec, ctx.ws.take("xc")
        B, M = pat.shape
        with threads(ctx.ws.small_op_threads, xc.device):
            ec = e.mul_(2 * s / B)
            rows_t, offsets, perm = pat.column_order()
            dW_dec = _column_bags(ec, rows_t, offsets, pat.values[perm]).t()
            add_norm_grad_(dW_dec, W_dec, fsum, norms, spec, B, s)
            dpi = _sampled(ec, W_dec, pat).add_(dg_pen[pat.cols] * s)
            db_enc = _column_sums(dpi, pat, M)
            dW_enc = _column_bags(xc, rows_t, offsets, dpi[perm])
            db_dec = colsum(ec, ctx.ws) - db_enc @ W_enc
        return None, dW_enc, db_enc, dW_dec, db_dec, None, None
