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
    SAEKind,
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
CORNERS = [(SAEKind.standard, p, n, None) for p, n in PENALTIES] + [
    (SAEKind.gated, p, n, a)
    for (p, n), a in itertools.product(PENALTIES, (AuxDecoder.frozen, AuxDecoder.trainable))
]
IDS = [f"{k.value}-{p.value}-{n and n.value}-{a and a.value}" for k, p, n, a in CORNERS]


def random_sae(kind, d=16, M=64, seed=0, shift=0.0, aux=None):
    """An SAE with generic parameters; `shift` lowers the encoder biases (sparser f)."""
    sae = build_sae(SAEConfig(kind=kind, d_sae=M, decoder_init_norm=0.3), d_in=d, seed=seed)
    if aux is not None:
        sae.aux_decoder = aux
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
        encoder_bias = sae.feature_params()["b_gate" if kind == SAEKind.gated else "b_enc"][0]
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


@pytest.mark.parametrize("kind", [SAEKind.gated, SAEKind.standard])
def test_sparse_kernel_at_low_density_and_with_empty_rows(kind):
    aux = AuxDecoder.trainable if kind == SAEKind.gated else None
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
    sae = random_sae(SAEKind.gated)
    x = torch.randn(32, 16)
    ws = Workspace()
    pen, kernel = penalty_of(PenaltyKind.l1, None), kernel_of(SAEKind.gated, "dense")
    terms, counts = kernel(sae, x, pen, 0.7, ws)
    kept = counts.clone()
    kernel(sae, torch.randn(32, 16), pen, 0.7, ws)
    torch.testing.assert_close(counts, kept)
