"""Comparisons: log-L0 interpolation only inside the overlap, verdicts, L0 bands."""

import numpy as np
import pandas as pd
import pytest

from analysis.compare import band_verdicts, compare_pair, interpolate, overlap
from analysis.frontier import frontier_points


def _front(l0, y, std=None):
    return pd.DataFrame(
        {"l0": l0, "fvu": y, "fvu_std": std if std is not None else [0.0] * len(l0)}
    )


def test_interpolation_is_linear_in_log_l0_and_nan_outside():
    f = _front([10.0, 1000.0], [0.4, 0.2])
    mean, _ = interpolate(f, "fvu", np.array([1.0, 10.0, 100.0, 1000.0, 5000.0]))
    assert np.isnan(mean[0]) and np.isnan(mean[4])  # never extrapolated
    assert mean[1:4] == pytest.approx([0.4, 0.3, 0.2])  # 100 is halfway in log L0


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
