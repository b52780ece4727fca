"""Each variant at its own best hyperparameter: a sweep's `tune` and `tune_criterion`.

    tune: {train.lr: [1e-3, 3e-3, 1e-2]}           # any knob path; several knobs: their product
    tune_criterion: {metric: fvu, at_l0: 16, seeds: same}   # or seeds: pilot, pilot_seeds: [0]

A recipe whose best learning rate differs from the shared one would lose a comparison for
that reason alone. So the sweep trains every variant at every tuned value, as ordinary grid
jobs (every launcher, resume and target-L0 rounds work as for any grid: a target chain is
one (variant, tuned value)), and the analysis (`analysis.tuning`) picks each variant's
value by the criterion, the metric read at the reference L0 `at_l0`, before any comparison.

    spec = tune_spec(cfg.tune, cfg.tune_criterion, cfg.l0_targets)  # None without tuning
    problems = tuning_problems(config, axes)    # the launch check: every problem, its fix
    axes = expand(axes, spec)                   # the tuned knobs join the grid
    pattern = folder_pattern(subdir, spec)      # job folders name the tuned values

One spec for both sides: the sweep validates it when it starts, the analysis reads it back
from the runs' records (`tune.*`, `tune_criterion.*`) or from `sae-analysis --tune`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ...evaluation.catalogue import METRICS

SEEDS = ("same", "pilot")
"""`tune_criterion.seeds`: the seeds that choose are the seeds that compare (same), or
`pilot_seeds` choose and are left out of every comparison (pilot: no selection bias)."""
CRITERION_FIELDS = ("metric", "at_l0", "seeds", "pilot_seeds", "shared")
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
    seeds = str(criterion.get("seeds") or "same")
    seeds = getattr(seeds, "value", seeds)
    return TuneSpec(
        {k: tuple(v) for k, v in tune.items()}, at_l0, criterion.get("metric"), seeds,
        tuple(int(s) for s in criterion.get("pilot_seeds") or ()),
        dict(criterion.get("shared") or {}),
    )  # fmt: skip


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
    seeds = criterion.get("seeds") or "same"
    seeds = getattr(seeds, "value", seeds)
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


def grid_problems(spec: TuneSpec, axes: Mapping[str, Sequence[str]]) -> list[str]:
    """Problems of a spec with the sweep's grid: a knob both tuned and set by the grid;
    pilot seeds the grid does not run, or that leave too few seeds to compare."""
    problems = [
        f"{k} is tuned and also set by the grid ({k}={','.join(axes[k])} in "
        f"hydra.sweeper.params or on the command line): drop it there, tune.{k} gives its values"
        for k in spec.knobs
        if k in axes
    ]
    if spec.seeds == "pilot":
        seeds = [int(float(s)) for s in axes.get("seed", ["0"])]
        missing = [s for s in spec.pilot_seeds if s not in seeds]
        if missing:
            grid = ",".join(map(str, seeds))
            problems.append(f"tune_criterion.pilot_seeds {missing} are not seeds of the grid "
                            f"(seed={grid}): add them to its seeds")  # fmt: skip
        left = [s for s in seeds if s not in spec.pilot_seeds]
        if len(left) < 2:
            problems.append(f"tune_criterion.pilot_seeds leave {len(left)} seed(s) to compare; "
                            "a verdict needs at least 2 paired seeds: add seeds to the grid, "
                            "e.g. seed=0,1,2,3 with pilot_seeds=[0]")  # fmt: skip
    return problems


_ABSENT = object()


def config_problems(spec: TuneSpec, config: DictConfig) -> list[str]:
    """Tuned knobs that are not keys of the sweep's config (a typo, a missing group prefix)."""
    problems = []
    for knob in spec.knobs:
        try:
            found = OmegaConf.select(config, knob, default=_ABSENT, throw_on_missing=False)
        except Exception:  # noqa: BLE001 - an interpolation the master config cannot resolve
            found = None
        if found is _ABSENT:
            parent = knob.rsplit(".", 1)[0] if "." in knob else ""
            node = OmegaConf.select(config, parent, default=None) if parent else config
            near = ", ".join(sorted(node.keys())[:12]) if isinstance(node, DictConfig) else ""
            hint = f" (keys under {parent or 'the root'}: {near})" if near else ""
            problems.append(f"tune.{knob}: {knob} is not a key of the config{hint}; write its "
                            "full dotted path, e.g. train.lr")  # fmt: skip
        elif isinstance(found, DictConfig):
            key = next(iter(found.keys()), "x")
            problems.append(f"tune.{knob}: {knob} is a group of keys, not one knob: tune one "
                            f"of its keys, e.g. {knob}.{key}")  # fmt: skip
    return problems


def tuning_problems(config: DictConfig, axes: Mapping[str, Sequence[str]]) -> list[str]:
    """Everything that forbids a sweep's tuning, each with its fix (empty: nothing)."""
    tune = OmegaConf.select(config, "tune", default=None)
    criterion = OmegaConf.select(config, "tune_criterion", default=None)
    targets = OmegaConf.select(config, "l0_targets", default=None) or []
    try:
        spec = tune_spec(tune, criterion, targets)
    except ValueError as e:
        return str(e).splitlines()
    if spec is None:
        return []
    return grid_problems(spec, axes) + config_problems(spec, config)


def plan(config: DictConfig, axes: Mapping[str, Sequence[str]]) -> TuneSpec | None:
    """The sweep's tuning (None: none); ValueError naming every problem and its fix."""
    problems = tuning_problems(config, axes)
    if problems:
        raise ValueError("the sweep's tuning cannot run:\n" + "\n".join(problems))
    return tune_spec(config.get("tune"), config.get("tune_criterion"), config.get("l0_targets"))


def override_value(v: Any) -> str:
    """A tuned value as the grid writes it in an override (`train.lr=0.001`)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def expand(axes: Mapping[str, Sequence[str]], spec: TuneSpec) -> dict[str, list[str]]:
    """The grid with the tuned knobs as axes, right after `variant` (else first): every
    variant trains at every tuned value, seeds and lambdas varying fastest as before."""
    tuned = [(k, [override_value(v) for v in vs]) for k, vs in spec.values.items()]
    out: OrderedDict[str, list[str]] = OrderedDict()
    if "variant" not in axes:
        out.update(tuned)
    for k, vs in axes.items():
        out[k] = list(vs)
        if k == "variant":
            out.update(tuned)
    return dict(out)


def folder_pattern(pattern: str | None, spec: TuneSpec) -> str | None:
    """The job-folder pattern with every tuned knob it does not name appended
    (`..._seed${seed}_lr${train.lr}`): jobs that differ only in a tuned value must not share
    a folder. None or unchanged when nothing is missing."""
    if pattern is None:
        return None
    for knob in spec.knobs:
        if f"${{{knob}}}" not in pattern:
            pattern += f"_{knob.rsplit('.', 1)[-1]}${{{knob}}}"
    return pattern
