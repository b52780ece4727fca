"""The fast kernels give the reference loss (`sae.loss_terms`) and every parameter's gradient."""

import itertools

import pytest
import torch

from sae_sweep.config.schema import (
    AuxDecoder,
    NormGrad,
    PenaltyConfig,
    PenaltyKind,
    SAEConfig,
)
from sae_sweep.kernels import Workspace
from sae_sweep.losses import sae_loss
from sae_sweep.models import architecture, build_sae
from sae_sweep.penalties import make_penalty

# (penalty, norm_grad): the penalty corners; with each aux decoder for the gated SAE
PENALTIES = [
    (PenaltyKind.l1, None),
    (PenaltyKind.decoder_norm, NormGrad.live),
    (PenaltyKind.decoder_norm, NormGrad.detached),
]
CORNERS = [("standard", p, n, None) for p, n in PENALTIES] + [
    ("gated", p, n, a)
    for (p, n), a in itertools.product(PENALTIES, (AuxDecoder.frozen, AuxDecoder.trainable))
]
IDS = [f"{k}-{p.value}-{n and n.value}-{a and a.value}" for k, p, n, a in CORNERS]


def random_sae(kind, d=16, M=64, seed=0, shift=0.0, aux=None):
    """An SAE with generic parameters; `shift` lowers the encoder biases (sparser f)."""
    sae = build_sae(SAEConfig(kind=kind, d_sae=M, decoder_init_norm=0.3), d_in=d, seed=seed)
    if aux is not None:
        sae.aux_decoder = aux
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
        encoder_bias = sae.feature_params()["b_gate" if kind == "gated" else "b_enc"][0]
        encoder_bias.sub_(shift)
    return sae


def penalty_of(penalty, norm_grad):
    return make_penalty(PenaltyConfig(kind=penalty, coefficient=0.7, decoder_norm_grad=norm_grad))


def kernel_of(kind, path):
    return architecture(kind).kernels[path]


def loss_and_grads(sae, fn):
    sae.zero_grad(set_to_none=True)
    terms, counts = fn()
    terms.total.backward()
    grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    return terms, counts, grads


def reference(sae, x, penalty, coefficient=0.7):
    def run():
        out = sae(x)
        return sae_loss(sae, x, out, penalty, coefficient), (out.f > 0).sum(0)

    return loss_and_grads(sae, run)


def assert_same(got, want):
    (t1, c1, g1), (t2, c2, g2) = got, want
    for a, b in zip(t1, t2, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c1.to(c2.dtype), c2)
    assert g1.keys() == g2.keys()
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("path", ["dense", "sparse"])
@pytest.mark.parametrize(("kind", "penalty", "norm_grad", "aux"), CORNERS, ids=IDS)
def test_kernel_matches_reference(path, kind, penalty, norm_grad, aux):
    sae = random_sae(kind, shift=0.3, aux=aux)
    x = torch.randn(48, 16)
    ws = Workspace()
    pen = penalty_of(penalty, norm_grad)
    want = reference(sae, x, pen)
    for _ in range(2):  # the second call reuses the workspace buffers
        got = loss_and_grads(sae, lambda: kernel_of(kind, path)(sae, x, pen, 0.7, ws))
        assert_same(got, want)


@pytest.mark.parametrize("kind", ["gated", "standard"])
def test_sparse_kernel_at_low_density_and_with_empty_rows(kind):
    aux = AuxDecoder.trainable if kind == "gated" else None
    sae = random_sae(kind, M=256, shift=1.2, aux=aux)  # most rows: a handful of active entries
    x = torch.randn(64, 16)
    x[5] = 0.0
    pen = penalty_of(PenaltyKind.decoder_norm, NormGrad.live)
    want = reference(sae, x, pen)
    assert 0 < want[1].sum() < 0.1 * 64 * 256
    kernel = kernel_of(kind, "sparse")
    got = loss_and_grads(sae, lambda: kernel(sae, x, pen, 0.7, Workspace()))
    assert_same(got, want)


def test_kernels_leave_no_buffer_alias_in_their_outputs():
    sae = random_sae("gated")
    x = torch.randn(32, 16)
    ws = Workspace()
    pen, kernel = penalty_of(PenaltyKind.l1, None), kernel_of("gated", "dense")
    terms, counts = kernel(sae, x, pen, 0.7, ws)
    kept = counts.clone()
    kernel(sae, torch.randn(32, 16), pen, 0.7, ws)
    torch.testing.assert_close(counts, kept)


def exactly_equal(got, want):
    (t1, c1, g1), (t2, c2, g2) = got, want
    for a, b in zip([*t1, c1, *g1.values()], [*t2, c2, *g2.values()], strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)


@pytest.mark.parametrize(("kind", "penalty", "norm_grad", "aux"), CORNERS, ids=IDS)
def test_bool_masks_give_the_same_bits_as_float_masks(kind, penalty, norm_grad, aux):
    """A GPU keeps the gate and f > 0 as bool (a quarter of the memory); a CPU as float."""
    sae = random_sae(kind, shift=0.3, aux=aux)
    x, pen = torch.randn(48, 16), penalty_of(penalty, norm_grad)
    fn = kernel_of(kind, "dense")
    with_bool = Workspace(bool_masks=True)
    got = loss_and_grads(sae, lambda: fn(sae, x, pen, 0.7, with_bool))
    assert with_bool.take("Sf")[0].dtype == torch.bool
    exactly_equal(got, loss_and_grads(sae, lambda: fn(sae, x, pen, 0.7, Workspace())))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def assert_close_at_precision(got, want, tolerance: float):
    """Loss terms and gradients within `tolerance` of the reference, relative to each one's
    norm; the same firing counts (the inputs are clear of every ReLU's kink)."""
    (t1, c1, g1), (t2, c2, g2) = got, want
    for name, a, b in zip(("total", "recon", "sparse", "aux"), t1, t2, strict=True):
        if b.abs().item() > 0:
            assert relative_error(a.detach().cpu(), b.detach()) < tolerance, name
    torch.testing.assert_close(c1.cpu().to(c2.dtype), c2)
    for name in g2:
        assert relative_error(g1[name].cpu(), g2[name]) < tolerance, name


def inputs_clear_of_kinks(sae, kind, n: int, margin: float = 0.01) -> torch.Tensor:
    """n random inputs none of whose pre-activations (gated: pi_gate, and pi_mag where the
    gate is open) lies within `margin` of 0: a rounding error below the margin cannot flip a
    ReLU, and one flip moves a feature's gradient by a whole input row (several %), which
    would hide the rounding a test of product precision means to bound."""
    with torch.no_grad():
        x = torch.randn(40 * n, sae.d_in)
        if kind == "gated":
            pre = (x - sae.b_dec) @ sae.W_gate.t() + sae.b_gate
            mag = sae.r_mag.exp() * (pre - sae.b_gate) + sae.b_mag
            near = (pre.abs() < margin) | ((pre > 0) & (mag.abs() < margin))
        else:
            near = ((x - sae.b_dec) @ sae.W_enc.t() + sae.b_enc).abs() < margin
        clear = x[~near.any(1)]
    assert len(clear) >= n, "too few clear inputs: lower the margin"
    return clear[:n]


# bf16 keeps 8 significant bits: each product rounds its inputs and its result (2^-9
# relative each), and sums of such terms land at a few 0.1% of a gradient's norm (measured
# over 3 seeds and every corner: at most 0.42%). 1% holds that with room; a wrong product
# (transposed, a missing term) is off by far more.
BF16_TOLERANCE = 1e-2


@pytest.mark.parametrize(("kind", "penalty", "norm_grad", "aux"), CORNERS, ids=IDS)
def test_bf16_products_stay_within_bf16_rounding_of_the_reference(kind, penalty, norm_grad, aux):
    sae = random_sae(kind, shift=0.3, aux=aux)
    x, pen = inputs_clear_of_kinks(sae, kind, 48), penalty_of(penalty, norm_grad)
    want = reference(sae.double(), x.double(), pen)
    sae.float()
    ws = Workspace(products_dtype=torch.bfloat16)
    got = loss_and_grads(sae, lambda: kernel_of(kind, "dense")(sae, x, pen, 0.7, ws))
    assert_close_at_precision(got, want, BF16_TOLERANCE)
    exact = loss_and_grads(sae, lambda: kernel_of(kind, "dense")(sae, x, pen, 0.7, Workspace()))
    assert relative_error(got[2]["W_dec"], exact[2]["W_dec"]) > 0  # the products did change


def to_cpu_float32(result):
    terms, counts, grads = result
    as32 = lambda t: t.detach().cpu().float()  # noqa: E731
    return [as32(t) for t in terms], counts.cpu(), {n: as32(g) for n, g in grads.items()}


@pytest.fixture
def matmul_precision():
    """Set the process's float32 product precision for one test; strict float32 after it."""
    from sae_sweep.training.precision import set_matmul_precision

    yield lambda dtype: set_matmul_precision(dtype, torch.device("cuda"))
    set_matmul_precision("float32", torch.device("cuda"))


# On CUDA against a float64 reference computed on the CPU. float32: the CPU tests'
# tolerances (assert_same). TF32 rounds product inputs to 10 mantissa bits (2^-11, an eighth
# of bf16's rounding) and keeps float32 results: 0.5% of each norm. bf16: as on the CPU.
GPU_PRECISIONS = [("float32", None), ("tf32", 5e-3), ("bfloat16", BF16_TOLERANCE)]


@pytest.mark.gpu
@pytest.mark.parametrize(("matmul_dtype", "tolerance"), GPU_PRECISIONS)
@pytest.mark.parametrize("path", ["dense", "sparse"])
@pytest.mark.parametrize(("kind", "penalty", "norm_grad", "aux"), CORNERS, ids=IDS)
def test_cuda_kernel_matches_reference(
    path, kind, penalty, norm_grad, aux, matmul_dtype, tolerance, matmul_precision
):
    if path == "sparse" and matmul_dtype == "bfloat16":
        pytest.skip("the sparse kernels are float32 only (validation rejects bf16 with them)")
    from sae_sweep.training.precision import products_dtype

    sae = random_sae(kind, d=64, M=128, shift=0.3, aux=aux)
    x, pen = inputs_clear_of_kinks(sae, kind, 256, margin=0.02), penalty_of(penalty, norm_grad)
    want = reference(sae.double(), x.double(), pen)
    sae.float().cuda()
    matmul_precision(matmul_dtype)
    ws = Workspace(products_dtype=products_dtype(matmul_dtype))
    fn = kernel_of(kind, path)
    for _ in range(2):  # the second call reuses the workspace buffers
        got = loss_and_grads(sae, lambda: fn(sae, x.cuda(), pen, 0.7, ws))
        if tolerance is None:
            assert_same(to_cpu_float32(got), to_cpu_float32(want))
        else:
            assert_close_at_precision(got, want, tolerance)
    if path == "dense":
        assert ws.take("Sf")[0].dtype == torch.bool  # masks as bool on a GPU
