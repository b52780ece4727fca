"""Dense fast path: the standard and gated reference losses and their gradients in the minimum
of matrix products.

Notation as in docs/design.md (Architectures, Losses): x (B, d), W_gate/W_enc (M, d),
W_dec (d, M); c = 2/B.
Gated SAE, forward (3 products):
    P   = (x - b_dec) W_gate^T + b_gate          pi_gate          [product 1]
    G   = relu(P),  Sg = 1[P > 0]                 g and the gate
    F   = relu(Sg * (e^r P + b_mag - e^r b_gate))  f (pi_mag from the same product)
    e   = F W_dec^T + b_dec - x                  recon residual   [product 2]
    ea  = G W_dec^T + b_dec - x                  aux residual     [product 3]
Backward (4 products; 5 with a trainable aux decoder):
    dW_dec = c e^T F  (+ c ea^T G)                                 [4, (5)]
    dpi_mag = Sf * c e W_dec,  Sf = 1[F > 0]                       [6]
    dpi_gate = Sg * (c ea W_dec + lambda n)                        [7]
    dW_gate = (dpi_gate + e^r dpi_mag)^T (x - b_dec)               [8]
    b_dec's centring gradient is -(column sums of dh) W_gate: a vector-matrix product, not
    another (B, d) one. A frozen aux decoder skips product 5; nothing is recomputed.
The standard SAE is the same with one path: 2 forward and 3 backward products.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch

from ..config.schema import AuxDecoder
from ..losses import LossTerms
from ..penalties import Penalty


class Workspace:
    """(B, M) buffers reused from step to step: a fresh 64 MiB temporary costs ~16k page faults.

    One step at a time: a forward pass fills them and its backward pass reads them (and may
    overwrite them). Nothing returned to the caller aliases a buffer.
    """

    def __init__(
        self,
        small_op_threads: int = 1,
        products_dtype: torch.dtype | None = None,
        bool_masks: bool | None = None,
    ):
        self._buffers: dict[str, torch.Tensor] = {}
        self._fresh: set[str] = set()
        self.small_op_threads = small_op_threads
        """CPU threads for nnz-sized work (sparse path); 0 = torch's setting."""
        self.products_dtype = products_dtype
        """bfloat16: the dense kernels' (B, d) x (d, M) products take bf16 inputs and
        accumulate in fp32 (train.matmul_dtype); None: the inputs' own dtype."""
        self.bool_masks = bool_masks
        """0/1 masks (the gate, f > 0) as bool, a quarter of float32's memory; None = on a
        GPU only. On a CPU, torch's float-times-bool kernels measured 6-8x slower than
        float-times-float (torch 2.13, 2 cores), and the results are the same either way."""

    def mask_dtype(self, like: torch.Tensor) -> torch.dtype:
        bool_masks = like.device.type != "cpu" if self.bool_masks is None else self.bool_masks
        return torch.bool if bool_masks else like.dtype

    def get(self, name: str, shape, like: torch.Tensor, dtype=None) -> torch.Tensor:
        """The buffer `name`, (re)allocated uninitialised when shape, dtype or device change."""
        dtype = dtype or like.dtype
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != like.device:
            buf = self._buffers[name] = torch.empty(shape, dtype=dtype, device=like.device)
            self._fresh.add(name)
        return buf

    def take(self, *names: str) -> list[torch.Tensor]:
        """The buffers a forward pass filled, for its backward pass."""
        return [self._buffers[n] for n in names]

    def nbytes(self) -> int:
        """Bytes held by the buffers (bench/step.py --memory reports them)."""
        return sum(b.numel() * b.element_size() for b in self._buffers.values())

    def fresh(self, name: str) -> bool:
        """True once after `name` was (re)allocated: the caller initialises it then."""
        if name in self._fresh:
            self._fresh.discard(name)
            return True
        return False


class KernelSpec(NamedTuple):
    """What the reference loss does beyond the parameters, as the kernels read it."""

    penalty: Penalty
    coefficient: float
    aux_trainable: bool = False
    """Gated only: the aux term's decoder is the live one (else stop-gradient copies)."""


def standard_dense_loss(sae, x, penalty: Penalty, coefficient, ws: Workspace):
    """(LossTerms, (M,) firing counts) of a standard SAE, with the gradients of its reference
    loss."""
    spec = KernelSpec(penalty, float(coefficient))
    return _terms(_StandardDense.apply(x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, spec, ws))


def gated_dense_loss(sae, x, penalty: Penalty, coefficient, ws: Workspace):
    """The same for a gated SAE."""
    spec = KernelSpec(penalty, float(coefficient), sae.aux_decoder == AuxDecoder.trainable)
    params = (sae.W_gate, sae.b_gate, sae.r_mag, sae.b_mag, sae.W_dec, sae.b_dec)
    return _terms(_GatedDense.apply(x, *params, spec, ws))


def _terms(outs):
    total, recon, sparse, aux, counts = outs
    return LossTerms(total, recon, sparse, aux), counts


@contextlib.contextmanager
def threads(n: int, device: torch.device):
    """Run small (memory-bound, short) CPU work on n threads (0 or a GPU: unchanged)."""
    if n <= 0 or device.type != "cpu" or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def colsum(A: torch.Tensor, ws: Workspace) -> torch.Tensor:
    """(M,) column sums of a (B, M) matrix as ones @ A: one streaming pass (~4x faster than
    A.sum(0), which reduces along the strided axis)."""
    ones = ws.get("ones", (A.shape[0],), A)
    if ws.fresh("ones"):
        ones.fill_(1.0)
    return ones @ A


def count_columns(S: torch.Tensor, ws: Workspace) -> torch.Tensor:
    """(M,) number of ones in each column of a (B, M) 0/1 mask, float or bool."""
    if S.dtype == torch.bool:
        return S.sum(0, dtype=torch.float32)
    return colsum(S, ws)


def mask(A: torch.Tensor, name: str, ws: Workspace) -> torch.Tensor:
    """1[A > 0] into the workspace buffer `name` (bool or float: `Workspace.mask_dtype`)."""
    return torch.gt(A, 0, out=ws.get(name, A.shape, A, ws.mask_dtype(A)))


def mm(a: torch.Tensor, b: torch.Tensor, ws: Workspace, out=None) -> torch.Tensor:
    """a @ b (float32 result); with `ws.products_dtype` the inputs are rounded to it and the
    product accumulates in float32 (cuBLAS, oneDNN), its result widened into `out`."""
    low = ws.products_dtype
    if low is None:
        return torch.mm(a, b, out=out)
    product = torch.mm(a.to(low), b.to(low))
    return product.float() if out is None else out.copy_(product)


def addmm(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor, ws: Workspace, out, beta=1.0):
    """beta c + a @ b into `out` (which may be c), the product as in `mm`."""
    if ws.products_dtype is None:
        return torch.addmm(c, a, b, beta=beta, out=out)
    if out is c:  # the product must not overwrite c before c is read
        return out.mul_(beta).add_(mm(a, b, ws))
    return mm(a, b, ws, out=out).add_(c, alpha=beta)


def sqnorm(a: torch.Tensor) -> torch.Tensor:
    """sum of squares of every entry, without a squared temporary."""
    flat = a.reshape(-1)
    return torch.dot(flat, flat)


def penalty_terms(gsum: torch.Tensor, W_dec: torch.Tensor, spec: KernelSpec, B: int):
    """L_sparse from the (M,) column sums of g, dL_sparse/dg as an (M,) vector, the norms."""
    return spec.penalty.kernel_terms(gsum, W_dec, spec.coefficient, B)


def add_norm_grad_(dW_dec, W_dec, gsum, norms, spec: KernelSpec, B: int, s) -> None:
    """decoder_norm/live: d/dW_dec of lambda/B sum_i gsum_i ||W_dec[:, i]|| (in place)."""
    spec.penalty.add_decoder_grad_(dW_dec, W_dec, gsum, norms, spec.coefficient, B, s)


class _GatedDense(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_gate, b_gate, r_mag, b_mag, W_dec, b_dec, spec, ws):
        B, M = x.shape[0], W_gate.shape[0]
        xc = torch.sub(x, b_dec, out=ws.get("xc", x.shape, x))
        P = addmm(b_gate, xc, W_gate.t(), ws, out=ws.get("P", (B, M), x))  # pi_gate
        G = torch.clamp_min(P, 0, out=ws.get("G", (B, M), x))  # g = relu(pi_gate)
        Sg = mask(P, "Sg", ws)  # the gate, 1[pi_gate > 0]
        er = r_mag.exp()
        # pi_mag = e^r (P - b_gate) + b_mag, from the same product; f = gate * relu(pi_mag)
        F = torch.addcmul(b_mag - er * b_gate, P, er, out=ws.get("F", (B, M), x))
        F.mul_(Sg).relu_()
        Sf = mask(F, "Sf", ws)
        counts = count_columns(Sf, ws)  # (M,) firing counts
        # x_hat - x = F W_dec^T - (x - b_dec), and the same for the aux reconstruction
        e = addmm(xc, F, W_dec.t(), ws, out=ws.get("e", x.shape, x), beta=-1)
        ea = addmm(xc, G, W_dec.t(), ws, out=ws.get("ea", x.shape, x), beta=-1)
        recon = sqnorm(e) / B
        aux = sqnorm(ea) / B
        gsum = colsum(G, ws)
        sparse, dg_pen, norms = penalty_terms(gsum, W_dec, spec, B)
        ctx.save_for_backward(W_gate, b_gate, er, W_dec, gsum, dg_pen, norms)
        ctx.spec, ctx.ws = spec, ws
        for t in (recon, sparse, aux, counts):
            ctx.mark_non_differentiable(t)
        return recon + sparse + aux, recon.detach(), sparse.detach(), aux.detach(), counts

    @staticmethod
    def backward(ctx, s, *_):
        W_gate, b_gate, er, W_dec, gsum, dg_pen, norms = ctx.saved_tensors
        spec, ws = ctx.spec, ctx.ws
        P, G, Sg, F, Sf, xc, e, ea = ws.take("P", "G", "Sg", "F", "Sf", "xc", "e", "ea")
        B, M = P.shape
        ec, eac = e.mul_(2 * s / B), ea.mul_(2 * s / B)  # dL/dx_hat, dL/d(aux recon.)
        trainable = spec.aux_trainable

        dW_dec = mm(ec.t(), F, ws)
        if trainable:
            addmm(dW_dec, eac.t(), G, ws, out=dW_dec)
        add_norm_grad_(dW_dec, W_dec, gsum, norms, spec, B, s)

        D = mm(ec, W_dec, ws, out=ws.get("D", (B, M), xc)).mul_(Sf)  # dL/dpi_mag
        db_mag = colsum(D, ws)
        dr_mag = er * (colsum(torch.mul(D, P, out=F), ws) - b_gate * db_mag)  # h = P - b_gate
        D2 = addmm(dg_pen * s, eac, W_dec, ws, out=ws.get("D2", (B, M), xc)).mul_(Sg)
        db_gate = colsum(D2, ws)  # dL/dpi_gate
        dh = D2.addcmul_(D, er)  # dL/dh = dpi_gate + e^r dpi_mag
        dW_gate = mm(dh.t(), xc, ws)
        db_dec = colsum(ec, ws) - (db_gate + er * db_mag) @ W_gate
        if trainable:
            db_dec += colsum(eac, ws)
        return None, dW_gate, db_gate, dr_mag, db_mag, dW_dec, db_dec, None, None


class _StandardDense(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, spec, ws):
        B, M = x.shape[0], W_enc.shape[0]
        xc = torch.sub(x, b_dec, out=ws.get("xc", x.shape, x))
        F = addmm(b_enc, xc, W_enc.t(), ws, out=ws.get("F", (B, M), x)).relu_()  # f = g
        Sf = mask(F, "Sf", ws)
        counts = count_columns(Sf, ws)
        e = addmm(xc, F, W_dec.t(), ws, out=ws.get("e", x.shape, x), beta=-1)  # x_hat - x
        recon = sqnorm(e) / B
        fsum = colsum(F, ws)
        sparse, dg_pen, norms = penalty_terms(fsum, W_dec, spec, B)
        aux = torch.zeros((), dtype=x.dtype, device=x.device)
        ctx.save_for_backward(W_enc, W_dec, fsum, dg_pen, norms)
        ctx.spec, ctx.ws = spec, ws
        for t in (recon, sparse, aux, counts):
            ctx.mark_non_differentiable(t)
        return recon + sparse, recon.detach(), sparse.detach(), aux, counts

    @staticmethod
    def backward(ctx, s, *_):
        W_enc, W_dec, fsum, dg_pen, norms = ctx.saved_tensors
        spec, ws = ctx.spec, ctx.ws
        F, Sf, xc, e = ws.take("F", "Sf", "xc", "e")
        B, M = F.shape
        ec = e.mul_(2 * s / B)
        dW_dec = mm(ec.t(), F, ws)
        add_norm_grad_(dW_dec, W_dec, fsum, norms, spec, B, s)
        D = addmm(dg_pen * s, ec, W_dec, ws, out=ws.get("D", (B, M), xc)).mul_(Sf)  # dL/dpi
        db_enc = colsum(D, ws)
        dW_enc = mm(D.t(), xc, ws)
        db_dec = colsum(ec, ws) - db_enc @ W_enc
        return None, dW_enc, db_enc, dW_dec, db_dec, None, None
