"""Paired seed statistics: the effect of b against a as a log ratio, its confidence
intervals, and the tests a verdict rests on.

Seeds are paired across variants: the same seed means the same SAE initialisation and the
same order of training batches, so most seed-to-seed noise cancels in the per-seed log ratio

    r_s = ln(metric_b(seed s) / metric_a(seed s))

With n paired seeds the effect is the mean of r_s, shown as a percentage change
exp(mean) - 1, with t intervals over the seeds (95% for the difference, 90% for the two
one-sided tests of equivalence). A log ratio is antisymmetric (a vs b is exactly minus b
vs a) and its percentage change is bounded below by -100%, which a relative difference
(b - a) / a is not. It needs positive values: a seed with a value <= 0 leaves the pairing
(and the count says so).

The tests, each from statsmodels or scipy:
- difference: the paired t test of mean r = 0 (`scipy.stats.ttest_1samp`);
- equivalence within a relative margin m: two one-sided tests of |mean r| < ln(1 + m)
  (`statsmodels.stats.weightstats.ttost_paired`; it passes exactly when the 90% CI lies
  inside the margin);
- non-inferiority ("b no worse than a by more than m"): the one of those two one-sided
  tests on the side where b is worse.
`analysis.verdicts` turns their (multiplicity-adjusted) p-values into the verdict words.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.weightstats import ttost_paired

CONFIDENCE = 0.95
"""The confidence of the difference's interval (and 1 - the tests' level)."""
ALPHA = 1 - CONFIDENCE
FLOAT_NOISE = 1e-12
"""A seed spread of log ratios below this is float noise: the seeds agree exactly."""


@dataclass(frozen=True)
class PairedDiff:
    """b - a over paired seeds, in the metric's own units (the tables' context column)."""

    n: int
    mean: float
    half_width: float
    """Half-width of the 95% t CI (NaN with one seed)."""

    @property
    def lo(self) -> float:
        return self.mean - self.half_width

    @property
    def hi(self) -> float:
        return self.mean + self.half_width


def _t_half_width(d: np.ndarray, confidence: float) -> float:
    n = len(d)
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))


def paired_diff(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE) -> PairedDiff:
    """The paired difference b - a; a, b: shape (n,), entry s = seed s of each variant.
    Pairs with a NaN or infinite value in either variant leave the pairing."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return PairedDiff(0, math.nan, math.nan)
    return PairedDiff(len(d), float(d.mean()), _t_half_width(d, confidence))


@dataclass(frozen=True)
class LogRatio:
    """ln(b / a) over paired seeds, with its intervals and the raw p-values of its tests."""

    n: int
    """Paired seeds (both values finite and positive)."""
    mean: float
    """Mean per-seed log ratio."""
    sd: float
    """Seed standard deviation of the log ratios (NaN with one seed)."""
    half_width: float
    """Half-width of the 95% t CI of the mean, in log units."""
    half_width_90: float
    """Half-width of the 90% t CI (the two one-sided tests' interval)."""
    p_diff: float
    """Two-sided paired t test of mean = 0."""
    p_below: float
    """One-sided test of mean > -margin (b not lower than a by more than the margin)."""
    p_above: float
    """One-sided test of mean < +margin (b not higher than a by more than the margin)."""
    margin: float
    """The relative margin m the one-sided tests used (0.05 = 5%)."""
    dropped: int = 0
    """Pairs left out for a value <= 0 (no log ratio)."""

    @property
    def p_equivalent(self) -> float:
        """TOST: both one-sided tests (the larger of their p-values)."""
        return max(self.p_below, self.p_above)

    def p_no_worse(self, higher_is_better: bool) -> float:
        """Non-inferiority of b: the one-sided test on the side where b is worse."""
        return self.p_below if higher_is_better else self.p_above

    @property
    def log_margin(self) -> float:
        return math.log1p(self.margin)

    def pct(self, x: float | None = None) -> float:
        """A log ratio (default: the mean) as a percentage change, 100 (exp(x) - 1)."""
        return 100 * math.expm1(self.mean if x is None else x)

    @property
    def ci(self) -> tuple[float, float]:
        """The 95% CI as percentage changes."""
        return self.pct(self.mean - self.half_width), self.pct(self.mean + self.half_width)

    @property
    def ci_90(self) -> tuple[float, float]:
        return self.pct(self.mean - self.half_width_90), self.pct(self.mean + self.half_width_90)

    @property
    def inside_margin(self) -> bool:
        """The 90% CI lies inside (-margin, +margin) on the log scale."""
        lm = self.log_margin
        return self.n >= 2 and abs(self.mean) + self.half_width_90 < lm


def log_ratio(a: np.ndarray, b: np.ndarray, margin: float) -> LogRatio:
    """ln(b / a) over paired seeds; a, b: shape (n,), entry s = seed s of each variant.
    margin: relative (0.05 = 5%), the bounds ln(1 +- ...) of the one-sided tests."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    finite = np.isfinite(a) & np.isfinite(b)
    positive = finite & (a > 0) & (b > 0)
    la, lb = np.log(a[positive]), np.log(b[positive])
    d = lb - la
    n = len(d)
    dropped = int((finite & ~positive).sum())
    nan = math.nan
    if n == 0:
        return LogRatio(0, nan, nan, nan, nan, nan, nan, nan, margin, dropped)
    mean = float(d.mean())
    if n == 1:
        return LogRatio(1, mean, nan, nan, nan, nan, nan, nan, margin, dropped)
    sd = float(d.std(ddof=1))
    lm = math.log1p(margin)
    if sd < FLOAT_NOISE:
        # Identical log ratios on every seed (up to the last bits of the arithmetic, which
        # differ between machines): the t statistics are infinite; the tests are decided by
        # where the mean lies (no formula of our own beyond that).
        sd = 0.0
        p_diff = 1.0 if mean == 0 else 0.0
        p_below = 0.0 if mean > -lm else 1.0
        p_above = 0.0 if mean < lm else 1.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p_diff = float(stats.ttest_1samp(d, 0.0).pvalue)
            _, (_, p_below, _), (_, p_above, _) = ttost_paired(lb, la, -lm, lm)
    hw95 = 0.0 if sd == 0 else _t_half_width(d, CONFIDENCE)
    hw90 = 0.0 if sd == 0 else _t_half_width(d, 0.90)
    return LogRatio(n, mean, sd, hw95, hw90,
                    p_diff, float(p_below), float(p_above), margin, dropped)  # fmt: skip
