"""Metric definitions on hand-made tensors (docs/design.md, "Metrics")."""

import pytest
import torch

from sae_sweep.evaluation.metrics import (
    StreamingMetrics,
    firing_frequency,
    fvu,
    l0,
    l2_ratio,
    mmcs,
    mse,
    shrinkage,
)


def test_fvu_uses_variance_about_the_mean():
    x = torch.tensor([[11.0, 0.0], [9.0, 0.0]])  # mean (10, 0): variance about mean = 2
    x_hat = torch.tensor([[10.0, 0.0], [10.0, 0.0]])  # error 1 + 1 = 2
    assert fvu(x, x_hat).item() == pytest.approx(1.0)  # about zero it would be 2/202
    assert mse(x, x_hat).item() == pytest.approx(1.0)


def test_shrinkage_gamma():
    x = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    assert shrinkage(x, 0.5 * x).item() == pytest.approx(0.5)  # uniformly shrunk by half
    assert shrinkage(x, x).item() == pytest.approx(1.0)


def test_shrinkage_is_a_ratio_of_sums_over_tokens_not_of_norms():
    """Cases where the wrong formulas give other values:
    ||x_hat|| / ||x||, x_hat.x / ||x||^2, ||x_hat||^2 / ||x||^2, or a mean of per-token ratios."""
    x = torch.tensor([[1.0, 0.0]])
    x_hat = torch.tensor([[0.5, 1.0]])  # ||x_hat||^2 = 1.25, x_hat.x = 0.5
    assert shrinkage(x, x_hat).item() == pytest.approx(2.5)  # not 1.118, 0.5 or 1.25
    x = torch.tensor([[1.0, 0.0], [10.0, 0.0]])
    x_hat = torch.tensor([[0.5, 1.0], [10.0, 0.0]])
    assert shrinkage(x, x_hat).item() == pytest.approx(101.25 / 100.5)  # mean of ratios: 1.75


def test_l2_ratio_is_the_mean_of_per_token_ratios():
    x = torch.tensor([[1.0, 0.0], [10.0, 0.0]])
    x_hat = torch.tensor([[2.0, 0.0], [0.0, 10.0]])  # direction is irrelevant to the ratio
    assert l2_ratio(x, x_hat).item() == pytest.approx(1.5)  # ratio of means: 12/11


def test_l2_ratio_leaves_out_tokens_of_zero_norm():
    # Synthetic data draws all-zero tokens; the decoder bias alone made their "ratio" 1e11.
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0], [10.0, 0.0]])
    x_hat = torch.tensor([[2.0, 0.0], [0.1, 0.0], [0.0, 10.0]])
    assert l2_ratio(x, x_hat).item() == pytest.approx(1.5)
    acc = StreamingMetrics(1, torch.device("cpu"))
    acc.update(x[:2], x_hat[:2], torch.ones(2, 1))
    acc.update(x[2:], x_hat[2:], torch.ones(1, 1))
    assert acc.result()["l2_ratio"] == pytest.approx(1.5)


def test_alive_and_dense_fractions_count_firing_tokens_per_latent():
    # 20 tokens, 4 latents: fires on 0, 1 (5%), 2 (exactly 10%: not dense), 20 (100%) tokens
    f = torch.zeros(20, 4)
    f[:1, 1] = 1.0
    f[:2, 2] = 0.5
    f[:, 3] = 2.0
    assert firing_frequency(f).tolist() == pytest.approx([0.0, 0.05, 0.1, 1.0])
    acc = StreamingMetrics(4, torch.device("cpu"))
    for chunk in f.split(7):
        acc.update(torch.ones(len(chunk), 2), torch.ones(len(chunk), 2), chunk)
    r = acc.result()
    assert r["alive_fraction"] == pytest.approx(0.75)
    assert r["dead_fraction"] == pytest.approx(0.25)
    assert r["dense_fraction"] == pytest.approx(0.25)  # only the latent above 10%
    torch.testing.assert_close(acc.firing_frequency().float(), firing_frequency(f))


def test_l0_counts_nonzero_features_per_token():
    f = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    assert l0(f).item() == pytest.approx(1.0)


def test_mmcs_is_one_for_the_true_dictionary_up_to_permutation_and_scale():
    true = torch.nn.functional.normalize(torch.randn(20, 8), dim=1)
    W_dec = (true[torch.randperm(20)] * torch.rand(20, 1).add(0.5)).T  # (d, M), scaled columns
    W_dec = torch.cat([W_dec, torch.randn(8, 5)], dim=1)  # extra learned features do not hurt
    m, frac = mmcs(true, W_dec)
    assert m.item() == pytest.approx(1.0)
    assert frac.item() == 1.0
    m_rand, frac_rand = mmcs(true, torch.randn(8, 25))
    assert m_rand.item() < 0.95 and frac_rand.item() < 1.0


def test_streaming_metrics_equal_the_one_shot_definitions():
    x, x_hat = torch.randn(100, 6) + 3.0, torch.randn(100, 6)
    f = torch.relu(torch.randn(100, 10))
    f[:, 9] = 0.0  # one feature never fires
    acc = StreamingMetrics(10, torch.device("cpu"))
    for chunk in range(0, 100, 30):
        acc.update(x[chunk : chunk + 30], x_hat[chunk : chunk + 30], f[chunk : chunk + 30])
    r = acc.result()
    assert r["fvu"] == pytest.approx(fvu(x, x_hat).item(), rel=1e-5)
    assert r["mse"] == pytest.approx(mse(x, x_hat).item(), rel=1e-5)
    assert r["shrinkage"] == pytest.approx(shrinkage(x, x_hat).item(), rel=1e-5)
    assert r["relative_reconstruction_bias"] == r["shrinkage"]
    assert r["l2_ratio"] == pytest.approx(l2_ratio(x, x_hat).item(), rel=1e-5)
    assert r["l0"] == pytest.approx(l0(f).item(), rel=1e-6)
    assert r["dead_fraction"] == pytest.approx(0.1)
    assert r["explained_variance"] == pytest.approx(1 - r["fvu"])


def test_dead_and_dense_latent_fractions():
    """Of 4 latents: one never fires (dead), one fires on half the tokens (dense, > 10%),
    one on 1 token of 20 (5%: not dense), one on 3 of 20 (15%: dense)."""
    f = torch.zeros(20, 4)
    f[:10, 1] = 1.0
    f[0, 2] = 1.0
    f[:3, 3] = 1.0
    x = torch.randn(20, 3)
    acc = StreamingMetrics(4, torch.device("cpu"))
    acc.update(x[:7], x[:7], f[:7])  # two batches: the counts accumulate
    acc.update(x[7:], x[7:], f[7:])
    r = acc.result()
    assert r["dead_fraction"] == 0.25
    assert r["dense_fraction"] == 0.5
