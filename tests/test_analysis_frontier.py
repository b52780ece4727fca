"""Pareto frontiers on hand-made points: dominated points out, ties, single points, seeds."""

import numpy as np
import pandas as pd
import pytest

from analysis.compare import interpolate
from analysis.frontier import aggregate_seeds, frontier_of, frontier_points, pareto_mask


def test_dominated_points_are_excluded():
    # (L0, FVU), lower-left better. (20, 0.3) is dominated by (10, 0.2); (5, 0.4) is not.
    x = np.array([10.0, 20.0, 5.0, 40.0])
    y = np.array([0.2, 0.3, 0.4, 0.1])
    assert pareto_mask(x, y).tolist() == [True, False, True, True]


def test_higher_is_better_flips_the_y_direction():
    # (L0, loss recovered), upper-left better: (20, 0.8) is dominated by (10, 0.9).
    x = np.array([10.0, 20.0, 40.0])
    y = np.array([0.9, 0.8, 0.95])
    assert pareto_mask(x, y, higher_is_better=True).tolist() == [True, False, True]
    assert pareto_mask(x, y, higher_is_better=False).tolist() == [True, True, False]


def test_ties():
    # Same L0: only the better FVU stays. Same FVU: only the lower L0 stays.
    assert pareto_mask([10.0, 10.0], [0.3, 0.2]).tolist() == [False, True]
    assert pareto_mask([10.0, 20.0], [0.2, 0.2]).tolist() == [True, False]
    # Exact duplicates: neither dominates the other, both stay.
    assert pareto_mask([10.0, 10.0, 30.0], [0.2, 0.2, 0.1]).tolist() == [True, True, True]


def test_single_point_and_empty():
    assert pareto_mask([7.0], [0.5]).tolist() == [True]
    assert pareto_mask([], []).tolist() == []


def _runs(rows):
    cols = ["variant_label", "run_id", "penalty.coefficient", "seed", "l0", "fvu"]
    df = pd.DataFrame(rows, columns=cols)
    df["status"] = "done"
    return df


def test_seeds_are_aggregated_per_variant_and_lambda():
    runs = _runs(
        [
            ("a", "r0", 0.1, 0, 20.0, 0.10),
            ("a", "r1", 0.1, 1, 22.0, 0.14),
            ("a", "r2", 1.0, 0, 5.0, 0.30),
            ("b", "r3", 0.1, 0, 30.0, 0.05),
        ]
    )
    agg = aggregate_seeds(runs, "fvu")
    a01 = agg[(agg["variant_label"] == "a") & (agg["lam"] == 0.1)].iloc[0]
    assert a01["n_seeds"] == 2
    assert a01["l0"] == pytest.approx(21.0)
    assert a01["fvu"] == pytest.approx(0.12)
    assert a01["fvu_std"] == pytest.approx(np.std([0.10, 0.14], ddof=1))
    assert (a01["fvu_min"], a01["fvu_max"]) == (0.10, 0.14)
    # A single seed has no spread (NaN), not a made-up zero.
    assert np.isnan(agg[agg["variant_label"] == "b"].iloc[0]["fvu_std"])
    assert len(agg) == 3


def test_frontier_points_per_variant_with_single_point_variant():
    runs = _runs(
        [
            ("a", "r0", 0.1, 0, 20.0, 0.10),
            ("a", "r1", 0.3, 0, 25.0, 0.20),  # dominated within a
            ("a", "r2", 1.0, 0, 5.0, 0.30),
            ("b", "r3", 0.1, 0, 30.0, 0.50),  # dominated by a's points, but b's only point
        ]
    )
    pts = frontier_points(runs, "fvu")
    fa = frontier_of(pts, "a")
    assert fa["l0"].tolist() == [5.0, 20.0]  # sorted by L0, dominated point out
    fb = frontier_of(pts, "b")
    assert fb["l0"].tolist() == [30.0]  # frontiers are per variant


def test_failed_runs_and_zero_l0_are_not_on_frontiers():
    runs = _runs(
        [
            ("a", "r0", 0.1, 0, 20.0, 0.1),
            ("a", "r1", 1.0, 0, 0.0, 1.0),  # L0 = 0 cannot sit on a log axis
            ("a", "r2", 0.3, 0, 1.0, 0.01),
        ]
    )
    runs.loc[2, "status"] = "failed"
    agg = aggregate_seeds(runs, "fvu")
    assert agg["run_ids"].tolist() == ["r0"]


def test_topk_target_runs_are_points_of_their_own_k():
    # A TopK variant's target-L0 runs keep the grid's lambda_multiplier (1.0) and set sae.k:
    # each k is its own frontier point, named by k, never averaged with the grid's k = 59.
    rows = [(lm, k, s, l0) for lm, k, l0 in [(1.0, 59, 40.0), (4.0, 5, 5.0), (1.0, 8, 8.0),
            (1.0, 16, 15.5)] for s in (0, 1)]  # fmt: skip
    runs = pd.DataFrame(
        [
            {
                "variant_label": "topk",
                "run_id": f"r{i}",
                "status": "done",
                "lambda_multiplier": lm,
                "sae.k": k,
                "seed": s,
                "l0": l0,
                "fvu": 1 / l0,
            }
            for i, (lm, k, s, l0) in enumerate(rows)
        ]  # fmt: skip
    )
    points = aggregate_seeds(runs, "fvu")
    assert sorted(points["lam"]) == [5, 8, 16, 59]
    assert sorted(points["l0"]) == [5.0, 8.0, 15.5, 40.0]
    assert (points["n_seeds"] == 2).all()


def test_mmcs_curve_keeps_its_decline_and_is_compared_where_it_is():
    # MMCS peaks near the true number of active features and falls after it. A Pareto
    # frontier would drop the L0 16 and 32 points (a lower L0 has a better MMCS) and a
    # comparison at L0 32 would read 0.99; the curve keeps every point and reads 0.56 there.
    runs = _runs([("g", f"r{i}", lam, 0, l0, 0.1) for i, (lam, l0) in
                  enumerate([(4.0, 4.0), (2.0, 8.0), (1.0, 16.0), (0.5, 32.0)])])  # fmt: skip
    runs["mmcs"] = [0.99, 0.98, 0.86, 0.56]
    curve = frontier_of(frontier_points(runs, "mmcs"), "g")
    assert curve["l0"].tolist() == [4.0, 8.0, 16.0, 32.0]
    mean, _ = interpolate(curve, "mmcs", np.array([32.0]))
    assert mean[0] == pytest.approx(0.56)
    # FVU is bought with L0: its frontier still drops dominated points.
    runs["fvu"] = [0.3, 0.2, 0.25, 0.1]
    assert frontier_of(frontier_points(runs, "fvu"), "g")["l0"].tolist() == [4.0, 8.0, 32.0]
