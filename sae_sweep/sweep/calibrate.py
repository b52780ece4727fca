"""Calibrate the variants' lambda scales so every frontier spans the same L0 range.

A variant preset maps the sweep's multiplier m to penalty.coefficient = scale * m ** exponent.
Given a calibration sweep (one seed, a wide grid of lambdas per variant), this finds, per
variant, the lambdas at which L0 crosses the two ends of the target range (log-log
interpolation between measured points, clamped to the measured range), then the scale and
exponent that put those lambdas at the two ends of the multiplier grid:

    lambda(L0 = l0_high) = scale * m_low ** exponent
    lambda(L0 = l0_low)  = scale * m_high ** exponent

    sae-sweep +sweep=calibrate                    # or: variant=a,b data=... for new data
    python -m sae_sweep.sweep.calibrate multirun/calibrate/<dir> [--l0 5 200] [--m 0.5 4]

prints the `lambda_scale` / `lambda_exponent` lines to paste into each conf/variant/*.yaml.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

from ..record import layout

EXTRAPOLATE = 3.0


def load_points(sweep_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """{variant: [(coefficient, l0), ...]} from the finished jobs under `sweep_dir`."""
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for _, s in layout.summaries(Path(sweep_dir)):
        knobs = s.get("knobs") or {}
        if s.get("status") != "done" or s.get("l0") is None:
            continue
        points[s.get("variant") or "?"].append((knobs["penalty.coefficient"], float(s["l0"])))
    return {v: sorted(p) for v, p in points.items()}


def lambda_at_l0(points: list[tuple[float, float]], l0: float) -> tuple[float, bool]:
    """Lambda at which L0 reaches `l0` (log-log interpolation); (lambda, inside range).

    L0 falls as lambda grows. Outside the measured range the end segment is extrapolated,
    at most a factor EXTRAPOLATE beyond the measured lambdas (L0 saturates: with the l1
    recipe it cannot rise much above ~130 on the default data however small lambda is).
    """
    pts = [(math.log(lam), math.log(max(v, 1e-3))) for lam, v in points if lam > 0]
    target = math.log(l0)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if min(y0, y1) <= target <= max(y0, y1) and y0 != y1:
            return math.exp(x0 + (target - y0) * (x1 - x0) / (y1 - y0)), True
    (x0, y0), (x1, y1) = pts[:2] if target > pts[0][1] else pts[-2:]
    x = x0 + (target - y0) * (x1 - x0) / (y1 - y0) if y1 < y0 else x0
    limit = math.log(EXTRAPOLATE)
    return math.exp(min(max(x, pts[0][0] - limit), pts[-1][0] + limit)), False


def fit(points, l0_range=(5.0, 200.0), m_range=(0.5, 4.0)) -> dict[str, float | bool]:
    lam_high_l0, ok_hi = lambda_at_l0(points, max(l0_range))
    lam_low_l0, ok_lo = lambda_at_l0(points, min(l0_range))
    m_lo, m_hi = min(m_range), max(m_range)
    exponent = math.log(lam_low_l0 / lam_high_l0) / math.log(m_hi / m_lo)
    scale = lam_high_l0 / m_lo**exponent
    return {"lambda_scale": scale, "lambda_exponent": exponent, "covers_range": ok_hi and ok_lo}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--l0", nargs=2, type=float, default=(5.0, 200.0), help="target L0 range")
    ap.add_argument("--m", nargs=2, type=float, default=(0.5, 4.0),
                    help="smallest and largest lambda_multiplier of your sweeps")  # fmt: skip
    args = ap.parse_args(argv)
    for variant, pts in sorted(load_points(args.sweep_dir).items()):
        f = fit(pts, tuple(args.l0), tuple(args.m))
        note = "" if f["covers_range"] else "  # extrapolated: L0 range not fully measured"
        print(f"{variant}:  lambda_scale: {f['lambda_scale']:.4g}  "
              f"lambda_exponent: {f['lambda_exponent']:.3g}{note}")  # fmt: skip
        print("    measured (lambda, L0): " + ", ".join(f"({a:.3g}, {b:.3g})" for a, b in pts))


if __name__ == "__main__":
    main()
