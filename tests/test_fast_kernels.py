"""The fast kernels give the reference loss (`sae_loss`) and every parameter's gradient."""

import itertools

import pytest
import torch

from sae_sweep.config.schema import AuxDecoder, NormGrad, PenaltyKind, SAEConfig, SAEKind
from sae_sweep.kernels import Workspace, dense_loss, sparse_loss
from sae_sweep.kernels.dense import PenaltySpec
from sae_sweep.losses import sae_loss
from sae_sweep.models import build_sae

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


def random_sae(kind, d=16, M=64, seed=0, shift=0.0):
    """An SAE with generic parameters; `shift` lowers the encoder biases (sparser f)."""
    sae = build_sae(SAEConfig(kind=kind, d_sae=M, decoder_init_norm=0.3), d_in=d, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
        for name in ("b_gate", "b_enc"):
            if hasattr(sae, name):
                getattr(sae, name).sub_(shift)
    return sae


def spec_of(penalty, norm_grad, aux, coefficient=0.7):
    return PenaltySpec(
        coefficient=coefficient,
        decoder_norm=penalty == PenaltyKind.decoder_norm,
        norm_live=norm_grad == NormGrad.live,
        aux=aux and aux.value,
    )


def loss_and_grads(sae, fn):
    sae.zero_grad(set_to_none=True)
    terms, counts = fn()
    terms.total.backward()
    grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    return terms, counts, grads


def reference(sae, x, penalty, norm_grad, aux, coefficient=0.7):
    def run():
        out = sae(x)
        terms = sae_loss(sae, x, out, penalty=penalty, coefficient=coefficient,
                         norm_grad=norm_grad, aux_decoder=aux)  # fmt: skip
        return terms, (out.f > 0).sum(0)

    return loss_and_grads(sae, run)


def assert_same(got, want):
    (t1, c1, g1), (t2, c2, g2) = got, want
    for a, b in zip(t1, t2, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c1.to(c2.dtype), c2)
    assert g1.keys() == g2.keys()
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("kernel", [dense_loss, sparse_loss], ids=["dense", "sparse"])
@pytest.mark.parametrize(("kind", "penalty", "norm_grad", "aux"), CORNERS, ids=IDS)
def test_kernel_matches_reference(kernel, kind, penalty, norm_grad, aux):
    sae = random_sae(kind, shift=0.3)
    x = torch.randn(48, 16)
    ws = Workspace()
    spec = spec_of(penalty, norm_grad, aux)
    want = reference(sae, x, penalty, norm_grad, aux)
    for _ in range(2):  # the second call reuses the workspace buffers
        got = loss_and_grads(sae, lambda: kernel(sae, x, spec, ws))
        assert_same(got, want)


@pytest.mark.parametrize("kind", [SAEKind.gated, SAEKind.standard])
def test_sparse_kernel_at_low_density_and_with_empty_rows(kind):
    sae = random_sae(kind, M=256, shift=1.2)  # most rows hold a handful of active entries
    x = torch.randn(64, 16)
    x[5] = 0.0
    aux = AuxDecoder.trainable if kind == SAEKind.gated else None
    want = reference(sae, x, PenaltyKind.decoder_norm, NormGrad.live, aux)
    assert 0 < want[1].sum() < 0.1 * 64 * 256
    spec = spec_of(PenaltyKind.decoder_norm, NormGrad.live, aux)
    got = loss_and_grads(sae, lambda: sparse_loss(sae, x, spec, Workspace()))
    assert_same(got, want)


def test_kernels_leave_no_buffer_alias_in_their_outputs():
    sae = random_sae(SAEKind.gated)
    x = torch.randn(32, 16)
    ws = Workspace()
    spec = spec_of(PenaltyKind.l1, None, AuxDecoder.frozen)
    terms, counts = dense_loss(sae, x, spec, ws)
    kept = counts.clone()
    dense_loss(sae, torch.randn(32, 16), spec, ws)
    torch.testing.assert_close(counts, kept)
