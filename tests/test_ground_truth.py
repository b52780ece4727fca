"""Ground-truth metrics of synthetic data: the sources' true feature activations, and MCC,
precision, recall, F1 and uniqueness as SAELens defines them."""

from __future__ import annotations

import pytest
import torch
from conftest import small_config

from analysis.load import load_runs
from sae_sweep.config.schema import SyntheticDataConfig
from sae_sweep.data import SyntheticData, held_out_batches
from sae_sweep.evaluation import evaluate
from sae_sweep.evaluation.catalogue import names
from sae_sweep.evaluation.ground_truth import GroundTruthMetrics
from sae_sweep.export.saelens import write_saelens_folder
from sae_sweep.job import run_job
from sae_sweep.models.standard import StandardSAE

CPU = torch.device("cpu")


def _data(**kw) -> SyntheticData:
    cfg = dict(d=8, n_features=24, mean_active=3, n_eval=300, seed=7, noise_std=0.0)
    return SyntheticData(SyntheticDataConfig(**{**cfg, **kw}), run_seed=0, device=CPU)


def test_synthetic_held_out_rows_come_with_the_coefficients_that_built_them():
    src = _data()
    pairs = list(src.eval_batches_with_truth(128))
    assert [len(x) for x, _ in pairs] == [len(x) for x in src.eval_batches(128)] == [128, 128, 44]
    for (x, coef), plain in zip(pairs, src.eval_batches(128), strict=True):
        assert torch.equal(x, plain)
        assert coef.shape == (len(x), 24)
        torch.testing.assert_close(coef @ src.ground_truth, x)  # x = sum_g coef_g direction_g
    coef = torch.cat([c for _, c in pairs])
    assert (coef >= 0).all() and 2.0 < (coef > 0).sum(1).float().mean() < 4.0  # mean_active 3
    again = torch.cat([c for _, c in src.eval_batches_with_truth(100)])
    assert torch.equal(again, coef)  # the same on every call, whatever the chunking


def test_held_out_batches_pair_truth_only_where_the_source_has_it():
    src = _data()
    assert all(t is not None for _, t in held_out_batches(src, 128))

    class NoTruth:  # a source of stored activations: no true features
        ground_truth = None

        def eval_batches(self, batch_size):
            yield from torch.ones(10, 8).split(batch_size)

    assert [t for _, t in held_out_batches(NoTruth(), 4)] == [None, None, None]


# ---- the metrics --------------------------------------------------------------------------


def _standard_sae(W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor) -> StandardSAE:
    """A standard (ReLU) SAE with the given weights: W_enc (M, d), W_dec (d, M), b_dec 0."""
    d, M = W_dec.shape
    sae = StandardSAE(d, M, decoder_init_norm=1.0, encoder_init_transpose=True,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_dec.zero_()
    return sae


@pytest.mark.parametrize("n_latents", [20, 30, 45])  # fewer, as many and more than true features
def test_metrics_equal_saelens_functions_on_the_same_tensors(n_latents):
    from sae_lens.synthetic import (
        ClassificationMetricsCalculator,
        feature_uniqueness,
        mean_correlation_coefficient,
    )

    gen = torch.Generator().manual_seed(n_latents)
    d, G, n = 12, 30, 600
    truth = torch.randn(G, d, generator=gen)
    W_dec = torch.randn(d, n_latents, generator=gen)
    W_dec[:, :8] = -2.0 * truth[:8].T  # found features, some sign-flipped (|cosine| counts)
    W_dec[:, 8] = 0.0  # a dead latent: a zero column matches nothing
    W_dec[:, 9] = truth[0]  # a second latent on one feature: uniqueness < 1
    true_acts = torch.rand(n, G, generator=gen) * (torch.rand(n, G, generator=gen) < 0.2)
    f = torch.rand(n, n_latents, generator=gen) * (torch.rand(n, n_latents, generator=gen) < 0.3)
    f[:, :8] = true_acts[:, :8]  # latents that detect their features exactly
    ours = GroundTruthMetrics(W_dec, truth)
    for f_chunk, acts_chunk in zip(f.split(250), true_acts.split(250), strict=True):
        ours.update(f_chunk, acts_chunk)
    got = ours.result()

    theirs = ClassificationMetricsCalculator(W_dec.T, truth)
    theirs.add_batch(f, true_acts)
    expected = theirs.compute()
    assert got["mcc"] == pytest.approx(mean_correlation_coefficient(W_dec.T, truth), abs=1e-6)
    assert got["uniqueness"] == feature_uniqueness(W_dec.T, truth) < 1.0
    assert got["precision"] == pytest.approx(expected.precision, abs=1e-6)
    assert got["recall"] == pytest.approx(expected.recall, abs=1e-6)
    assert got["f1"] == pytest.approx(expected.f1_score, abs=1e-6)
    assert got["true_l0"] == pytest.approx((true_acts > 0).sum(1).float().mean().item())


class _HeldOut:
    """Rows drawn from a SAELens SyntheticModel (`sample_with_features`) as a GroundTruthSource."""

    def __init__(self, model, n: int, seed: int):
        torch.manual_seed(seed)  # SAELens draws from the global generator
        self.x, self.acts = model.sample_with_features(n)
        self.ground_truth = model.feature_dict.feature_vectors.detach()
        self.d = self.x.shape[1]

    def eval_batches(self, batch_size):
        yield from self.x.split(batch_size)

    def eval_batches_with_truth(self, batch_size):
        yield from zip(self.x.split(batch_size), self.acts.split(batch_size), strict=True)


def test_evaluate_equals_saelens_eval_sae_on_synthetic_data(tmp_path):
    """The same SAE (ours, exported to SAELens) on the same rows of a SAELens synthetic model:
    every ground-truth figure equals `eval_sae_on_synthetic_data`'s."""
    from sae_lens import SAE
    from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig, eval_sae_on_synthetic_data

    model = SyntheticModel(SyntheticModelConfig(num_features=48, hidden_dim=16, seed=3))
    held_out = _HeldOut(model, n=1500, seed=11)
    truth = held_out.ground_truth
    gen = torch.Generator().manual_seed(1)
    # a partly right SAE: 20 latents on true features, 12 random, all with a firing threshold
    W_dec = torch.cat([truth[:20].T, torch.randn(16, 12, generator=gen)], dim=1)
    W_dec = W_dec / W_dec.norm(dim=0)
    sae = _standard_sae(W_dec.T, torch.full((32,), -0.4), W_dec)
    norm_scale = 0.8
    with torch.no_grad():
        sae.b_dec.copy_(model.feature_dict.bias * norm_scale)  # the model's offset, in our units
    metrics = evaluate(sae, held_out, norm_scale, batch_size=256)

    write_saelens_folder(tmp_path, sae.state_dict(), "standard", norm_scale, metadata={})
    torch.manual_seed(11)  # the same rows as held_out's
    expected = eval_sae_on_synthetic_data(
        SAE.load_from_disk(str(tmp_path)), model.feature_dict, model.activation_generator,
        num_samples=1500, batch_size=1500,
    )  # fmt: skip
    assert 0.3 < metrics["f1"] < 0.9 and 0.4 < metrics["mcc"] < 0.9  # neither trivial case
    assert 0.3 < metrics["explained_variance"] < 0.9
    assert metrics["mcc"] == pytest.approx(expected.mcc, abs=1e-5)
    assert metrics["uniqueness"] == pytest.approx(expected.uniqueness, abs=1e-9)
    assert metrics["precision"] == pytest.approx(expected.classification.precision, abs=1e-5)
    assert metrics["recall"] == pytest.approx(expected.classification.recall, abs=1e-5)
    assert metrics["f1"] == pytest.approx(expected.classification.f1_score, abs=1e-5)
    assert metrics["explained_variance"] == pytest.approx(expected.explained_variance, abs=1e-5)
    assert metrics["l0"] == pytest.approx(expected.sae_l0, abs=1e-5)
    assert metrics["true_l0"] == pytest.approx(expected.true_l0, abs=1e-9)
    assert metrics["dead_fraction"] * 32 == pytest.approx(expected.dead_latents)


def test_an_sae_made_of_the_true_features_scores_one_and_a_random_one_low():
    # G <= d: a linear encoder (the pseudo-inverse) reads each feature's coefficient exactly
    src = _data(d=32, n_features=24, mean_active=3, n_eval=2000)
    truth = src.ground_truth
    oracle = _standard_sae(torch.linalg.pinv(truth).T, torch.full((24,), -1e-4), truth.T)
    right = evaluate(oracle, src, norm_scale=1.0, batch_size=512)
    assert right["mcc"] == pytest.approx(1.0, abs=1e-6)
    assert right["uniqueness"] == 1.0
    # a coefficient below the 1e-4 threshold (rare) is missed: recall a hair under 1
    for name in ("f1", "precision", "recall"):
        assert right[name] == pytest.approx(1.0, abs=1e-3), name
    assert right["true_l0"] == pytest.approx(3.0, rel=0.1)

    gen = torch.Generator().manual_seed(5)
    W = torch.randn(32, 24, generator=gen)
    random = evaluate(_standard_sae(W.T, torch.zeros(24), W), src, 1.0, 512)
    assert random["mcc"] < 0.5 and random["f1"] < 0.3 and random["uniqueness"] < 1.0


def test_sources_without_true_features_have_no_ground_truth_metrics():
    src = _data()

    class Stored:  # the held-out split of stored activations: no true features
        ground_truth = None
        d = 8

        def eval_batches(self, batch_size):
            yield from src.eval_batches(batch_size)

    sae = _standard_sae(src.ground_truth, torch.zeros(24), src.ground_truth.T)
    metrics = evaluate(sae, Stored(), 1.0, 128)
    assert all(metrics[k] is None for k in names(source="ground_truth"))
    assert metrics["fvu"] is not None


def test_the_runs_table_carries_the_ground_truth_metrics(tmp_path):
    run_job(small_config(), tmp_path / "sweep" / "0")
    runs = load_runs(tmp_path / "sweep")
    for name in ("mcc", "f1", "precision", "recall", "uniqueness", "true_l0"):
        assert 0.0 < runs[name].iloc[0] <= (1.0 if name != "true_l0" else 32), name
    assert {"mcc", "f1"} <= set(names(compared=True))  # analysed by default where present
