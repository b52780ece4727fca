"""Variants compared at matched L0, seed by seed, with paired confidence intervals.

Where the comparisons happen:
- a target-L0 sweep (runs with `l0_targets`): at each target, each variant's runs at the
  lambda whose seed-mean L0 lies within the tolerance of the target (the closest such
  lambda), each seed's value moved to the target along the variant's local slope (below);
  the spread of the achieved L0s is reported;
- any other sweep: at a few log-spaced L0 values inside the range both variants cover, each
  seed's own (L0, metric) curve interpolated linearly in log L0, never outside that seed's
  measured range; the L0 gap bridged by the interpolation is reported beside each value.
Only the sparse regime counts: runs with L0 above `max_l0_fraction` x d (d = activation
dimension) reconstruct densely and never enter a comparison; in a target-L0 sweep, targets
above that limit are not compared.

The L0 correction at a target. Within a 10% tolerance two variants' runs can sit several
percent apart in L0, and where the metric is steep in L0 that offset alone moves it by a few
percent: the size of the differences some verdicts are about, and not covered by the seed
CI. So each seed's value v at its own L0 l is moved to the target t to first order,
v * (t / l)^s, with s the variant's local log-log slope at the hit: the three-point
estimate from its seed-mean points on either side (one side where it has only one; linear
in log L0 instead when a value is not positive). Every seed of every variant gets the same
treatment, and TopK's runs at k = t need none. The note says how large the L0 offsets were.

Per pair of variants (a, b) and metric this gives one row per matched L0 (paired
difference b - a and its CI, see `analysis.paired`) and one headline: the per-seed
relative difference (b - a) / a averaged over the matched L0s, with its CI, and a verdict.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.effects import fmt
from analysis.frontier import finished
from analysis.logl0 import common_range, gap_bridged, interpolate, local_slope, log_grid
from analysis.paired import PairedDiff, paired_diff, verdict, winner
from analysis.variants import FRONTIER_AXIS, LABEL, SEED, frontier_axis, point_keys
from sae_sweep.evaluation.catalogue import higher_is_better

MAX_L0_FRACTION = 0.5
"""Default: verdicts cover L0 <= d/2."""
GRID_POINTS = 4
"""Matched L0 values per pair in a sweep without targets."""


def run_dims(runs: pd.DataFrame) -> pd.Series:
    """The activation dimension d of each run (`d_in` of its summary, else `data.d`)."""
    d = pd.Series(np.nan, index=runs.index)
    for col in ("data.d", "d_in"):
        if col in runs:
            v = pd.to_numeric(runs[col], errors="coerce")
            d = v.where(v.notna(), d)
    return d


def dense(runs: pd.DataFrame, max_l0_fraction: float = MAX_L0_FRACTION) -> pd.Series:
    """True for runs in the dense regime: L0 > max_l0_fraction x d (False when d is unknown)."""
    l0 = pd.to_numeric(runs["l0"], errors="coerce")
    return (l0 > max_l0_fraction * run_dims(runs)).fillna(False).astype(bool)


def sweep_targets(runs: pd.DataFrame) -> tuple[list[float], float]:
    """(the L0 targets the runs were swept for, their tolerance); ([], 0.1) without targets."""
    targets: set[float] = set()
    if "l0_targets" in runs:
        for v in runs["l0_targets"].dropna():
            targets |= {float(x) for x in (v if isinstance(v, tuple | list) else [v])}
    tol = 0.1
    if "l0_tolerance" in runs and runs["l0_tolerance"].notna().any():
        tol = float(pd.to_numeric(runs["l0_tolerance"], errors="coerce").max())
    return sorted(targets), tol


@dataclass
class Matched:
    """Both variants' per-seed values at one matched L0."""

    l0: float
    a: dict[int, float]
    """{seed: metric} of variant a."""
    b: dict[int, float]
    note: str
    """Achieved-L0 spread (targets) or the interpolation gap (no targets)."""
    l0_a: float = math.nan
    l0_b: float = math.nan

    def diff(self) -> PairedDiff:
        seeds = sorted(set(self.a) & set(self.b))
        return paired_diff(
            np.array([self.a[s] for s in seeds]), np.array([self.b[s] for s in seeds])
        )


def _seed_key(v) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def with_metric(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Finished runs that have a finite value of `metric`."""
    done = finished(runs)
    if metric not in done:
        return done.iloc[:0]
    return done[np.isfinite(pd.to_numeric(done[metric], errors="coerce"))]


def sparse_runs(runs: pd.DataFrame, metric: str, max_l0_fraction: float) -> pd.DataFrame:
    done = with_metric(runs, metric)
    return done[~dense(done, max_l0_fraction)]


def sparse_targets(runs: pd.DataFrame, targets: list[float], max_l0_fraction: float) -> list[float]:
    """The targets in the sparse regime (<= max_l0_fraction x the largest d of the runs).
    A target is judged as a whole: its runs within the tolerance count even when some lie
    just above the limit (a target at d/2)."""
    d = run_dims(runs).max()
    return [t for t in targets if not np.isfinite(d) or t <= max_l0_fraction * d]


@dataclass
class _Point:
    """One lambda (or k) point of a variant: its runs, one per seed, and their seed means."""

    runs: pd.DataFrame
    l0: float
    value: float


def _variant_points(runs: pd.DataFrame, variant: str, metric: str) -> list[_Point]:
    """Every point of `variant`, grouped once for all targets; empty without an L0 axis."""
    r = runs[runs[LABEL] == variant]
    if r.empty or frontier_axis(r) is None:
        return []
    return [
        _Point(g, float(g["l0"].astype(float).mean()), float(g[metric].astype(float).mean()))
        for _, g in r.groupby(point_keys(r), sort=False)
    ]


def _hit(points: list[_Point], target: float, tol: float) -> _Point | None:
    """The point whose seed-mean L0 is closest to `target`, if within tol x target."""
    near = [p for p in points if abs(p.l0 - target) <= tol * target]
    return min(near, key=lambda p: abs(p.l0 - target), default=None)


def _at_target_l0(
    hit: _Point, points: list[_Point], metric: str, target: float
) -> tuple[dict[int, float], str]:
    """Each seed's value moved from its own L0 to `target` along the local slope (module
    docstring), and a note of the largest L0 offset corrected."""
    values = _values(hit.runs, metric)
    seeds_l0 = dict(zip(values, hit.runs["l0"].astype(float), strict=True))
    offsets = [abs(math.log(target / x)) for x in seeds_l0.values()]
    if not offsets or max(offsets) < 1e-9:
        return values, ""
    means = [(p.l0, p.value) for p in points]
    log_metric = all(v > 0 for v in values.values()) and all(v > 0 for _, v in means)
    slope = local_slope(means, (hit.l0, hit.value), log_metric)
    if slope is None:
        return values, "not corrected to the target (no other point)"
    for s, x in seeds_l0.items():
        dx = math.log(target / x)
        values[s] = values[s] * math.exp(slope * dx) if log_metric else values[s] + slope * dx
    return values, f"offsets up to {100 * (math.exp(max(offsets)) - 1):.0f}%"


def _values(g: pd.DataFrame, metric: str) -> dict[int, float]:
    seeds = g[SEED] if SEED in g else pd.Series(0, index=g.index)
    return {_seed_key(s): float(v) for s, v in zip(seeds, g[metric].astype(float), strict=True)}


def match_at_targets(runs, metric, a, b, targets, tol) -> list[Matched]:
    pa, pb = (_variant_points(runs, v, metric) for v in (a, b))
    out = []
    for t in targets:
        ha, hb = _hit(pa, t, tol), _hit(pb, t, tol)
        if ha is None or hb is None:
            continue
        va, note_a = _at_target_l0(ha, pa, metric, t)
        vb, note_b = _at_target_l0(hb, pb, metric, t)
        l0s = np.concatenate([ha.runs["l0"].astype(float), hb.runs["l0"].astype(float)])
        note = f"achieved L0 {fmt(l0s.min())}-{fmt(l0s.max())}"
        if note_a or note_b:
            parts = [f"{n}: {x}" for n, x in (("a", note_a), ("b", note_b)) if x]
            note += f", moved to L0 {fmt(t)} along the local slope ({'; '.join(parts)})"
        out.append(Matched(t, va, vb, note, ha.l0, hb.l0))
    return out


def _seed_curves(runs: pd.DataFrame, variant: str, metric: str) -> dict[int, pd.DataFrame]:
    r = runs[runs[LABEL] == variant]
    seeds = r[SEED] if SEED in r else pd.Series(0, index=r.index)
    return {
        _seed_key(s): g.assign(l0=g["l0"].astype(float)).sort_values("l0")
        for s, g in r.groupby(seeds.map(_seed_key))
    }


def _interp(curve: pd.DataFrame, metric: str, l0: float) -> tuple[float, float]:
    """(value, L0 gap ratio bridged) of one seed's curve at l0; NaN outside its range."""
    x = curve["l0"].to_numpy(float)
    value = interpolate(x, curve[metric].to_numpy(float), l0)[0]
    return float(value), gap_bridged(x, l0)


def _span(curves: list[pd.DataFrame]) -> tuple[float, float]:
    """The L0 range some curve of `curves` covers."""
    return min(c["l0"].min() for c in curves), max(c["l0"].max() for c in curves)


def match_on_grid(runs, metric, a, b, n_points=GRID_POINTS) -> list[Matched]:
    ca, cb = _seed_curves(runs, a, metric), _seed_curves(runs, b, metric)
    if not ca or not cb:
        return []
    # The L0 range every seed of both variants covers; when there is none (seeds end at
    # different L0s), the range both cover with some seed, each seed paired only inside
    # its own range (the number of paired seeds is reported).
    both = common_range(_span([c]) for c in (*ca.values(), *cb.values()))
    if both is None:
        both = common_range(_span(list(v.values())) for v in (ca, cb))
    if both is None:
        return []
    grid = log_grid(*both, n_points)
    out = []
    for l0 in grid:
        va, vb, gaps = {}, {}, []
        for curves, vals in ((ca, va), (cb, vb)):
            for s, c in curves.items():
                v, gap = _interp(c, metric, float(l0))
                if math.isfinite(v):
                    vals[s] = v
                    gaps.append(gap)
        note = (
            f"interpolated across L0 gaps up to {max(gaps):.2g}x"
            if gaps and max(gaps) > 1
            else "measured"
        )
        out.append(Matched(float(l0), va, vb, note))
    return out


def _columns_for(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Only the columns a comparison reads: a sweep's runs table has a hundred or more, and
    every slice of it would copy them all."""
    keep = [LABEL, SEED, "status", "l0", metric, "data.d", "d_in", *FRONTIER_AXIS]
    return runs[[c for c in dict.fromkeys(keep) if c in runs.columns]]


@dataclass
class PairResult:
    """Variant b against variant a on one metric, at matched L0."""

    metric: str
    a: str
    b: str
    rows: pd.DataFrame
    """Per matched L0: l0, seeds, a, b, diff, ci_lo, ci_hi, rel_diff_pct, verdict, note."""
    pooled: PairedDiff
    """Per-seed relative difference (b - a) / a in %, averaged over the matched L0s."""
    band: tuple[float, float] | None
    headline: str
    differing: list[str] = field(default_factory=list)


def _pooled(matched: list[Matched]) -> PairedDiff:
    per_seed: dict[int, list[float]] = {}
    for m in matched:
        for s in set(m.a) & set(m.b):
            if m.a[s] != 0:
                per_seed.setdefault(s, []).append(100 * (m.b[s] - m.a[s]) / abs(m.a[s]))
    rel = np.array([np.mean(v) for v in per_seed.values()], dtype=float)
    return paired_diff(np.zeros_like(rel), rel)


def compare_matched(
    runs: pd.DataFrame,
    metric: str,
    a: str,
    b: str,
    max_l0_fraction: float = MAX_L0_FRACTION,
    targets: list[float] | None = None,
    tolerance: float = 0.1,
) -> PairResult:
    """b against a on `metric` at matched L0 (targets when given, else an L0 grid)."""
    runs = _columns_for(runs, metric)
    if targets:
        ts = sparse_targets(runs, targets, max_l0_fraction)
        matched = match_at_targets(with_metric(runs, metric), metric, a, b, ts, tolerance)
    else:
        matched = match_on_grid(sparse_runs(runs, metric, max_l0_fraction), metric, a, b)
    h = higher_is_better(metric)
    rows = []
    for m in matched:
        d = m.diff()
        # the means of the paired seeds only, so that diff = b - a (a seed one variant
        # lacks, a failed job say, is in neither)
        paired = sorted(set(m.a) & set(m.b))
        a_mean = float(np.mean([m.a[s] for s in paired])) if paired else math.nan
        b_mean = float(np.mean([m.b[s] for s in paired])) if paired else math.nan
        rows.append(
            {
                "l0": m.l0,
                "seeds": d.n,
                "a": a_mean,
                "b": b_mean,
                "diff": d.mean,
                "ci_lo": d.lo,
                "ci_hi": d.hi,
                "rel_diff_pct": 100 * d.mean / abs(a_mean) if a_mean else math.nan,
                "verdict": verdict(d, a, b, metric, h),
                "note": m.note,
            }
        )
    cols = ["l0", "seeds", "a", "b", "diff", "ci_lo", "ci_hi", "rel_diff_pct", "verdict", "note"]
    table = pd.DataFrame(rows, columns=cols)
    pooled = _pooled(matched)
    band = (min(m.l0 for m in matched), max(m.l0 for m in matched)) if matched else None
    return PairResult(
        metric, a, b, table, pooled, band, _headline(matched, pooled, a, b, metric, h)
    )


def _headline(matched, pooled, a, b, metric, higher_is_better) -> str:
    if not matched:
        return "no matched L0 in the sparse regime: not compared"
    winners = {}
    for m in matched:
        w = winner(m.diff(), a, b, higher_is_better)
        if w:
            winners.setdefault(w, []).append(m.l0)
    if len(winners) == 2:
        where = "; ".join(
            f"`{w}` at L0 {', '.join(fmt(x) for x in ls)}" for w, ls in winners.items()
        )
        return f"frontiers cross: {where} (CI excludes 0 at each)"
    return verdict(pooled, a, b, metric, higher_is_better, unit="%")


def compare_pairs(
    runs: pd.DataFrame,
    metric: str,
    order: list[str],
    max_l0_fraction: float = MAX_L0_FRACTION,
) -> list[PairResult]:
    """Every pair of variants (in `order`) at matched L0, targets used when the sweep has them."""
    targets, tol = sweep_targets(runs)
    have = set(finished(runs)[LABEL]) if len(runs) else set()
    labels = [v for v in order if v in have]
    return [
        compare_matched(runs, metric, a, b, max_l0_fraction, targets, tol)
        for a, b in itertools.combinations(labels, 2)
    ]


def relative_to(
    runs: pd.DataFrame,
    metric: str,
    reference: str,
    order: list[str],
    max_l0_fraction: float = MAX_L0_FRACTION,
) -> pd.DataFrame:
    """Each variant's metric / the reference's, at matched L0, seed-paired: columns variant,
    l0, ratio (mean of per-seed ratios), ci_lo, ci_hi, seeds."""
    targets, tol = sweep_targets(runs)
    runs = _columns_for(runs, metric)
    targets = sparse_targets(runs, targets, max_l0_fraction)
    sparse = sparse_runs(runs, metric, max_l0_fraction)
    rows = []
    for v in order:
        if v == reference:
            continue
        if targets:
            matched = match_at_targets(
                with_metric(runs, metric), metric, reference, v, targets, tol
            )
        else:
            matched = match_on_grid(sparse, metric, reference, v)
        for m in matched:
            seeds = sorted(set(m.a) & set(m.b))
            ratios = np.array([m.b[s] / m.a[s] for s in seeds if m.a[s] != 0])
            d = paired_diff(np.ones_like(ratios), ratios)
            rows.append(
                {
                    "variant": v,
                    "l0": m.l0,
                    "ratio": 1 + d.mean,
                    "ci_lo": 1 + d.lo,
                    "ci_hi": 1 + d.hi,
                    "seeds": d.n,
                }
            )
    return pd.DataFrame(rows, columns=["variant", "l0", "ratio", "ci_lo", "ci_hi", "seeds"])
