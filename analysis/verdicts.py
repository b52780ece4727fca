"""The rules of a verdict: margins per metric, the L0 band of the one-line summaries, the
multiplicity adjustment, and the words.

Every verdict is exactly one of
- "b better" / "a better": the paired t test of the log ratio rejects 0 (after adjustment),
  on that side;
- "equivalent within ±m": both one-sided tests reject a difference beyond the margin m
  (the 90% CI lies inside ±m), after adjustment;
- "b no worse than a by more than m" (a comparison declared one-sided, non-inferiority):
  the one-sided test on the side where b is worse rejects (the one-sided 95% bound is
  inside the margin);
- "inconclusive (...)": none of these; it says whether the CI is wider than the margin or
  only reaches past it, or whether only the unadjusted test passed, then with the interval
  the adjusted test reads (`Judged.adjusted_ci`: it excludes 0, or lies inside the margin,
  exactly when the adjusted p-value is below 0.05);
and, without two paired seeds, "no verdict". A verdict word never contradicts its interval:
an adjusted p-value is never below the raw one, so "b better" implies a 95% CI that excludes
0 on b's side, and "equivalent within ±m" a 90% CI inside ±m. An equivalence verdict takes
precedence over a difference (a difference smaller than the margin is not one the margin
counts); in a one-sided comparison "b better" comes first, then "no worse".

Multiplicity: the p-values of one family (a report's per-L0 verdicts, or one claim's) are
adjusted together, each kind of test (difference; equivalence or non-inferiority) on its
own, with Holm's step-down method (default) or Benjamini-Hochberg
(`statsmodels.stats.multitest.multipletests`). The one-line summaries over the band form a
family of their own.

Planning: `plan_seeds` says, from the observed seed spread of the log ratios, the smallest
effect the seeds could detect (80% power, two-sided 5%) and the paired seeds needed to
settle the margin (`statsmodels.stats.power.TTestPower`).
"""

from __future__ import annotations

import contextlib
import gc
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from statsmodels.stats import multitest
from statsmodels.stats.power import TTestPower

from analysis.paired import ALPHA, LogRatio

DEFAULT_MARGINS: dict[str, float] = {
    "fvu": 0.05,
    "mse": 0.05,
    "delta_lm_loss": 0.05,
    "kl_div": 0.05,
    "loss_recovered_mean": 0.02,
    "loss_recovered_zero": 0.02,
    "mmcs": 0.02,
    "mcc": 0.02,
    "shrinkage_gap": 0.25,
}
"""Relative margins (0.05 = 5%): a difference smaller than this is one the comparison does
not care about (docs/analysis.md, "Margins", says why each is this size)."""
DEFAULT_MARGIN = 0.05
"""The margin of a metric `DEFAULT_MARGINS` does not name."""
DEFAULT_BAND = ("3", "d/4")
"""The L0 band of the one-line summaries: L0 in [3, d/4]."""
METHODS = {"holm": "holm", "bh": "fdr_bh"}
"""`analysis.multiplicity` -> the statsmodels method name."""
POWER = 0.8


def parse_end(end: float | str, d: float | None) -> float:
    """One end of a band: a number (an L0), or 'd/K' or 'F d' (a fraction of d)."""
    if isinstance(end, int | float):
        return float(end)
    s = str(end).replace(" ", "")
    try:
        return float(s)
    except ValueError:
        pass
    if s.startswith("d/") or s.endswith("d"):
        if d is None or not math.isfinite(d):
            return math.inf  # d unknown: the band is open above
        try:
            return d / float(s[2:]) if s.startswith("d/") else float(s[:-1] or 1) * d
        except ValueError:
            pass
    raise ValueError(
        f"band end {end!r} is not an L0 or a fraction of d: write e.g. 3, 16, d/4 or 0.25d"
    )


@dataclass(frozen=True)
class Rules:
    """The analysis options a verdict depends on, declared before the sweep runs."""

    margins: Mapping[str, float] = field(default_factory=dict)
    """Per metric, relative; overrides `DEFAULT_MARGINS`."""
    band: tuple[float | str, float | str] = DEFAULT_BAND
    multiplicity: str = "holm"

    def __post_init__(self):
        if self.multiplicity not in METHODS:
            raise ValueError(
                f"multiplicity {self.multiplicity!r} is not one of {sorted(METHODS)} "
                "(holm: family-wise error; bh: false discovery rate)"
            )
        for m, x in self.margins.items():
            if not (isinstance(x, int | float) and 0 < x < 1):
                raise ValueError(f"margin of {m} = {x!r}: give a relative margin in (0, 1)")
        if len(self.band) != 2:
            raise ValueError(f"band {self.band!r}: give two ends, e.g. [3, d/4]")
        parse_end(self.band[0], 64.0), parse_end(self.band[1], 64.0)  # noqa: B018 - validates

    def margin(self, metric: str) -> float:
        return float(self.margins.get(metric, DEFAULT_MARGINS.get(metric, DEFAULT_MARGIN)))

    def band_range(self, d: float | None) -> tuple[float, float]:
        return parse_end(self.band[0], d), parse_end(self.band[1], d)

    def band_text(self, d: float | None) -> str:
        lo, hi = self.band_range(d)
        return f"[{lo:g}, {hi:g}]" if math.isfinite(hi) else f"[{lo:g}, {self.band[1]}]"


def parse_margins(items: Iterable[str]) -> dict[str, float]:
    """'fvu=0.05' or 'fvu=5%' items (the CLI's --margin) -> {metric: 0.05}."""
    out = {}
    for item in items:
        metric, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--margin {item!r}: write METRIC=VALUE, e.g. fvu=0.05 or fvu=5%")
        v = value.strip()
        out[metric.strip()] = float(v[:-1]) / 100 if v.endswith("%") else float(v)
    return out


def pct_text(m: float) -> str:
    """A relative margin as '5%'."""
    return f"{100 * m:g}%"


@dataclass
class Judged:
    """One tested effect (a matched L0, or a band summary) and its verdict after adjustment."""

    effect: LogRatio
    higher_is_better: bool
    one_sided: bool = False
    """Declared one-sided: b no worse than a by more than the margin (non-inferiority)."""
    p_diff_adj: float = math.nan
    p_margin_adj: float = math.nan
    method: str = "Holm"
    """The adjustment the adjusted p-values went through (named by an inconclusive verdict)."""

    def __post_init__(self):
        if math.isnan(self.p_diff_adj):
            self.p_diff_adj, self.p_margin_adj = self.p_diff, self.p_margin

    @property
    def testable(self) -> bool:
        return self.effect.n >= 2

    @property
    def p_diff(self) -> float:
        return self.effect.p_diff

    @property
    def p_margin(self) -> float:
        """Equivalence (TOST) or, one-sided, non-inferiority."""
        e = self.effect
        return e.p_no_worse(self.higher_is_better) if self.one_sided else e.p_equivalent

    @property
    def b_gains(self) -> bool:
        """The mean favours b."""
        return (self.effect.mean > 0) == self.higher_is_better

    def kind(self) -> str:
        """'b better', 'a better', 'equivalent', 'no worse', 'inconclusive' or 'no verdict'."""
        if not self.testable:
            return "no verdict"
        diff, margin = self.p_diff_adj < ALPHA, self.p_margin_adj < ALPHA
        if self.one_sided:
            if diff and self.b_gains:
                return "b better"
            if margin:
                return "no worse"
            return "a better" if diff else "inconclusive"
        if margin:
            return "equivalent"
        if diff:
            return "b better" if self.b_gains else "a better"
        return "inconclusive"

    def _before_adjustment(self) -> str:
        """The verdict the raw p-values give, when the adjusted ones give none ('' else)."""
        raw = Judged(self.effect, self.higher_is_better, self.one_sided)
        kind = raw.kind()
        if kind == "equivalent":
            return f"equivalent within ±{pct_text(self.effect.margin)}"
        if kind == "no worse":
            return f"b no worse than a by more than {pct_text(self.effect.margin)}"
        return kind if kind.endswith("better") else ""

    def adjusted_ci(self, margin_test: bool = False) -> tuple[float, float] | None:
        """The interval at the level the adjustment asks of this test, as % changes: the t
        interval at confidence 1 - 0.05 x p / p_adj (two-sided for the difference test;
        for equivalence and non-inferiority the one-sided tests' interval, 1 - 2 x that), so
        it excludes 0, or lies inside the margin, exactly when the adjusted p is below 0.05.
        None without a seed spread (or an adjusted p)."""
        e = self.effect
        raw, adj = self.p_diff, self.p_diff_adj
        if margin_test:
            raw, adj = self.p_margin, self.p_margin_adj
        if e.n < 2 or not e.sd > 0 or not adj > 0 or not math.isfinite(raw):
            return None
        level = ALPHA * raw / adj  # the adjusted test passes exactly when raw p < level
        tail = level if margin_test else level / 2
        hw = float(stats.t.ppf(1 - tail, e.n - 1)) * e.sd / math.sqrt(e.n)
        return e.pct(e.mean - hw), e.pct(e.mean + hw)

    def words(self) -> str:
        """The verdict as the tables print it."""
        e = self.effect
        m = pct_text(e.margin)
        kind = self.kind()
        if kind == "no verdict":
            return "no paired seeds: no verdict" if e.n == 0 else "one seed: no verdict"
        if kind == "equivalent":
            return f"equivalent within ±{m}"
        if kind == "no worse":
            return f"b no worse than a by more than {m}"
        if kind != "inconclusive":
            return kind
        before = self._before_adjustment()
        if before:
            # the interval the adjusted test reads, so the words never seem to contradict
            # an unadjusted 95% CI that excludes 0 (or a 90% CI inside the margin)
            ci = self.adjusted_ci(margin_test=not before.endswith("better"))
            shown = f"; {self.method}-adjusted CI [{ci[0]:+.2f}%, {ci[1]:+.2f}%]" if ci else ""
            return f"inconclusive ({before} only before the {self.method} adjustment{shown})"
        hw = 100 * math.expm1(e.half_width_90)
        if e.half_width_90 >= e.log_margin:
            return f"inconclusive (CI ±{hw:.2g}% is wider than the margin ±{m})"
        lo, hi = e.ci_90
        return f"inconclusive (CI [{lo:+.2f}%, {hi:+.2f}%] reaches past the margin ±{m})"


@contextlib.contextmanager
def _no_full_collection():
    """statsmodels' Holm adjustment ends with `gc.collect()` (imported inside the function):
    0.2 s per call with pandas frames alive, minutes over the results page's hundreds of
    families. The adjustment is the same without it; nothing else runs meanwhile."""
    real = gc.collect
    gc.collect = lambda *args: 0
    try:
        yield
    finally:
        gc.collect = real


def multipletests(pvals: np.ndarray, alpha: float, method: str):
    """statsmodels' `multipletests`, without its full garbage collection."""
    with _no_full_collection():
        return multitest.multipletests(pvals, alpha=alpha, method=method)


def adjust(items: Iterable[Judged], multiplicity: str = "holm") -> None:
    """Adjust the p-values of one family in place, each kind of test on its own."""
    items = [j for j in items if j.testable]
    method = METHODS[multiplicity]
    for j in items:
        j.method = {"holm": "Holm", "bh": "Benjamini-Hochberg"}[multiplicity]
    for raw, attr in (("p_diff", "p_diff_adj"), ("p_margin", "p_margin_adj")):
        ps = np.array([getattr(j, raw) for j in items], dtype=float)
        ok = np.isfinite(ps)
        if not ok.any():
            continue
        adjusted = np.full(len(ps), np.nan)
        adjusted[ok] = multipletests(ps[ok], alpha=ALPHA, method=method)[1]
        for j, p in zip(items, adjusted, strict=True):
            setattr(j, attr, float(p))


@dataclass(frozen=True)
class SeedPlan:
    """What the seeds of a sweep could resolve on one metric, and what settling the margin
    would take."""

    metric: str
    seeds: int
    sd: float
    """Median seed spread (standard deviation) of the per-seed log ratios."""
    detectable_pct: float
    """The smallest effect detectable with 80% power (two-sided 5%), as a % change."""
    seeds_needed: int | None
    """Paired seeds for 80% power to show equivalence (or non-inferiority) at the margin
    when the true effect is 0; None when it cannot be computed."""
    margin: float
    one_sided: bool = False

    def sentence(self) -> str:
        if self.seeds < 2:
            return (f"{self.metric}: one seed per point, so nothing can be detected; run at "
                    "least 3 paired seeds")  # fmt: skip
        what = "non-inferiority" if self.one_sided else "equivalence"
        need = (
            f"{self.seeds_needed} paired seeds would settle {what} at ±{pct_text(self.margin)}"
            if self.seeds_needed
            else f"no seed count settles {what} at ±{pct_text(self.margin)} here"
        )
        detect = (
            f"effects under about ±{self.detectable_pct:.2g}% go undetected (80% power)"
            if math.isfinite(self.detectable_pct)
            else "no effect size reaches 80% power"
        )
        return (
            f"{self.metric}: with {self.seeds} paired seeds (seed spread of the log ratio "
            f"{100 * self.sd:.2g}%), {detect}; {need} if the true effect is 0."
        )


def plan_seeds(metric: str, effects: list[LogRatio], one_sided: bool = False) -> SeedPlan | None:
    """The seed plan of one metric from its tested effects (None when there are none)."""
    tested = [e for e in effects if e.n >= 1]
    if not tested:
        return None
    n = max(e.n for e in tested)
    margin = tested[0].margin
    sds = [e.sd for e in tested if e.n >= 2 and math.isfinite(e.sd)]
    if n < 2 or not sds:
        return SeedPlan(metric, n, math.nan, math.nan, None, margin, one_sided)
    sd = float(np.median(sds))
    power = TTestPower()
    if sd == 0:
        return SeedPlan(metric, n, 0.0, 0.0, 2, margin, one_sided)
    with warnings.catch_warnings():  # the root finder warns where it returns NaN
        warnings.simplefilter("ignore")
        es = float(power.solve_power(nobs=n, alpha=ALPHA, power=POWER))
    # Equivalence when the true effect is 0: both one-sided tests must pass; each at power
    # 1 - (1 - POWER) / 2 gives POWER for the pair (Bonferroni's bound on the misses).
    one_power = POWER if one_sided else 1 - (1 - POWER) / 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            needed = float(power.solve_power(
                effect_size=math.log1p(margin) / sd, alpha=ALPHA, power=one_power,
                alternative="larger",
            ))  # fmt: skip
        seeds_needed = max(2, math.ceil(needed)) if math.isfinite(needed) else None
    except (ValueError, RuntimeError):
        seeds_needed = None
    detectable = 100 * math.expm1(es * sd) if math.isfinite(es) else math.nan
    return SeedPlan(metric, n, sd, detectable, seeds_needed, margin, one_sided)
