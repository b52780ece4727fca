"""The tuning spec of a sweep: `tune` (knobs tuned per variant) and `tune_criterion` (how
each variant's best value is chosen), read into a `TuneSpec` and checked on their own.

    spec = tune_spec(cfg.tune, cfg.tune_criterion, cfg.l0_targets)  # None without tuning

One spec and one set of checks for both sides: the sweep (sweep/planning/tuning.py) checks it
with its grid and config when it starts; the analysis (analysis/tuning.py) reads it back from
the runs' records or from `sae-analysis --tune`. A problem is named with its fix
(ValueError listing every one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from .evaluation.catalogue import METRICS

SEEDS = ("same", "pilot")
"""`tune_criterion.seeds`: the seeds that choose are the seeds that compare (same), or
`pilot_seeds` choose and are left out of every comparison (pilot: no selection bias)."""
CRITERION_FIELDS = ("metric", "at_l0", "seeds", "pilot_seeds", "shared", "other_targets")
OTHER_TARGETS = ("chosen", "every")
"""`tune_criterion.other_targets`: at the targets other than `at_l0`, only each variant's
chosen value and the shared one (chosen), or every value (every)."""
NOT_TUNABLE = {
    "seed": "seeds pair the comparisons",
    "variant": "variants are what is compared",
    "lambda_multiplier": "it traces the frontier",
    "penalty.coefficient": "it traces the frontier",
    "sae.k": "it traces the frontier of TopK variants",
    "l0_target": "the sweep sets it per target",
}
"""Knobs a sweep cannot tune, and why."""


@dataclass(frozen=True)
class TuneSpec:
    """What a sweep tunes per variant, and how the best value is chosen."""

    values: Mapping[str, tuple[Any, ...]]
    """{knob: its values}, in the declared order."""
    at_l0: float
    """The reference L0: the criterion is each variant's metric there, seed by seed."""
    metric: str | None = None
    """The criterion's metric (catalogue name); None: the report's primary metric."""
    seeds: str = "same"
    pilot_seeds: tuple[int, ...] = ()
    shared: Mapping[str, Any] = field(default_factory=dict)
    """{knob: value} every variant would share without tuning (the report's "tuning changed
    this much" baseline); empty: the value best on average over the variants."""
    other_targets: str = "chosen"
    """The values a target sweep trains at its other targets (OTHER_TARGETS)."""

    @property
    def knobs(self) -> tuple[str, ...]:
        return tuple(self.values)


def _plain(x: Any) -> Any:
    """A config node as plain Python (Hydra passes lists and mappings as nodes)."""
    return OmegaConf.to_container(x, resolve=True) if OmegaConf.is_config(x) else x


def tune_spec(
    tune: Mapping[str, Any] | None,
    criterion: Mapping[str, Any] | None = None,
    l0_targets: Sequence[float] = (),
) -> TuneSpec | None:
    """The spec of a `tune` mapping and its criterion; None when nothing is tuned. Raises
    ValueError listing every problem, each with its fix."""
    tune, criterion = _plain(tune) or {}, _plain(criterion) or {}
    targets = [float(t) for t in (_plain(l0_targets) or [])]
    problems = spec_problems(tune, criterion, targets)
    if problems:
        raise ValueError("\n".join(problems))
    if not tune:
        return None
    at_l0 = criterion.get("at_l0")
    at_l0 = float(targets[0] if at_l0 is None else at_l0)
    seeds = _choice(criterion.get("seeds"), "same")
    return TuneSpec(
        {k: tuple(v) for k, v in tune.items()}, at_l0, criterion.get("metric"), seeds,
        tuple(int(s) for s in criterion.get("pilot_seeds") or ()),
        dict(criterion.get("shared") or {}), _choice(criterion.get("other_targets"), "chosen"),
    )  # fmt: skip


def _choice(value: Any, default: str) -> str:
    """An enum field as its name (the config passes members, a record passes strings)."""
    value = getattr(value, "value", value) or default
    return str(value)


def spec_problems(tune: Any, criterion: Mapping[str, Any], targets: Sequence[float]) -> list[str]:
    """Every problem of a `tune` mapping and its criterion on their own, with its fix."""
    example = "e.g. tune: {train.lr: [1e-3, 3e-3, 1e-2]}"
    if not isinstance(tune, Mapping):
        return [f"tune={tune!r} must map knobs to lists of values, {example}"]
    if not tune:
        return []
    problems = []
    for knob, values in tune.items():
        if knob in NOT_TUNABLE:
            problems.append(f"tune.{knob}: {knob} cannot be tuned ({NOT_TUNABLE[knob]})")
        elif not isinstance(values, list | tuple) or not values:
            problems.append(f"tune.{knob}={values!r}: give a non-empty list of values, {example}")
        elif len({str(v) for v in values}) < len(values):
            problems.append(f"tune.{knob}={list(values)} lists a value twice: list each once")
    unknown = sorted(set(criterion) - set(CRITERION_FIELDS))
    if unknown:
        problems.append(f"tune_criterion has no field {', '.join(unknown)} (its fields: "
                        f"{', '.join(CRITERION_FIELDS)})")  # fmt: skip
    problems += _metric_problems(criterion.get("metric"))
    problems += _l0_problems(criterion.get("at_l0"), targets)
    seeds = _choice(criterion.get("seeds"), "same")
    other = _choice(criterion.get("other_targets"), "chosen")
    if other not in OTHER_TARGETS:
        problems.append(f"tune_criterion.other_targets={other!r}: write chosen (the other "
                        "targets at each variant's chosen value and the shared one) or every "
                        "(every value at every target)")  # fmt: skip
    pilot = list(criterion.get("pilot_seeds") or [])
    if seeds not in SEEDS:
        problems.append(f"tune_criterion.seeds={seeds!r}: write same (the compared seeds also "
                        "choose) or pilot (pilot_seeds choose and are not compared)")  # fmt: skip
    elif seeds == "pilot" and not pilot:
        problems.append("tune_criterion.seeds=pilot needs the seeds that choose: e.g. "
                        "tune_criterion.pilot_seeds=[0]")  # fmt: skip
    elif seeds == "same" and pilot:
        problems.append(f"tune_criterion.pilot_seeds={pilot} with seeds=same: set "
                        "tune_criterion.seeds=pilot to choose on them, or drop them")  # fmt: skip
    for knob, value in dict(criterion.get("shared") or {}).items():
        if knob not in tune:
            problems.append(f"tune_criterion.shared.{knob}: {knob} is not tuned "
                            f"(tuned: {', '.join(tune)})")  # fmt: skip
        elif str(value) not in {str(v) for v in tune[knob] or []}:
            problems.append(f"tune_criterion.shared.{knob}={value} is not among its tuned values "
                            f"{list(tune[knob])}: the baseline must have been trained")  # fmt: skip
    return problems


def _metric_problems(metric: Any) -> list[str]:
    if metric is None or (metric in METRICS and METRICS[metric].direction is not None):
        return []
    usable = ", ".join(m.name for m in METRICS.values() if m.compared)
    return [f"tune_criterion.metric={metric!r} is not a metric of the catalogue with a better "
            f"direction (sae_sweep/evaluation/catalogue.py): use e.g. {usable}"]  # fmt: skip


def _l0_problems(at_l0: Any, targets: Sequence[float]) -> list[str]:
    listed = ", ".join(f"{t:g}" for t in targets)
    if at_l0 is None:
        if len(targets) == 1:
            return []  # the one target is the reference
        where = f" (one of l0_targets: {listed})" if targets else ""
        return [f"tune_criterion.at_l0 is not set: the L0 at which each variant's values are "
                f"compared, e.g. tune_criterion.at_l0=16{where}"]  # fmt: skip
    try:
        x = float(at_l0)
    except (TypeError, ValueError):
        return [f"tune_criterion.at_l0={at_l0!r} must be a number (an L0, e.g. 16)"]
    if not (math.isfinite(x) and x > 0):
        return [f"tune_criterion.at_l0={at_l0} must be a positive L0"]
    if targets and not any(math.isclose(x, t) for t in targets):
        return [f"tune_criterion.at_l0={x:g} is not one of l0_targets [{listed}]: the criterion "
                f"is read where every variant was placed; use one of them or add {x:g} to "
                "l0_targets"]  # fmt: skip
    return []
