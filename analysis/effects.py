"""How the analysis reads and writes an effect: which way is better for a metric and what
the metric is called, and the numbers as every report and the results page print them
(3 significant digits, signed percentages, confidence intervals, L0 ranges).

One place for these, so that a verdict, a table and a plot title never disagree on which
variant is better or on how a number reads.
"""

from __future__ import annotations

import math

from analysis.frontier import METRICS


def higher_is_better(metric: str) -> bool:
    """True when a higher value of `metric` is better; lower is better for a metric the
    catalogue does not know (a loss, an error, a gap)."""
    return METRICS[metric].higher_is_better if metric in METRICS else False


def better_word(metric: str) -> str:
    """'higher' or 'lower': the direction in which `metric` is better."""
    return "higher" if higher_is_better(metric) else "lower"


def title(metric: str) -> str:
    """The metric's name as an axis or section title (its own name when the catalogue does
    not know it)."""
    return METRICS[metric].title if metric in METRICS else metric


def fmt(x: float | None) -> str:
    """3 significant digits; 'n/a' for a missing or infinite value."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.3g}"


def pct(x: float | None) -> str:
    """A relative difference in percent, signed, 2 decimals: '+1.23%'."""
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.2f}%"


def ci(lo: float, hi: float, seeds: int) -> str:
    """'[lo, hi]' at 3 significant digits; empty with fewer than 2 seeds (no interval)."""
    return f"[{fmt(lo)}, {fmt(hi)}]" if seeds >= 2 else ""


def l0_range(lo: float, hi: float) -> str:
    """'lo-hi', or one value when both ends print the same."""
    return "-".join(dict.fromkeys((fmt(lo), fmt(hi))))
