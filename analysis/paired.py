"""Paired seed statistics: the difference between two variants with a t confidence interval.

Seeds are paired across variants: the same seed means the same SAE initialisation and the
same order of training batches, so most seed-to-seed noise cancels in the per-seed
difference d_s = metric_b(seed s) - metric_a(seed s). With n paired seeds,

    mean = (1/n) sum_s d_s,   CI = mean +- t_{0.975, n-1} * sd(d_s) / sqrt(n)

A verdict names a winner only when the CI excludes 0, and the winner is always the side
the mean difference favours (a CI that excludes 0 lies on the mean's side of it). With one
seed there is no interval and no verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import stdtrit  # the t quantile (a fifth of scipy.stats's import)

from analysis.effects import fmt

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedDiff:
    """b - a over paired seeds."""

    n: int
    """Paired seeds."""
    mean: float
    """Mean of the per-seed differences (b - a)."""
    half_width: float
    """Half-width of the CI (NaN with one seed)."""

    @property
    def lo(self) -> float:
        return self.mean - self.half_width

    @property
    def hi(self) -> float:
        return self.mean + self.half_width

    @property
    def excludes_zero(self) -> bool:
        return self.n >= 2 and math.isfinite(self.half_width) and (self.lo > 0 or self.hi < 0)


def paired_diff(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE) -> PairedDiff:
    """The paired difference b - a; a, b: shape (n,), entry s = seed s of each variant."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return PairedDiff(0, math.nan, math.nan)
    if n == 1:
        return PairedDiff(1, float(d[0]), math.nan)
    t = stdtrit(n - 1, 0.5 + confidence / 2)  # = scipy.stats.t.ppf, bit for bit
    return PairedDiff(n, float(d.mean()), float(t * d.std(ddof=1) / math.sqrt(n)))


def verdict(
    diff: PairedDiff, a: str, b: str, metric: str, higher_is_better: bool, unit: str = ""
) -> str:
    """The verdict in words: who is better (CI excludes 0), no difference detected, or no
    verdict with one seed. unit: of the difference ("%" for relative differences)."""
    if diff.n == 0:
        return "no paired seeds: no verdict"
    if diff.n == 1:
        return "one seed: no verdict"
    if not diff.excludes_zero:
        return f"no difference detected with {diff.n} seeds (CI ±{fmt(diff.half_width)}{unit})"
    winner = b if (diff.mean > 0) == higher_is_better else a
    word = "higher" if higher_is_better else "lower"
    return f"`{winner}` {word} {metric} (CI excludes 0)"


def winner(diff: PairedDiff, a: str, b: str, higher_is_better: bool) -> str | None:
    """The better variant when the CI excludes 0, else None."""
    if not diff.excludes_zero:
        return None
    return b if (diff.mean > 0) == higher_is_better else a
