"""A Hydra callback that refuses a launch before anything is written, naming the fix.

Registered in conf/config.yaml as `hydra.callbacks.launch_checks`, first of the callbacks
(start events run in order), so a refused launch leaves no folder and no sweep.json:
- `require_clean_tree=true` (a single run or a sweep): the sae-sweep checkout must have no
  uncommitted change (record/versions.py), so every run names the commit that made it;
- a sweep's `l0_targets` must stay below the dense limit on its data's d
  (`config.validation.target_limit_problems`, with the `max_l0_fraction` the analysis uses).
  With `data.d` null (a Hugging Face model's width is known once the model loads) nothing
  is checked here: the analysis still leaves every dense run out of the verdicts;
- `restart=true` is for single runs (a sweep resumes its jobs; its folders are deleted by hand);
- a sweep's `tune` and `tune_criterion` (`sweep.planning.tuning.tuning_problems`): known
  knobs, non-empty lists, a criterion metric of the catalogue, a reference L0 among the
  targets, pilot seeds the grid runs.

Hydra turns an exception raised in a callback into a warning and goes on; SystemExit passes
through it, with the message as the last line.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .config.validation import MAX_L0_FRACTION, target_limit_problems
from .record.versions import code_tree, unclean_tree_message
from .sweep.planning.grid import grid_axes, param_lines
from .sweep.planning.tuning import tuning_problems


class LaunchChecks(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse(launch_problems(config, sweep=False))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse(launch_problems(config, sweep=True))


def refuse(problems: list[str]) -> None:
    if problems:
        sys.exit("\n".join(["sae-sweep refuses to start:", *problems]))


def launch_problems(config: DictConfig, sweep: bool) -> list[str]:
    """What forbids this launch (empty: nothing)."""
    problems = []
    if OmegaConf.select(config, "require_clean_tree", default=False):
        message = unclean_tree_message(code_tree())
        if message:
            problems.append(message)
    if sweep and OmegaConf.select(config, "restart", default=False):
        problems.append(
            "restart=true starts a single run over in its folder; a sweep resumes its jobs. "
            "Fix: a new hydra.sweep.dir, or delete the job folders to start over"
        )
    targets = OmegaConf.select(config, "l0_targets", default=None)
    if sweep and targets:
        tolerance = float(OmegaConf.select(config, "l0_tolerance", default=0.1))
        fraction = max_l0_fraction(config)
        d = min(sweep_widths(config), default=None)  # the narrowest data bounds the targets
        problems += target_limit_problems(list(targets), tolerance, d, float(fraction))
    if sweep and OmegaConf.select(config, "tune", default=None):
        d = min(sweep_widths(config), default=None)
        limit = max_l0_fraction(config) * d if d is not None else None
        problems += tuning_problems(config, sweep_grid(config), limit)
    return problems


def sweep_grid(config: DictConfig) -> dict[str, list[str]]:
    """The sweep's grid axes before any job runs: the sweep file's params, then the command
    line (as the sweeper reads them)."""
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
    params = OmegaConf.to_container(params, resolve=True) if params else {}
    task = OmegaConf.select(config, "hydra.overrides.task", default=None) or []
    return grid_axes(param_lines(params, list(task)))


def sweep_widths(config: DictConfig) -> list[int]:
    """The input widths d of a sweep's jobs that are known before they run: the grid's
    `data.d` values (sweep file or command line) when it sweeps them, else the config's
    (`data.model.hidden_dim` for a SyntheticModel's data, `data=synthsaebench`)."""
    grid = sweep_grid(config)
    own = OmegaConf.select(config, "data.d", default=None)
    if own is None and OmegaConf.select(config, "data.model_path", default=None) is None:
        own = OmegaConf.select(config, "data.model.hidden_dim", default=None)
    values = grid.get("data.d") or grid.get("data.model.hidden_dim") or [own]
    widths = []
    for v in values:
        try:
            widths.append(int(float(str(v))))
        except ValueError:
            continue  # null, or an interpolation: unknown until the jobs run
    return sorted(set(widths))


def max_l0_fraction(config: DictConfig) -> float:
    """The sweep's dense limit, as a fraction of d: the sweeper's `max_l0_fraction`, the limit
    the analysis applies at the sweep's end (default `MAX_L0_FRACTION`)."""
    value = OmegaConf.select(config, "hydra.sweeper.max_l0_fraction", default=None)
    return MAX_L0_FRACTION if value is None else float(value)
