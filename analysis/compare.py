"""Compare variants' frontiers at common L0 values, never outside the range both cover.

A frontier is read along log L0 as `analysis.logl0` reads every curve: linearly between its
points, only inside [min L0, max L0] of its frontier, NaN outside (never extrapolated). Two
variants are compared on a log-spaced grid of L0 inside the overlap of their ranges; an
empty overlap is reported as such. At each grid point, diff = metric(b) - metric(a) and
spread = sqrt(std_a^2 + std_b^2) (seed std, interpolated like the mean). One variant is
better at a point when it wins by more than `k` x spread; otherwise the point is a tie.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.effects import better_word, fmt
from analysis.frontier import frontier_of
from analysis.logl0 import common_range, log_grid
from analysis.logl0 import interpolate as interpolate_curve
from analysis.variants import LABEL, Variants, value_key
from sae_sweep.evaluation.catalogue import higher_is_better


def interpolate(front: pd.DataFrame, metric: str, l0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of a frontier at L0 values `l0`, linear in log L0; NaN outside its range.

    front: one variant's frontier points (columns l0, <metric>, <metric>_std), any order.
    """
    l0 = np.atleast_1d(np.asarray(l0, dtype=float))
    nan = np.full(l0.shape, np.nan)
    if front.empty:
        return nan, nan.copy()
    f = front.sort_values("l0", kind="stable").drop_duplicates("l0")
    x = f["l0"].to_numpy(dtype=float)
    mean = interpolate_curve(x, f[metric].to_numpy(dtype=float), l0)
    std = nan.copy()
    std_col = f"{metric}_std"
    if std_col in f:
        s = f[std_col].to_numpy(dtype=float)
        if not np.isnan(s).any():  # one seed somewhere: no spread to interpolate
            std = interpolate_curve(x, s, l0)
    return mean, std


def overlap(fa: pd.DataFrame, fb: pd.DataFrame) -> tuple[float, float] | None:
    """The L0 range both frontiers cover, or None when they share none."""
    if fa.empty or fb.empty:
        return None
    return common_range((f["l0"].min(), f["l0"].max()) for f in (fa, fb))


def _better(diff: np.ndarray, spread: np.ndarray, hib: bool, k: float) -> list[str]:
    """'a', 'b' or 'tie' per grid point (diff = b - a)."""
    gain_b = diff if hib else -diff
    thr = k * np.nan_to_num(spread, nan=0.0)
    return ["b" if g > t else "a" if -g > t else "tie" for g, t in zip(gain_b, thr, strict=True)]


def dominated_fraction(points_a: pd.DataFrame, points_b: pd.DataFrame, metric: str) -> float:
    """Fraction of b's points that some point of a Pareto-dominates (needs no interpolation)."""
    if points_b.empty:
        return float("nan")
    if points_a.empty:
        return 0.0
    sign = -1.0 if higher_is_better(metric) else 1.0
    xa, ya = points_a["l0"].to_numpy(float), sign * points_a[metric].to_numpy(float)
    n = 0
    for xb, yb in zip(points_b["l0"], sign * points_b[metric], strict=True):
        weak = (xa <= xb) & (ya <= yb)
        n += bool((weak & ((xa < xb) | (ya < yb))).any())
    return n / len(points_b)


@dataclass
class PairComparison:
    """Variant b against variant a on one metric."""

    metric: str
    a: str
    b: str
    overlap: tuple[float, float] | None
    """L0 range both frontiers cover; None: empty, nothing was compared."""
    table: pd.DataFrame
    """Per grid L0: l0, a, a_std, b, b_std, diff (b - a), spread, better ('a'|'b'|'tie')."""
    verdict: str
    """'a dominates', 'b dominates', 'cross', 'tie within spread' or 'no overlap'."""
    differing: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    """{knob: (value in a, value in b)}."""
    counted: list[str] = field(default_factory=list)
    """The differing knobs that count against like with like (`Variants.counted`)."""
    b_dominated: float = float("nan")
    """Fraction of b's frontier points that a point of a dominates (and vice versa below)."""
    a_dominated: float = float("nan")

    @property
    def like_with_like(self) -> bool:
        return len(self.counted) <= 1

    @property
    def mean_diff(self) -> float:
        return float(self.table["diff"].mean()) if len(self.table) else float("nan")

    @property
    def mean_spread(self) -> float:
        return float(self.table["spread"].mean()) if len(self.table) else float("nan")

    def sentence(self) -> str:
        """The verdict in words, with the size of the difference and its spread."""
        m = self.metric
        if self.overlap is None:
            s = f"no common L0 range: `{self.a}` and `{self.b}` cannot be compared on {m}"
            if self.b_dominated == 1.0:
                s += f" (but every frontier point of `{self.b}` is dominated by `{self.a}`)"
            elif self.a_dominated == 1.0:
                s += f" (but every frontier point of `{self.a}` is dominated by `{self.b}`)"
            return s + "."
        lo, hi = self.overlap
        n = len(self.table)
        wins = self.table["better"].value_counts()
        size = f"mean {m} diff (b - a) {fmt(self.mean_diff)} ± {fmt(self.mean_spread)}"
        where = f"L0 {fmt(lo)}-{fmt(hi)}, {n} points"
        if self.verdict == "a dominates":
            head = f"`{self.a}` better than `{self.b}` ({wins.get('a', 0)}/{n} points, no loss)"
        elif self.verdict == "b dominates":
            head = f"`{self.b}` better than `{self.a}` ({wins.get('b', 0)}/{n} points, no loss)"
        elif self.verdict == "cross":
            head = (
                f"frontiers cross: `{self.a}` better at {wins.get('a', 0)}/{n} points, "
                f"`{self.b}` at {wins.get('b', 0)}/{n}"
            )
        else:
            head = f"`{self.a}` and `{self.b}` tie within seed spread"
        return f"{head}; {size} ({where})."


def compare_pair(
    points: pd.DataFrame,
    metric: str,
    a: str,
    b: str,
    variants: Variants | None = None,
    n_points: int = 9,
    k: float = 1.0,
) -> PairComparison:
    """Compare variant b with variant a on `metric` (points: `frontier_points` output)."""
    fa, fb = frontier_of(points, a), frontier_of(points, b)
    ov = overlap(fa, fb)
    differing = variants.differing(a, b) if variants is not None else {}
    cols = ["l0", "a", "a_std", "b", "b_std", "diff", "spread", "better"]
    pc = PairComparison(metric, a, b, ov, pd.DataFrame(columns=cols), "no overlap", differing)
    pc.counted = variants.counted(a, b) if variants is not None else []
    pc.b_dominated = dominated_fraction(fa, fb, metric)
    pc.a_dominated = dominated_fraction(fb, fa, metric)
    if ov is None:
        return pc
    grid = log_grid(*ov, n_points)
    ma, sa = interpolate(fa, metric, grid)
    mb, sb = interpolate(fb, metric, grid)
    diff = mb - ma
    spread = np.sqrt(sa**2 + sb**2)
    better = _better(diff, spread, higher_is_better(metric), k)
    pc.table = pd.DataFrame(
        {"l0": grid, "a": ma, "a_std": sa, "b": mb, "b_std": sb}
        | {"diff": diff, "spread": spread, "better": better}
    )
    wins = set(better)
    if "a" in wins and "b" in wins:
        pc.verdict = "cross"
    elif "a" in wins:
        pc.verdict = "a dominates"
    elif "b" in wins:
        pc.verdict = "b dominates"
    else:
        pc.verdict = "tie within spread"
    return pc


def compare_all(
    points: pd.DataFrame, metric: str, variants: Variants, n_points: int = 9, k: float = 1.0
) -> list[PairComparison]:
    """Every pair of variants that has frontier points, in `variants.order`."""
    have = set(points[LABEL])
    labels = [v for v in variants.order if v in have]
    return [
        compare_pair(points, metric, a, b, variants, n_points, k)
        for a, b in itertools.combinations(labels, 2)
    ]


def pairs_table(comparisons: list[PairComparison]) -> pd.DataFrame:
    """One row per compared pair: the verdict, the size of the gap, the knobs that differ."""
    rows = []
    for c in comparisons:
        rows.append(
            {
                "a": c.a,
                "b": c.b,
                "L0 overlap": "none"
                if c.overlap is None
                else f"{fmt(c.overlap[0])}-{fmt(c.overlap[1])}",
                "verdict": c.verdict,
                "mean diff (b - a)": c.mean_diff,
                "spread": c.mean_spread,
                "knobs that differ": "; ".join(
                    f"{k}: {value_key(va)} vs {value_key(vb)}"
                    for k, (va, vb) in c.differing.items()
                )
                or "none",
                "like with like": "yes" if c.like_with_like else "NO: differ in more than one knob",
            }
        )
    return pd.DataFrame(rows)


def band_verdicts(
    points: pd.DataFrame, metric: str, n_bands: int = 3, points_per_band: int = 5, k: float = 1.0
) -> pd.DataFrame:
    """Which variant is best in each L0 band, by how much, with spread.

    The L0 range covered by any frontier is cut into `n_bands` bands of equal width in log
    L0. In each band, at `points_per_band` log-spaced L0 values, the variants whose frontier
    covers the value are ranked; the band's winner is the variant best at most of the
    values covered by two or more variants, its margin the mean gap to the next best there.
    """
    hib = higher_is_better(metric)
    labels = list(dict.fromkeys(points[LABEL])) if len(points) else []
    fronts = {v: frontier_of(points, v) for v in labels}
    fronts = {v: f for v, f in fronts.items() if not f.empty}
    cols = ["band", "covered by", "best", "runner-up", "best at", "margin", "spread", "verdict"]
    if not fronts:
        return pd.DataFrame(columns=cols)
    lo = min(f["l0"].min() for f in fronts.values())
    hi = max(f["l0"].max() for f in fronts.values())
    edges = log_grid(lo, hi, n_bands + 1) if lo < hi else np.array([lo, hi])
    interp = {}
    rows = []
    for b_lo, b_hi in zip(edges[:-1], edges[1:], strict=True):
        grid = log_grid(b_lo, b_hi, points_per_band)
        for v, f in fronts.items():
            interp[v] = interpolate(f, metric, grid)
        covering = [v for v in fronts if np.isfinite(interp[v][0]).any()]
        band = f"{fmt(b_lo)}-{fmt(b_hi)}"
        wins: dict[str, int] = {}
        gaps: dict[str, list[tuple[float, float, str]]] = {}
        n_cmp = 0
        for i in range(len(grid)):
            vals = [(v, interp[v][0][i], interp[v][1][i]) for v in fronts]
            vals = [t for t in vals if np.isfinite(t[1])]
            if len(vals) < 2:
                continue
            n_cmp += 1
            vals.sort(key=lambda t: -t[1] if hib else t[1])
            (v1, m1, s1), (v2, m2, s2) = vals[0], vals[1]
            wins[v1] = wins.get(v1, 0) + 1
            gap = (m1 - m2) if hib else (m2 - m1)  # > 0: how much better the best is
            rel = gap / abs(m2) if m2 != 0 else np.nan
            gaps.setdefault(v1, []).append((gap, float(np.sqrt(s1**2 + s2**2)), v2, rel))
        if n_cmp == 0:
            only = ", ".join(f"`{v}`" for v in covering)
            verdict = f"only {only} covers this band" if only else "no variant covers this band"
            rows.append({"band": band, "covered by": only or "none", "verdict": verdict})
            continue
        best = max(wins, key=lambda v: wins[v])
        g = gaps[best]
        margin = float(np.mean([t[0] for t in g]))
        spread = (
            float(np.nanmean([t[1] for t in g])) if any(np.isfinite(t[1]) for t in g) else np.nan
        )
        # Ties go to the first seen (a set's order changes from run to run with string hashing).
        runner = max(dict.fromkeys(t[2] for t in g), key=lambda v: sum(t[2] == v for t in g))
        sig = margin > k * (0.0 if not np.isfinite(spread) else spread)
        rels = [t[3] for t in g if np.isfinite(t[3])]
        rel = f", {100 * float(np.mean(rels)):.1f}%" if rels else ""
        verdict = (
            f"`{best}` best at {wins[best]}/{n_cmp} compared L0 values: {metric} "
            f"{better_word(metric)} than `{runner}` by {fmt(margin)} ± {fmt(spread)}"
            f" (seed std{rel})"
        )
        if not sig:
            verdict += " (within seed spread: a tie)"
        rows.append(
            {
                "band": band,
                "covered by": ", ".join(f"`{v}`" for v in covering),
                "best": best,
                "runner-up": runner,
                "best at": f"{wins[best]}/{n_cmp}",
                "margin": margin,
                "spread": spread,
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows, columns=cols)
