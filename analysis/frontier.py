"""Pareto frontiers of (L0, metric), one per variant, seeds aggregated.

Each (variant, lambda) point is the mean over its seeds of L0 and of the metric, with the
seed spread (sample std, min, max). A point is on its variant's frontier when no other
point of that variant has L0 <= its L0 and a metric at least as good, one of them strictly.
Identical points are both kept (neither dominates the other).

Only a metric that L0 buys (reconstruction: FVU, delta LM loss, ...) has such a frontier.
Another (MMCS, dead latents) can get worse as L0 grows: MMCS peaks near the true number of
active features. Its frontier would keep the best value of lower L0s and hide that decline,
so its variant's curve is every point, in L0 order (`Metric.frontier`).

Each metric's direction and frontier rule is the metric catalogue's
(`sae_sweep.evaluation.catalogue`); a column it does not name (a metric derived from the
runs) is lower-is-better with a frontier.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.variants import LABEL, frontier_axis, point_axis, point_keys
from sae_sweep.evaluation.catalogue import METRICS, higher_is_better, names


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that finished and can sit on a log-L0 axis (status done, finite L0 > 0)."""
    l0 = pd.to_numeric(runs["l0"], errors="coerce")
    ok = (runs["status"] == "done") & (l0 > 0) & np.isfinite(l0)
    return runs[ok]


def metrics_present(runs: pd.DataFrame) -> list[str]:
    """The metrics analysed by default (catalogue `compared`) that some finished run has, in
    the catalogue's order."""
    done = finished(runs)
    return [
        m
        for m in names(compared=True)
        if m in done.columns and np.isfinite(pd.to_numeric(done[m], errors="coerce")).any()
    ]


def pareto_mask(x: np.ndarray, y: np.ndarray, higher_is_better: bool = False) -> np.ndarray:
    """Boolean mask of the non-dominated points of (x, y); lower x is better.

    x, y: shape (n,). Ties: of points with equal x only the best y is kept, of points with
    equal y only the lowest x; exact duplicates are all kept.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    yy = -y if higher_is_better else y  # lower is better from here on
    order = np.lexsort((yy, x))  # by x, then best y first
    mask = np.zeros(len(x), dtype=bool)
    best = np.inf
    last = None
    for i in order:
        if yy[i] < best:
            mask[i] = True
            best = yy[i]
            last = (x[i], yy[i])
        elif last is not None and (x[i], yy[i]) == last:
            mask[i] = True
    return mask


def aggregate_seeds(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (variant, lambda) point, seeds aggregated.

    runs: rows with a `variant_label` column (see `assign_variants`); only finished runs
    with the metric are used. Columns: variant_label, lam, n_seeds, l0, l0_std, <metric>,
    <metric>_std (NaN for one seed), <metric>_min, <metric>_max, run_ids.
    """
    cols = [LABEL, "lam", "n_seeds", "l0", "l0_std", metric]
    cols += [f"{metric}_std", f"{metric}_min", f"{metric}_max", "run_ids"]
    if metric not in runs.columns:
        return pd.DataFrame(columns=cols)
    done = finished(runs)
    done = done[np.isfinite(pd.to_numeric(done[metric], errors="coerce"))].copy()
    if done.empty:
        return pd.DataFrame(columns=cols)
    axis = frontier_axis(done)
    # Without a lambda axis every run is its own point.
    done["_key"] = point_keys(done) if axis else done["run_id"].astype(str)
    done["_lam"] = np.nan
    for _, idx in done.groupby(LABEL, sort=False).groups.items():
        ax = point_axis(done.loc[idx])  # the knob each variant's points differ in
        if ax:
            done.loc[idx, "_lam"] = pd.to_numeric(done.loc[idx, ax], errors="coerce")
    done["l0"] = done["l0"].astype(float)
    done[metric] = done[metric].astype(float)
    g = done.groupby([LABEL, "_key"], sort=False)
    out = pd.DataFrame(
        {
            "lam": g["_lam"].first(),
            "n_seeds": g.size(),
            "l0": g["l0"].mean(),
            "l0_std": g["l0"].std(),
            metric: g[metric].mean(),
            f"{metric}_std": g[metric].std(),
            f"{metric}_min": g[metric].min(),
            f"{metric}_max": g[metric].max(),
            "run_ids": g["run_id"].agg(lambda s: ", ".join(map(str, s))),
        }
    ).reset_index()
    out = out.drop(columns="_key")
    return out.sort_values([LABEL, "l0"], kind="stable").reset_index(drop=True)[cols]


def frontier_points(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """`aggregate_seeds` plus a boolean `on_frontier` column (per variant): the points of the
    variant's curve. Every point for a metric without a frontier (`Metric.frontier`)."""
    agg = aggregate_seeds(runs, metric)
    m = METRICS.get(metric)
    if m is not None and not m.frontier:
        agg["on_frontier"] = True
        return agg
    agg["on_frontier"] = False
    for _, g in agg.groupby(LABEL, sort=False):
        mask = pareto_mask(g["l0"], g[metric], higher_is_better(metric))
        agg.loc[g.index, "on_frontier"] = mask
    return agg


def frontier_of(points: pd.DataFrame, label: str) -> pd.DataFrame:
    """One variant's frontier points, sorted by L0."""
    f = points[(points[LABEL] == label) & points["on_frontier"]]
    return f.sort_values("l0", kind="stable").reset_index(drop=True)
