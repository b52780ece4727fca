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

The spec and its own checks are `sae_sweep.tuning` (the analysis reads the same spec
back from the runs' records); here, its checks against the sweep's grid and config.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ...tuning import TuneSpec, tune_spec


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


def tuning_problems(
    config: DictConfig, axes: Mapping[str, Sequence[str]], dense_limit: float | None = None
) -> list[str]:
    """Everything that forbids a sweep's tuning, each with its fix (empty: nothing).
    dense_limit: max_l0_fraction x the narrowest d, when known before the jobs run."""
    tune = OmegaConf.select(config, "tune", default=None)
    criterion = OmegaConf.select(config, "tune_criterion", default=None)
    targets = OmegaConf.select(config, "l0_targets", default=None) or []
    try:
        spec = tune_spec(tune, criterion, targets)
    except ValueError as e:
        return str(e).splitlines()
    if spec is None:
        return []
    problems = grid_problems(spec, axes) + config_problems(spec, config)
    if dense_limit is not None and spec.at_l0 > dense_limit:
        problems.append(f"tune_criterion.at_l0={spec.at_l0:g} is above the dense limit "
                        f"max_l0_fraction x d = {dense_limit:g}: no run there enters a verdict, "
                        "so none could choose; use an L0 below it")  # fmt: skip
    return problems


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
