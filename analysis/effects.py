"""How the analysis writes an effect: the numbers as every report and the results page
print them (3 significant digits, signed percentages, confidence intervals, L0 ranges),
and the word for the better direction of a metric.

One place for these, so that a verdict, a table and a plot never disagree on how a number
reads. Which way is better for a metric, and its title, are the metric catalogue's
(`sae_sweep.evaluation.catalogue`).
"""

from __future__ import annotations

import math

from sae_sweep.evaluation.catalogue import higher_is_better


def better_word(metric: str) -> str:
    """'higher' or 'lower': the direction in which `metric` is better."""
    return "higher" if higher_is_better(metric) else "lower"


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
