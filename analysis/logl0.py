"""Values along the L0 axis, in log L0: the one place where a curve is read at an L0 it was
not measured at.

A curve is a variant's points (frontier points, or one seed's runs) as (L0, value) pairs.
It is read linearly in log L0 between its measured points and only inside [min L0, max L0]:
outside that range its value is NaN, never extrapolated. Two curves are compared only on
the L0 range both cover, at log-spaced L0 values (`log_grid`); where a value must be moved
a little along the curve (a run's L0 a few percent off its target), `local_slope` gives the
curve's slope there. `analysis.compare` (frontiers) and `analysis.matched` (seed by seed)
both read curves through these functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

EDGE = 1e-12
"""In log L0: a value this close outside a curve's range is read at its end (float noise
in a grid built from the range's own ends)."""


def interpolate(l0: np.ndarray, values: np.ndarray, at: np.ndarray | float) -> np.ndarray:
    """A curve's values at the L0s `at`, linear in log L0; NaN outside its range.

    l0, values: the curve's measured points, sorted by L0 with no L0 twice.
    """
    at = np.atleast_1d(np.asarray(at, dtype=float))
    out = np.full(at.shape, np.nan)
    x = np.log(np.asarray(l0, dtype=float))
    if len(x) == 0:
        return out
    lx = np.log(at)
    inside = (lx >= x[0] - EDGE) & (lx <= x[-1] + EDGE)
    out[inside] = np.interp(lx[inside], x, np.asarray(values, dtype=float))
    return out


def gap_bridged(l0: np.ndarray, at: float) -> float:
    """The L0 ratio between the measured points on either side of `at` (1.0 when `at` was
    measured; NaN outside the curve): how far an interpolated value is from a measured one.

    l0: the curve's measured L0s, sorted, each once.
    """
    x = np.log(np.asarray(l0, dtype=float))
    lx = math.log(at)
    if len(x) == 0 or lx < x[0] - EDGE or lx > x[-1] + EDGE:
        return math.nan
    i = int(np.searchsorted(x, lx))
    if i < len(x) and abs(x[i] - lx) < EDGE:
        return 1.0
    return math.exp(x[min(i, len(x) - 1)] - x[max(i - 1, 0)])


def common_range(ranges: Iterable[tuple[float, float]]) -> tuple[float, float] | None:
    """The L0 range every one of the (min L0, max L0) ranges covers; None when they share
    none (or there are none)."""
    ranges = list(ranges)
    if not ranges:
        return None
    lo = max(r[0] for r in ranges)
    hi = min(r[1] for r in ranges)
    return (float(lo), float(hi)) if lo <= hi else None


def log_grid(lo: float, hi: float, n: int) -> np.ndarray:
    """n log-spaced L0 values from lo to hi (one value when lo == hi)."""
    return np.array([lo]) if lo == hi else np.geomspace(lo, hi, n)


def local_slope(
    points: list[tuple[float, float]], at: tuple[float, float], log_metric: bool
) -> float | None:
    """d metric / d log L0 at the point `at` = (L0, metric) of a curve whose points are
    `points` (d log metric / d log L0 when log_metric), from its nearest neighbours in L0 on
    either side: the three-point estimate on an uneven grid, or the one-sided secant where
    there is one neighbour; None where it has none."""
    f = (lambda v: math.log(v)) if log_metric else (lambda v: v)
    l0 = at[0]
    x0, y0 = math.log(l0), f(at[1])
    below = max((p for p in points if p[0] < l0), default=None, key=lambda p: p[0])
    above = min((p for p in points if p[0] > l0), default=None, key=lambda p: p[0])
    secants = [
        (x0 - math.log(p[0]), (y0 - f(p[1])) / (x0 - math.log(p[0])))
        for p in (below, above)
        if p is not None
    ]
    if not secants:
        return None
    if len(secants) == 1:
        return secants[0][1]
    (h_lo, s_lo), (h_hi, s_hi) = secants[0], (-secants[1][0], secants[1][1])
    return (h_hi * s_lo + h_lo * s_hi) / (h_lo + h_hi)
