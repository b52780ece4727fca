"""Target-L0 placement: where to put lambda so that each variant lands on each target L0.

A sweep with `l0_targets` runs its grid first; then, per variant, this module reads the
finished runs as points (lambda, seed-mean L0), and for every target either
- finds it HIT: a lambda whose runs (all seeds) have a seed-mean L0 within `tolerance`
  (relative) of the target,
- proposes the lambda to run next: log-log interpolation between the two measured lambdas
  that bracket the target (L0 falls as lambda grows), or log-log extrapolation of the end
  segment when the target lies beyond the measured range (at most EXTRAPOLATE x beyond),
- or declares it UNREACHABLE, with the reason: L0 saturates before the target (the end of
  the range does not respond to lambda), lambda -> L0 is not monotone around the target
  (it crosses the target more than once), or L0 jumps across the target between two
  lambdas too close to split further.
A proposal is never a lambda already run, so refinement cannot loop; the sweeper also
stops after `max_rounds`, and a target still open then is reported with its closest run.

A variant whose L0 is set directly by a knob (TopK's `sae.k`) needs no refinement: the
sweeper runs it at k = target (see `direct_l0_knob`). A variant placed by control
(`l0_placement: control`) runs one job per seed and target, each steering its own lambda
(training/l0_control.py); `place_controlled` says whether they landed.

Pure functions of the measured points, tested with a fake lambda -> L0 relation.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from ...models import architecture

EXTRAPOLATE = 4.0
"""A proposal goes at most this factor beyond the measured lambdas."""
MIN_BRACKET = 1.02
"""Two lambdas closer than this ratio are not split further: L0 jumps between them."""
SATURATED = 0.05
"""An end segment whose L0 changes by less than this (relative) does not respond to lambda."""
MIN_SEGMENT = 1.5
"""An end segment spans at least this ratio of lambdas when the points allow: a shorter one
measures too small a change of L0 to tell saturation from slope."""
SIGNIFICANT = 4
"""Proposed lambdas are rounded to this many significant digits (readable folder names,
identical proposals on a re-run)."""


LAMBDA = "lambda"
K = "k"
CONTROL = "l0_target"
"""The knob a target is placed with: the penalty's lambda, (TopK, BatchTopK) `sae.k`, or
L0 control (`train.l0_target`: each seed's job steers its own lambda to the target)."""


class TargetStatus(str, Enum):
    HIT = "hit"
    PENDING = "pending"  # a lambda is proposed (or running)
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Point:
    """The runs of one variant at one lambda."""

    lam: float
    l0s: tuple[float, ...]
    """L0 of each finished seed."""
    complete: bool
    """Every seed of the sweep finished at this lambda."""
    dirs: tuple[str, ...] = ()

    @property
    def l0(self) -> float:
        return sum(self.l0s) / len(self.l0s)


@dataclass
class TargetState:
    """Where one (variant, target) stands."""

    variant: str
    target: float
    status: TargetStatus
    lam: float | None = None
    """The value of `knob`. HIT: the one whose runs hit the target; PENDING: the proposed one;
    else the one of the closest run. (Named `lam` because lambda is the usual knob.)"""
    l0: float | None = None
    """Seed-mean L0 at `lam` (None for a proposal not run yet)."""
    l0_seeds: list[float] = field(default_factory=list)
    reason: str = ""
    dirs: list[str] = field(default_factory=list)
    """The job folders (relative to the sweep folder) of the runs at `lam`."""
    knob: str = LAMBDA
    """What `lam` is: LAMBDA, or K for a variant whose L0 is set directly."""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d


def points_from_runs(
    runs: Iterable[Mapping[str, Any]], n_seeds: int, lam_key: str = "lam"
) -> dict[str, list[Point]]:
    """{variant: points sorted by lambda} from run records.

    runs: dicts with `variant`, `lam_key`, `seed`, `l0`, `status` and optionally `dir`;
    only finished runs (status done, finite L0) count. A point is `complete` when
    `n_seeds` seeds finished at its lambda.
    """
    by: dict[str, dict[float, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        l0 = r.get("l0")
        if r.get("status") != "done" or l0 is None or not math.isfinite(float(l0)):
            continue
        by[str(r["variant"])][float(r[lam_key])].append(r)
    out: dict[str, list[Point]] = {}
    for variant, lams in by.items():
        pts = []
        for lam, rs in sorted(lams.items()):
            seeds = {r.get("seed") for r in rs}
            pts.append(
                Point(
                    lam,
                    tuple(float(r["l0"]) for r in rs),
                    len(seeds) >= n_seeds,
                    tuple(str(r["dir"]) for r in rs if r.get("dir")),
                )
            )
        out[variant] = pts
    return out


def within(l0: float, target: float, tolerance: float) -> bool:
    return abs(l0 - target) <= tolerance * target


def place(
    variant: str,
    points: list[Point],
    target: float,
    tolerance: float,
    tried: Iterable[float] = (),
) -> TargetState:
    """The state of one target for one variant, from its measured points (any order).

    tried: lambdas already launched (failed ones included), never proposed again.
    """
    pts = sorted((p for p in points if p.complete and p.lam > 0), key=lambda p: p.lam)
    if not pts:
        return TargetState(variant, target, TargetStatus.UNREACHABLE, reason="no finished runs")
    hits = [p for p in pts if within(p.l0, target, tolerance)]
    if hits:
        best = min(hits, key=lambda p: abs(p.l0 - target))
        return _state(variant, target, TargetStatus.HIT, best)
    closest = min(pts, key=lambda p: abs(math.log(max(p.l0, 1e-9) / target)))
    tried = {rounded(p.lam) for p in points} | {rounded(x) for x in tried}

    def give_up(reason: str) -> TargetState:
        return _state(variant, target, TargetStatus.UNREACHABLE, closest, reason)

    brackets = [
        (a, b) for a, b in zip(pts, pts[1:], strict=False) if (a.l0 - target) * (b.l0 - target) < 0
    ]
    if len(brackets) > 1:
        where = ", ".join(f"{_g(a.lam)}-{_g(b.lam)}" for a, b in brackets)
        return give_up(
            f"lambda -> L0 is not monotone there: L0 crosses {_g(target)} "
            f"{len(brackets)} times (between lambda {where})"
        )
    if brackets:
        a, b = brackets[0]
        if b.lam / a.lam < MIN_BRACKET:
            return give_up(
                f"L0 jumps from {_g(a.l0)} to {_g(b.l0)} between lambda {_g(a.lam)} and "
                f"{_g(b.lam)}: lambda -> L0 is not continuous there"
            )
        lam = rounded(_loglog(a, b, target))
        if lam in tried or not a.lam < lam < b.lam:
            lam = rounded(math.sqrt(a.lam * b.lam))  # bisect in log lambda
        if lam in tried:
            return give_up(f"no untried lambda left between {_g(a.lam)} and {_g(b.lam)}")
        return _proposal(variant, target, lam)

    # The target lies beyond the measured L0 range: extrapolate the end segment.
    above = target > max(p.l0 for p in pts)
    if len(pts) == 1:
        lam = pts[0].lam / EXTRAPOLATE if above else pts[0].lam * EXTRAPOLATE
    else:
        a, b = _end_segment(pts, above)
        end = a if above else b  # the lambda at the end of the range, towards the target
        if b.l0 >= a.l0 or abs(math.log(a.l0 / b.l0)) < SATURATED:
            side = "rises above" if above else "falls below"
            return give_up(
                f"outside the range the variant reaches: L0 never {side} "
                f"{_g(end.l0)} (it stops responding to lambda at {_g(end.lam)})"
            )
        lam = _loglog(a, b, target)
        lo, hi = pts[0].lam / EXTRAPOLATE, pts[-1].lam * EXTRAPOLATE
        lam = min(max(lam, lo), hi)
    lam = rounded(lam)
    if lam in tried:
        side = "above" if above else "below"
        return give_up(
            f"outside the range the variant reaches: no L0 {side} {_g(closest.l0)} "
            f"within a factor {EXTRAPOLATE:g} of the lambdas tried"
        )
    return _proposal(variant, target, lam)


def place_all(
    points: Mapping[str, list[Point]],
    variants: Iterable[str],
    targets: Iterable[float],
    tolerance: float,
) -> list[TargetState]:
    """Every (variant, target), variants and targets in the given order."""
    return [place(v, points.get(v, []), float(t), tolerance) for v in variants for t in targets]


def give_up_pending(states: list[TargetState], points: Mapping[str, list[Point]],
                    rounds: int) -> list[TargetState]:  # fmt: skip
    """After the last round: every target still PENDING becomes UNREACHABLE, with its
    closest run and the number of rounds spent."""
    out = []
    for s in states:
        if s.status != TargetStatus.PENDING:
            out.append(s)
            continue
        pts = [p for p in points.get(s.variant, []) if p.complete]
        closest = min(pts, key=lambda p: abs(math.log(max(p.l0, 1e-9) / s.target)), default=None)
        reason = f"not within tolerance after {rounds} refinement rounds"
        out.append(
            _state(s.variant, s.target, TargetStatus.UNREACHABLE, closest, reason, knob=s.knob)
        )
    return out


def validate_targets(targets: Iterable[float], tolerance: float, max_rounds: int) -> list[float]:
    """The targets as sorted floats; a ValueError that names the problem and the fix."""
    ts = [float(t) for t in targets]
    if any(not math.isfinite(t) or t <= 0 for t in ts):
        raise ValueError(f"l0_targets must be positive numbers, got {ts}: e.g. l0_targets=[8,16]")
    if not 0 < tolerance < 1:
        raise ValueError(f"l0_tolerance={tolerance} must lie in (0, 1): e.g. 0.1 for 10%")
    if max_rounds < 0:
        raise ValueError(f"l0_max_rounds={max_rounds} must be >= 0")
    return sorted(set(ts))


def summary_lines(states: list[TargetState]) -> list[str]:
    """One aligned line per (variant, target) for the end of a sweep. Columns are as wide as
    the longest label: a recipe sweep's labels (several overrides) run past 80 characters."""
    width = max((len(s.variant) for s in states), default=0)
    out = []
    for s in states:
        got = "" if s.l0 is None else f"L0 {s.l0:.3g} at {s.knob} {s.lam:.4g}"
        why = f"{': ' if got else ''}{s.reason}" if s.reason else ""  # not run into the figures
        line = f"  {s.variant:<{width}}  L0 {s.target:<6g} {s.status.value:<11} {got}{why}"
        out.append(line.rstrip())
    return out


def place_direct(variant: str, points: list[Point], target: float, tolerance: float) -> TargetState:
    """A variant whose L0 is set by `sae.k` (points keyed by k): run k = target once; the
    target is hit when the runs' L0 is within tolerance, else it cannot be hit by k."""
    k = float(max(1, round(target)))
    at_k = [p for p in points if p.complete and p.lam == k]
    if not at_k:
        return _proposal(variant, target, k, knob=K)
    p = at_k[0]
    if within(p.l0, target, tolerance):
        return _state(variant, target, TargetStatus.HIT, p, knob=K)
    return _state(variant, target, TargetStatus.UNREACHABLE, p,
                  f"sae.k={k:g} gives L0 {_g(p.l0)}", knob=K)  # fmt: skip


def place_controlled(
    variant: str, points: list[Point], target: float, tolerance: float
) -> TargetState:
    """A variant placed by control (points keyed by their target): the target is hit when
    its runs' seed-mean L0 is within tolerance; otherwise control did not place it, and the
    reason says how to place it by rounds. Never PENDING: control has no second round."""
    at = [p for p in points if p.lam == target]
    if not at or not at[0].complete:
        return _state(variant, target, TargetStatus.UNREACHABLE, at[0] if at else None,
                      "not every seed finished", knob=CONTROL)  # fmt: skip
    p = at[0]
    if within(p.l0, target, tolerance):
        return _state(variant, target, TargetStatus.HIT, p, knob=CONTROL)
    # Two causes look alike here: L0 that settled near the target in training and drifted
    # on once lambda froze (too short a control phase for this run's length), and a variant
    # whose L0 cannot be steered (a switch in lambda). The summaries tell them apart.
    return _state(variant, target, TargetStatus.UNREACHABLE, p,
                  f"under L0 control the seeds reached L0 {_g(p.l0)}. If their training L0 "
                  "when lambda froze (`l0_control.train_l0_at_freeze` in each summary.json) "
                  "was near the target, the control phase was too short for L0 to settle: "
                  "raise train.steps or train.l0_control_fraction; otherwise "
                  "l0_placement=rounds places it by refinement rounds", knob=CONTROL)  # fmt: skip


def direct_l0_knob(sae_config: Mapping[str, Any]) -> str | None:
    """The knob that sets L0 directly for this SAE config, or None when lambda does.

    An architecture with one (its registry entry's `l0_knob`: TopK's and BatchTopK's `sae.k`)
    is targeted by setting that knob to the target: no lambda refinement is needed.
    """
    return architecture(sae_config["kind"]).l0_knob


def _state(
    variant, target, status, p: Point | None, reason: str = "", knob: str = LAMBDA
) -> TargetState:
    if p is None:
        return TargetState(variant, target, status, reason=reason, knob=knob)
    return TargetState(
        variant, target, status, p.lam, p.l0, list(p.l0s), reason, list(p.dirs), knob
    )


def _proposal(variant: str, target: float, lam: float, knob: str = LAMBDA) -> TargetState:
    return TargetState(variant, target, TargetStatus.PENDING, lam, knob=knob)


def _end_segment(pts: list[Point], above: bool) -> tuple[Point, Point]:
    """The segment a target beyond the measured range is extrapolated from, lower lambda
    first: the end of the range towards the target, and the nearest point at least
    MIN_SEGMENT x away in lambda (else the farthest). Two proposals of one round can land
    close together (one clamped at EXTRAPOLATE, one inside): between them L0 changes by
    little however steep the curve, which read as saturation."""
    end, others = (pts[0], pts[1:]) if above else (pts[-1], pts[-2::-1])
    far = next((p for p in others if _ratio(p.lam, end.lam) >= MIN_SEGMENT), others[-1])
    return (end, far) if above else (far, end)


def _ratio(x: float, y: float) -> float:
    return max(x, y) / min(x, y)


def _loglog(a: Point, b: Point, target: float) -> float:
    """Lambda at which the line through a and b in (log lambda, log L0) reaches target."""
    xa, xb = math.log(a.lam), math.log(b.lam)
    ya, yb = math.log(max(a.l0, 1e-9)), math.log(max(b.l0, 1e-9))
    return math.exp(xa + (math.log(target) - ya) * (xb - xa) / (yb - ya))


def rounded(lam: float) -> float:
    return float(f"{lam:.{SIGNIFICANT}g}")


def _g(x: float) -> str:
    return f"{x:.3g}"
