"""Variants compared at matched L0, seed by seed: the log ratio ln(b/a) per matched L0 with
its paired CI and verdict (`analysis.paired`, `analysis.verdicts`), and a one-line summary
over the declared L0 band.

Where the comparisons happen:
- a target-L0 sweep (runs with `l0_targets`): at each target, each variant's runs at the
  lambda whose seed-mean L0 lies within the tolerance of the target (the closest such
  lambda); each seed's value is read at the target on that seed's own curve (its own runs
  at every lambda, linear in log L0) where its runs bracket the target, else taken at the
  run's own L0, not moved, and the note states the L0 offset;
- any other sweep: at a few log-spaced L0 values inside the range both variants cover, each
  seed's own (L0, metric) curve interpolated linearly in log L0, never outside that seed's
  measured range; the L0 gap bridged by the interpolation is reported beside each value.
Nothing is moved along a slope estimated from other points: every value is a seed's own
measurement or an interpolation between two of them (so a fraction stays within [0, 1]),
and the seed-to-seed spread of those values is what the CI covers.

Only the sparse regime counts, judged on each run's achieved L0: a run with L0 above
`max_l0_fraction` x d (d = activation dimension) reconstructs densely; the seed curves
leave it out, and a target whose hit has any seed's run above the limit is out of verdicts
(listed in `PairResult.excluded`), even when the target itself is at the limit.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.effects import fmt, l0_range
from analysis.frontier import finished
from analysis.logl0 import common_range, gap_bridged, interpolate, log_grid
from analysis.paired import PairedDiff, log_ratio, paired_diff
from analysis.variants import FRONTIER_AXIS, LABEL, SEED, frontier_axis, point_keys
from analysis.verdicts import Judged, Rules, adjust
from sae_sweep.config.validation import MAX_L0_FRACTION  # one limit: verdicts and launch checks
from sae_sweep.evaluation.catalogue import higher_is_better

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
    """How each value was read: achieved L0s and offsets (targets), interpolation gaps."""

    @property
    def seeds(self) -> list[int]:
        """The paired seeds: a seed one variant lacks (a failed job, say) is in neither."""
        return sorted(set(self.a) & set(self.b))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.seeds
        return np.array([self.a[x] for x in s]), np.array([self.b[x] for x in s])

    def diff(self) -> PairedDiff:
        return paired_diff(*self.arrays())


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
    A target at the limit stays; its runs are judged one by one (`match_at_targets`)."""
    d = run_dims(runs).max()
    return [t for t in targets if not np.isfinite(d) or t <= max_l0_fraction * d]


@dataclass
class _Point:
    """One lambda (or k) point of a variant: its runs, one per seed, and their seed means."""

    runs: pd.DataFrame
    l0: float
    value: float


@dataclass
class _Variant:
    """One variant's runs and its points (one per lambda or k), grouped once for all targets."""

    runs: pd.DataFrame
    metric: str
    points: list[_Point]
    per_seed: bool = False
    """Its target sweep placed each seed at its own lambda (`l0_lambda_per: seed`)."""


def _variant_points(runs: pd.DataFrame, variant: str, metric: str) -> _Variant:
    """Every point of `variant`; no points without an L0 axis."""
    r = runs[runs[LABEL] == variant]
    if r.empty or frontier_axis(r) is None:
        return _Variant(r, metric, [])
    points = [_point(g, metric) for _, g in r.groupby(point_keys(r), sort=False)]
    per_seed = "l0_lambda_per" in r and bool((r["l0_lambda_per"].astype(str) == "seed").all())
    return _Variant(r, metric, points, per_seed)


def _point(runs: pd.DataFrame, metric: str) -> _Point:
    return _Point(runs, float(runs["l0"].astype(float).mean()),
                  float(runs[metric].astype(float).mean()))  # fmt: skip


def _hit(variant: _Variant, target: float, tol: float) -> _Point | None:
    """The point that answers `target`: one lambda's (or k's) runs whose seed-mean L0 is
    within tol x target, the one with the most seeds, then the closest. Where the sweep placed
    each seed at its own lambda, each seed's own placement answers too (`_seeds_at`), and wins
    when it holds more seeds."""
    near = [(p, 0) for p in variant.points if abs(p.l0 - target) <= tol * target]
    if variant.per_seed and (own := _seeds_at(variant, target, tol)) is not None:
        near.append((own, 1))
    best = min(near, key=lambda c: (-_seeds_of(c[0].runs).nunique(), c[1], abs(c[0].l0 - target)),
               default=None)  # fmt: skip
    return None if best is None else best[0]


def _seeds_at(variant: _Variant, target: float, tol: float) -> _Point | None:
    """Each seed's run closest to `target` in L0, for the seeds that reached it: that run is
    within tol x target, or the seed has runs on either side of the target (its chain found
    no lambda that lands, as where L0 jumps, and its value is read between them, as any seed
    off its target is)."""
    r = variant.runs
    l0 = r["l0"].astype(float)
    seeds = _seeds_of(r)
    keep = []
    for _, idx in l0.groupby(seeds).groups.items():
        x = l0.loc[idx]
        closest = (x - target).abs().idxmin()
        if abs(x[closest] - target) <= tol * target or (x.min() <= target <= x.max()):
            keep.append(closest)
    return _point(r.loc[keep], variant.metric) if keep else None


def _seeds_of(g: pd.DataFrame) -> pd.Series:
    return (g[SEED] if SEED in g else pd.Series(0, index=g.index)).map(_seed_key)


def _at_target(
    hit: _Point, curves: dict[int, pd.DataFrame], metric: str, target: float
) -> dict[int, tuple[float, str, float]]:
    """Each seed of the hit at `target`: {seed: (value, how, L0 offset ratio)}, how being
    'measured' (its run is at the target), 'read' (on the seed's own sparse curve, where its
    runs bracket the target) or 'not moved' (the hit run's value at its own L0)."""
    out = {}
    for s, l0, v in zip(_seeds_of(hit.runs), hit.runs["l0"].astype(float),
                        hit.runs[metric].astype(float), strict=True):  # fmt: skip
        offset = math.exp(abs(math.log(l0 / target)))
        if offset - 1 < 1e-9:
            out[s] = (float(v), "measured", 1.0)
            continue
        c = curves.get(s)
        on_curve = math.nan
        if c is not None:
            on_curve = interpolate(c["l0"].to_numpy(float), c[metric].to_numpy(float), target)[0]
        if math.isfinite(on_curve):
            out[s] = (float(on_curve), "read", 1.0)
        else:
            out[s] = (float(v), "not moved", offset)
    return out


def _target_note(l0s: pd.Series, target: float, read: list[tuple[float, str, float]]) -> str:
    """The achieved L0s, and how the paired seeds' values were read at the target."""
    note = f"achieved L0 {fmt(l0s.min())}-{fmt(l0s.max())}"
    n_read = sum(how == "read" for _, how, _ in read)
    kept = [off for _, how, off in read if how == "not moved"]
    if n_read:
        note += f"; {n_read} of {len(read)} values read at L0 {fmt(target)} on the seed's curve"
    if kept:
        note += f"; {len(kept)} not moved (L0 offset up to {100 * (max(kept) - 1):.0f}%)"
    return note


def match_at_targets(
    runs: pd.DataFrame,
    metric: str,
    a: str,
    b: str,
    targets: list[float],
    tol: float,
    max_l0_fraction: float = MAX_L0_FRACTION,
) -> tuple[list[Matched], list[tuple[float, str]]]:
    """(the matched targets, (target, why) per target left out of verdicts for a dense run)."""
    runs = _columns_for(runs, metric)
    pa, pb = (_variant_points(runs, v, metric) for v in (a, b))
    sparse = runs[~dense(runs, max_l0_fraction)]
    ca, cb = _seed_curves(sparse, a, metric), _seed_curves(sparse, b, metric)
    limit = max_l0_fraction * run_dims(runs).max()
    out, excluded = [], []
    for t in targets:
        ha, hb = _hit(pa, t, tol), _hit(pb, t, tol)
        if ha is None or hb is None:
            continue
        hits = pd.concat([ha.runs, hb.runs])
        l0s = hits["l0"].astype(float)
        over = hits[dense(hits, max_l0_fraction)]
        if len(over):
            top = fmt(over["l0"].astype(float).max())
            why = (f"{len(over)} of its {len(hits)} runs have an achieved L0 above "
                   f"{max_l0_fraction:g} d = {fmt(limit)} (up to {top})")  # fmt: skip
            excluded.append((t, why))
            continue
        at_a, at_b = _at_target(ha, ca, metric, t), _at_target(hb, cb, metric, t)
        paired = set(at_a) & set(at_b)
        read = [x[s] for x in (at_a, at_b) for s in sorted(paired)]
        va = {s: x[0] for s, x in at_a.items()}
        vb = {s: x[0] for s, x in at_b.items()}
        note = _target_note(l0s, t, read)
        out.append(Matched(t, va, vb, note))
    return out, excluded


def _seed_curves(runs: pd.DataFrame, variant: str, metric: str) -> dict[int, pd.DataFrame]:
    """Each seed's runs of `variant` with a finite metric, sorted by L0, each L0 once."""
    r = runs[runs[LABEL] == variant]
    r = r[np.isfinite(pd.to_numeric(r[metric], errors="coerce"))] if metric in r else r.iloc[:0]
    return {
        s: g.assign(l0=g["l0"].astype(float)).sort_values("l0").drop_duplicates("l0")
        for s, g in r.groupby(_seeds_of(r))
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
    keep = [LABEL, SEED, "status", "l0", metric, "data.d", "d_in", "l0_lambda_per",
            *FRONTIER_AXIS]  # fmt: skip
    return runs[[c for c in dict.fromkeys(keep) if c in runs.columns]]


def matched_points(
    runs: pd.DataFrame,
    metric: str,
    a: str,
    b: str,
    max_l0_fraction: float = MAX_L0_FRACTION,
    targets: list[float] | None = None,
    tolerance: float = 0.1,
) -> tuple[list[Matched], list[tuple[float, str]]]:
    """b and a at matched L0 (targets when given, else an L0 grid), and the targets left
    out of verdicts."""
    runs = _columns_for(runs, metric)
    if targets:
        ts = sparse_targets(runs, targets, max_l0_fraction)
        done = with_metric(runs, metric)
        return match_at_targets(done, metric, a, b, ts, tolerance, max_l0_fraction)
    return match_on_grid(sparse_runs(runs, metric, max_l0_fraction), metric, a, b), []


def values_at(
    runs: pd.DataFrame,
    metric: str,
    variant: str,
    l0: float,
    max_l0_fraction: float = MAX_L0_FRACTION,
    targets: list[float] | None = None,
    tolerance: float = 0.1,
) -> dict[int, float]:
    """{seed: value} of one variant at one L0, read as the comparisons read it: at a target
    (`l0` one of `targets`) from the point that hit it, each seed read on its own curve where
    its runs bracket the target; else on each seed's own sparse curve (never outside its
    range). Empty when the variant has no value there, or its hit has a run in the dense
    regime (no verdict would use it)."""
    runs = _columns_for(runs, metric)
    done = with_metric(runs, metric)
    if targets and any(math.isclose(l0, t) for t in targets):
        hit = _hit(_variant_points(done, variant, metric), l0, tolerance)
        if hit is None or dense(hit.runs, max_l0_fraction).any():
            return {}
        curves = _seed_curves(done[~dense(done, max_l0_fraction)], variant, metric)
        return {s: v for s, (v, _, _) in _at_target(hit, curves, metric, l0).items()}
    curves = _seed_curves(sparse_runs(runs, metric, max_l0_fraction), variant, metric)
    read = {s: _interp(c, metric, l0)[0] for s, c in curves.items()}
    return {s: v for s, v in read.items() if math.isfinite(v)}


@dataclass
class PointResult:
    """One matched L0 of a pair: the values, the effect and its verdict."""

    l0: float
    a: float
    """Mean of a's paired seeds."""
    b: float
    diff: PairedDiff
    """b - a in the metric's units."""
    judged: Judged
    """ln(b / a) and its verdict."""
    note: str


ROW_COLUMNS = [
    "l0",
    "seeds",
    "a",
    "b",
    "diff",
    "ci_lo",
    "ci_hi",
    "effect_pct",
    "ci_lo_pct",
    "ci_hi_pct",
    "p",
    "p_adj",
    "p_margin",
    "p_margin_adj",
    "verdict",
    "note",
]
"""`PairResult.rows`: p and p_adj: the difference test; p_margin, p_margin_adj: equivalence
(or, one-sided, non-inferiority); effect_pct and its 95% CI: 100 (exp(ln(b/a)) - 1)."""


@dataclass
class PairResult:
    """Variant b against variant a on one metric, at matched L0."""

    metric: str
    a: str
    b: str
    points: list[PointResult]
    """Per matched L0 in the sparse regime: the primary result."""
    summary: Judged | None
    """The per-seed mean log ratio over the points inside the band; None: no point there."""
    band: tuple[float, float]
    """The declared L0 band of the summary."""
    margin: float
    one_sided: bool = False
    excluded: list[tuple[float, str]] = field(default_factory=list)
    """(target, why) per target left out of verdicts (a run in the dense regime)."""

    @property
    def rows(self) -> pd.DataFrame:
        """One row per matched L0 (columns `ROW_COLUMNS`; percentages are exp(x) - 1)."""
        rows = []
        for p in self.points:
            e = p.judged.effect
            lo, hi = e.ci if e.n >= 2 else (math.nan, math.nan)
            j = p.judged
            effect = e.pct() if e.n else math.nan
            rows.append(
                [p.l0, e.n, p.a, p.b, p.diff.mean, p.diff.lo, p.diff.hi, effect, lo, hi,
                 e.p_diff, j.p_diff_adj, j.p_margin, j.p_margin_adj, j.words(), p.note]
            )  # fmt: skip
        return pd.DataFrame(rows, columns=ROW_COLUMNS)

    @property
    def band_points(self) -> list[float]:
        lo, hi = self.band
        return [p.l0 for p in self.points if lo <= p.l0 <= hi]

    @property
    def l0_span(self) -> tuple[float, float] | None:
        """The matched L0s' range (None: none)."""
        ls = [p.l0 for p in self.points]
        return (min(ls), max(ls)) if ls else None

    def judged(self) -> list[Judged]:
        """The per-L0 tests, for a family's adjustment."""
        return [p.judged for p in self.points]

    @property
    def headline(self) -> str:
        """The summary verdict in words, or why there is none."""
        if not self.points:
            return "no matched L0 in the sparse regime: not compared"
        if self.summary is None:
            return f"no matched L0 in the band {l0_range(*self.band)}: no summary"
        return self.summary.words()


def _summary(points: list[Matched], margin: float, h: bool, one_sided: bool) -> Judged:
    """The per-seed mean log ratio over the given points (a seed averaged over the points it
    has), tested like one point."""
    per_seed: dict[int, list[float]] = {}
    for m in points:
        for s in m.seeds:
            if m.a[s] > 0 and m.b[s] > 0:
                per_seed.setdefault(s, []).append(math.log(m.b[s] / m.a[s]))
    r = np.array([np.mean(v) for v in per_seed.values()], dtype=float)
    return Judged(log_ratio(np.ones_like(r), np.exp(r), margin), h, one_sided)


def compare_matched(
    runs: pd.DataFrame,
    metric: str,
    a: str,
    b: str,
    max_l0_fraction: float = MAX_L0_FRACTION,
    targets: list[float] | None = None,
    tolerance: float = 0.1,
    rules: Rules | None = None,
    one_sided: bool = False,
    margin: float | None = None,
) -> PairResult:
    """b against a on `metric` at matched L0 (targets when given, else an L0 grid), the
    per-L0 verdicts adjusted within this pair (a caller adjusts a larger family again with
    `analysis.verdicts.adjust`).

    one_sided: the comparison asks "b no worse than a by more than the margin".
    margin: relative, overriding the rules' margin for the metric.
    """
    rules = rules or Rules()
    margin = rules.margin(metric) if margin is None else margin
    matched, excluded = matched_points(runs, metric, a, b, max_l0_fraction, targets, tolerance)
    h = higher_is_better(metric)
    points = []
    for m in matched:
        xa, xb = m.arrays()
        judged = Judged(log_ratio(xa, xb, margin), h, one_sided)
        mean_a = float(np.mean(xa)) if len(xa) else math.nan
        mean_b = float(np.mean(xb)) if len(xb) else math.nan
        note = m.note
        if judged.effect.dropped:
            note += f"; {judged.effect.dropped} seeds left out (a value <= 0: no log ratio)"
        points.append(PointResult(m.l0, mean_a, mean_b, m.diff(), judged, note))
    adjust([p.judged for p in points], rules.multiplicity)
    band = rules.band_range(run_dims(runs).max())
    inside = [m for m in matched if band[0] <= m.l0 <= band[1]]
    summary = _summary(inside, margin, h, one_sided) if inside else None
    return PairResult(metric, a, b, points, summary, band, margin, one_sided, excluded)


def compare_pairs(
    runs: pd.DataFrame,
    metric: str,
    order: list[str],
    max_l0_fraction: float = MAX_L0_FRACTION,
    rules: Rules | None = None,
) -> list[PairResult]:
    """Every pair of variants (in `order`) at matched L0, targets used when the sweep has them."""
    targets, tol = sweep_targets(runs)
    have = set(finished(runs)[LABEL]) if len(runs) else set()
    labels = [v for v in order if v in have]
    return [
        compare_matched(runs, metric, a, b, max_l0_fraction, targets, tol, rules)
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
    l0, ratio (exp of the mean per-seed log ratio), ci_lo, ci_hi (its 95% CI), seeds."""
    targets, tol = sweep_targets(runs)
    rows = []
    for v in order:
        if v == reference:
            continue
        matched, _ = matched_points(runs, metric, reference, v, max_l0_fraction, targets, tol)
        for m in matched:
            e = log_ratio(*m.arrays(), margin=0.05)
            if e.n == 0:
                continue
            hw = e.half_width if e.n >= 2 else math.nan
            rows.append({"variant": v, "l0": m.l0, "ratio": math.exp(e.mean),
                         "ci_lo": math.exp(e.mean - hw), "ci_hi": math.exp(e.mean + hw),
                         "seeds": e.n})  # fmt: skip
    return pd.DataFrame(rows, columns=["variant", "l0", "ratio", "ci_lo", "ci_hi", "seeds"])
