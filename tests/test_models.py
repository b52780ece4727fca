"""The architectures compute exactly their documented equations."""

import math

import torch

from sae_sweep.config.schema import SAEConfig
from sae_sweep.models import GatedSAE, StandardSAE, build_sae


def _gated_2x2() -> GatedSAE:
    sae = GatedSAE(2, 2, decoder_init_norm=1.0, encoder_init_transpose=True,
                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    with torch.no_grad():
        sae.W_gate.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        sae.b_gate.copy_(torch.tensor([0.0, 1.0]))
        sae.r_mag.copy_(torch.tensor([math.log(2.0), 0.0]))
        sae.b_mag.copy_(torch.tensor([-0.25, 3.0]))
        sae.W_dec.copy_(torch.tensor([[2.0, 0.0], [1.0, 1.0]]))  # column 0 = (2, 1)
        sae.b_dec.copy_(torch.tensor([0.5, 0.0]))
    return sae


def test_gated_forward_matches_hand_computed_example():
    # x - b_dec = (0.5, 2); W_gate(x - b_dec) = (0.5, -2)
    # pi_gate = (0.5, -1): feature 0 open, feature 1 closed
    # pi_mag = exp(r_mag) * (0.5, -2) + b_mag = (1.0 - 0.25, -2 + 3) = (0.75, 1)
    # f = (0.75, 0); g = ReLU(pi_gate) = (0.5, 0); x_hat = 0.75 * (2, 1) + (0.5, 0) = (2, 0.75)
    out = _gated_2x2()(torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(out.f, torch.tensor([[0.75, 0.0]]))
    torch.testing.assert_close(out.g, torch.tensor([[0.5, 0.0]]))
    torch.testing.assert_close(out.x_hat, torch.tensor([[2.0, 0.75]]))


def test_r_mag_scales_the_rows_of_w_gate_in_the_magnitude_path():
    sae = build_sae(SAEConfig(kind="gated"), d_in=8, seed=1)
    with torch.no_grad():
        sae.r_mag.copy_(torch.randn(sae.d_sae))
        sae.b_gate.fill_(10.0)  # every gate open: f = ReLU(pi_mag)
    x = torch.randn(5, 8)
    W_mag = torch.exp(sae.r_mag)[:, None] * sae.W_gate
    expected = torch.relu((x - sae.b_dec) @ W_mag.T + sae.b_mag)
    torch.testing.assert_close(sae(x).f, expected)


def test_heaviside_gate_passes_no_gradient():
    # b_gate reaches f only through the step 1[pi_gate > 0]: its gradient must be exactly 0.
    sae = build_sae(SAEConfig(kind="gated"), d_in=8, seed=2)
    with torch.no_grad():
        sae.b_gate.copy_(torch.randn(sae.d_sae) * 0.1)
    sae(torch.randn(16, 8)).f.sum().backward()
    assert sae.b_gate.grad is None or torch.count_nonzero(sae.b_gate.grad) == 0
    assert torch.count_nonzero(sae.W_gate.grad) > 0  # the magnitude path does carry gradient


def test_standard_forward_matches_equation_and_g_is_f():
    sae = StandardSAE(4, 6, decoder_init_norm=0.1, encoder_init_transpose=False,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    x = torch.randn(3, 4)
    out = sae(x)
    f = torch.relu((x - sae.b_dec) @ sae.W_enc.T + sae.b_enc)
    torch.testing.assert_close(out.f, f)
    torch.testing.assert_close(out.g, f)
    torch.testing.assert_close(out.x_hat, f @ sae.W_dec.T + sae.b_dec)


def test_init_decoder_norm_and_encoder_transpose_at_init_only():
    sae = build_sae(SAEConfig(kind="standard", decoder_init_norm=0.1), d_in=8, seed=3)
    torch.testing.assert_close(sae.W_dec.norm(dim=0), torch.full((sae.d_sae,), 0.1))
    torch.testing.assert_close(sae.W_enc, sae.W_dec.T)
    assert sae.W_enc.data_ptr() != sae.W_dec.data_ptr()  # a copy, never tied
    off = build_sae(SAEConfig(kind="standard", encoder_init_transpose=False), d_in=8, seed=3)
    assert not torch.allclose(off.W_enc, off.W_dec.T)


def test_dictionary_size_from_expansion_factor_or_explicit():
    assert build_sae(SAEConfig(kind="gated", expansion_factor=4), 8, 0).d_sae == 32
    assert build_sae(SAEConfig(kind="gated", d_sae=50), 8, 0).d_sae == 50
