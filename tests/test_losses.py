"""Which loss term reaches which parameter, for every freeze corner (docs/design.md, "Losses")."""

import pytest
import torch

from sae_sweep.config.schema import (
    AuxDecoder,
    NormGrad,
    PenaltyConfig,
    PenaltyKind,
    SAEConfig,
)
from sae_sweep.losses import L_aux, L_recon, L_sparse, sae_loss
from sae_sweep.models import build_sae
from sae_sweep.penalties import make_penalty


def _penalty(kind, norm_grad=None):
    return make_penalty(PenaltyConfig(kind=kind, coefficient=0.0, decoder_norm_grad=norm_grad))


PARAMS = ("W_gate", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec")
Y, N = True, False

# term -> (penalty, norm_grad, aux_decoder), expected "gets gradient" per parameter in PARAMS
TABLE = {
    "recon": ((PenaltyKind.l1, None, AuxDecoder.frozen), (Y, N, Y, Y, Y, Y)),
    "sparse/l1": ((PenaltyKind.l1, None, AuxDecoder.frozen), (Y, Y, N, N, N, Y)),
    "sparse/decoder_norm/live": (
        (PenaltyKind.decoder_norm, NormGrad.live, AuxDecoder.frozen),
        (Y, Y, N, N, Y, Y),
    ),
    "sparse/decoder_norm/detached": (
        (PenaltyKind.decoder_norm, NormGrad.detached, AuxDecoder.frozen),
        (Y, Y, N, N, N, Y),
    ),
    "aux/frozen": ((PenaltyKind.l1, None, AuxDecoder.frozen), (Y, Y, N, N, N, Y)),
    "aux/trainable": ((PenaltyKind.l1, None, AuxDecoder.trainable), (Y, Y, N, N, Y, Y)),
}


def _random_gated_sae():
    sae = build_sae(SAEConfig(kind="gated", expansion_factor=4), d_in=8, seed=0)
    with torch.no_grad():  # every parameter generic, so no gradient is zero by accident
        for p in (sae.b_gate, sae.r_mag, sae.b_mag, sae.b_dec):
            p.copy_(torch.randn_like(p) * 0.1)
    return sae


@pytest.mark.parametrize("term", list(TABLE))
def test_gradient_reaches_exactly_the_documented_parameters(term):
    (penalty, norm_grad, aux_decoder), expected = TABLE[term]
    sae = _random_gated_sae()
    sae.aux_decoder = aux_decoder
    x = torch.randn(64, 8)
    terms = sae_loss(sae, x, sae(x), _penalty(penalty, norm_grad), coefficient=0.5)
    getattr(terms, term.split("/")[0]).backward()
    for name, should in zip(PARAMS, expected, strict=True):
        grad = getattr(sae, name).grad
        got = grad is not None and torch.count_nonzero(grad).item() > 0
        assert got == should, f"{term}: {name} {'gets' if got else 'gets no'} gradient"


def test_total_is_the_sum_of_terms_and_standard_has_no_aux():
    sae = build_sae(SAEConfig(kind="standard"), d_in=8, seed=0)
    x = torch.randn(32, 8)
    t = sae_loss(sae, x, sae(x), _penalty(PenaltyKind.l1), coefficient=0.3)
    assert t.aux.item() == 0.0
    torch.testing.assert_close(t.total, t.recon + t.sparse)


def test_terms_on_hand_made_tensors():
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    x_hat = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert L_recon(x, x_hat).item() == pytest.approx((4.0 + 2.0) / 2)  # sum over d, mean over B
    g = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    assert L_sparse(g, 0.5).item() == pytest.approx(0.5 * (3.0 + 3.0) / 2)
    norms = torch.tensor([2.0, 10.0])
    assert L_sparse(g, 1.0, norms).item() == pytest.approx((22.0 + 6.0) / 2)
    W_dec, b_dec = torch.eye(2), torch.zeros(2)
    assert L_aux(x, g, W_dec, b_dec).item() == pytest.approx((0.0 + 9.0) / 2)
