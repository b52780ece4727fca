"""Ground-truth metrics of synthetic data: the sources' true feature activations, and MCC,
precision, recall, F1 and uniqueness as SAELens defines them."""

from __future__ import annotations

import torch

from sae_sweep.config.schema import SyntheticDataConfig
from sae_sweep.data import SyntheticData, held_out_batches

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
