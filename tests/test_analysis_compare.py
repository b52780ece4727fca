"""Comparisons: log-L0 interpolation only inside the overlap, verdicts, L0 bands."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import logl0
from analysis.compare import band_verdicts, compare_pair, interpolate, overlap
from analysis.frontier import frontier_points
from analysis.matched import match_on_grid


def _front(l0, y, std=None):
    return pd.DataFrame(
        {"l0": l0, "fvu": y, "fvu_std": std if std is not None else [0.0] * len(l0)}
    )


def test_interpolation_is_linear_in_log_l0_and_nan_outside():
    f = _front([10.0, 1000.0], [0.4, 0.2])
    mean, _ = interpolate(f, "fvu", np.array([1.0, 10.0, 100.0, 1000.0, 5000.0]))
    assert np.isnan(mean[0]) and np.isnan(mean[4])  # never extrapolated
    assert mean[1:4] == pytest.approx([0.4, 0.3, 0.2])  # 100 is halfway in log L0


def test_a_curve_is_read_between_its_points_and_says_how_far_it_bridged():
    l0, y = np.array([4.0, 16.0, 64.0]), np.array([0.3, 0.2, 0.1])
    at = np.array([2.0, 4.0, 8.0, 64.0, 64.0 * (1 + 1e-14), 65.0])
    got = logl0.interpolate(l0, y, at)
    assert got[1:5] == pytest.approx([0.3, 0.25, 0.1, 0.1])
    assert np.isnan(got[0]) and np.isnan(got[5])  # never extrapolated
    assert logl0.gap_bridged(l0, 8.0) == pytest.approx(4.0)  # between 4 and 16
    assert logl0.gap_bridged(l0, 16.0) == 1.0  # measured
    assert math.isnan(logl0.gap_bridged(l0, 100.0))
    assert logl0.common_range([(1.0, 10.0), (5.0, 20.0), (2.0, 8.0)]) == (5.0, 8.0)
    assert logl0.common_range([(1.0, 2.0), (3.0, 4.0)]) is None


def test_a_frontier_and_a_seed_curve_read_at_one_l0_agree():
    # The descriptive frontier comparison and the paired seed comparison read curves the
    # same way: one seed per variant, so the frontier is the seed's own curve.
    rows = [("a", lam, 0, l0, fvu) for lam, l0, fvu in ((1.0, 2.0, 0.5), (2.0, 20.0, 0.2))]
    rows += [("b", lam, 0, l0, fvu) for lam, l0, fvu in ((1.0, 3.0, 0.4), (2.0, 30.0, 0.1))]
    df = pd.DataFrame(rows, columns=["variant_label", "penalty.coefficient", "seed", "l0", "fvu"])
    df = df.assign(status="done", run_id=[f"r{i}" for i in range(len(df))])
    matched = match_on_grid(df, "fvu", "a", "b")
    pc = compare_pair(frontier_points(df, "fvu"), "fvu", "a", "b", n_points=len(matched))
    assert [m.l0 for m in matched] == pytest.approx(list(pc.table["l0"]))
    assert [m.a[0] for m in matched] == pytest.approx(list(pc.table["a"]))
    assert [m.b[0] for m in matched] == pytest.approx(list(pc.table["b"]))


def test_overlap_and_empty_overlap():
    assert overlap(_front([5.0, 50.0], [0, 0]), _front([20.0, 80.0], [0, 0])) == (20.0, 50.0)
    assert overlap(_front([5.0, 10.0], [0, 0]), _front([20.0, 80.0], [0, 0])) is None


def _points(rows):
    """rows: (variant, lambda, seed, l0, fvu)."""
    df = pd.DataFrame(rows, columns=["variant_label", "penalty.coefficient", "seed", "l0", "fvu"])
    df["status"] = "done"
    df["run_id"] = [f"r{i}" for i in range(len(df))]
    return frontier_points(df, "fvu")


def test_compare_only_inside_overlap():
    pts = _points(
        [
            ("a", 1.0, 0, 2.0, 0.50),
            ("a", 0.1, 0, 50.0, 0.10),
            ("b", 1.0, 0, 10.0, 0.30),
            ("b", 0.1, 0, 200.0, 0.05),
        ]
    )
    c = compare_pair(pts, "fvu", "a", "b", n_points=5)
    assert c.overlap == (10.0, 50.0)
    assert c.table["l0"].min() == pytest.approx(10.0)
    assert c.table["l0"].max() == pytest.approx(50.0)
    assert c.table[["a", "b"]].notna().all().all()


def test_empty_overlap_is_reported_not_invented():
    pts = _points([("a", 1.0, 0, 2.0, 0.5), ("a", 0.1, 0, 5.0, 0.4), ("b", 1.0, 0, 20.0, 0.1)])
    c = compare_pair(pts, "fvu", "a", "b")
    assert c.overlap is None
    assert c.verdict == "no overlap"
    assert c.table.empty
    assert "no common L0 range" in c.sentence()


def test_verdicts_with_seed_spread():
    rows = []
    for lam, l0 in ((1.0, 4.0), (0.1, 40.0)):
        for seed, noise in ((0, -0.01), (1, 0.01)):
            rows.append(("a", lam, seed, l0, 0.3 / np.sqrt(l0) + noise))
            rows.append(("b", lam, seed, l0, 0.2 / np.sqrt(l0) + noise))  # clearly better
            rows.append(("c", lam, seed, l0, 0.3 / np.sqrt(l0) + 2 * noise))  # a, noisier
    pts = _points(rows)
    ab = compare_pair(pts, "fvu", "a", "b")
    assert ab.verdict == "b dominates"
    assert (ab.table["diff"] < 0).all()
    assert (ab.table["spread"] > 0).all()
    assert ab.b_dominated == 0.0 and ab.a_dominated == 1.0
    ac = compare_pair(pts, "fvu", "a", "c")
    assert ac.verdict == "tie within spread"


def test_crossing_frontiers():
    pts = _points(
        [
            ("a", 1.0, 0, 4.0, 0.30),
            ("a", 0.1, 0, 40.0, 0.10),
            ("b", 1.0, 0, 4.0, 0.20),
            ("b", 0.1, 0, 40.0, 0.15),
        ]
    )
    c = compare_pair(pts, "fvu", "a", "b")
    assert c.verdict == "cross"
    assert set(c.table["better"]) >= {"a", "b"}


def test_band_verdicts_name_the_best_variant_per_band():
    pts = _points(
        [
            ("a", 1.0, 0, 1.0, 0.30),
            ("a", 0.1, 0, 100.0, 0.10),
            ("b", 1.0, 0, 1.0, 0.20),  # b better at low L0
            ("b", 0.1, 0, 100.0, 0.15),  # a better at high L0
        ]
    )
    bands = band_verdicts(pts, "fvu", n_bands=2, points_per_band=3)
    assert bands["best"].tolist() == ["b", "a"]
    assert (bands["margin"] > 0).all()


def test_band_covered_by_one_variant_only():
    pts = _points([("a", 1.0, 0, 1.0, 0.3), ("a", 0.1, 0, 2.0, 0.2), ("b", 1.0, 0, 50.0, 0.1),
                   ("b", 0.1, 0, 100.0, 0.05)])  # fmt: skip
    bands = band_verdicts(pts, "fvu", n_bands=2)
    assert all(v.startswith("only") for v in bands["verdict"])
