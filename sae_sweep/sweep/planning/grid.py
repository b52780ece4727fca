"""A sweep's grid: the sweep file's `hydra.sweeper.params` and the command line, expanded into
jobs as Hydra's basic sweeper does (every combination, keys in order, the last key fastest).

    axes = grid_axes(["variant=a,b", "lambda_multiplier=1,2", "seed=0"])
    jobs = grid_jobs(axes)          # [["variant=a", "lambda_multiplier=1", "seed=0"], ...]
    batches(jobs, max_batch_size)   # launched one after another (None: all at once)
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser


def grid_axes(lines: Sequence[str], config_loader=None) -> dict[str, list[str]]:
    """{key: values} of override lines (a key set twice keeps its last line: the command
    line wins over the sweep file). `config_loader` lists a config group's options for
    `glob(...)` sweeps."""
    parser = OverridesParser.create(config_loader=config_loader)
    axes: dict[str, list[str]] = OrderedDict()
    for o in parser.parse_overrides(list(lines)):
        key = o.get_key_element()
        if not o.is_sweep_override():
            axes[key] = [o.get_value_element_as_str()]
        elif o.is_discrete_sweep():
            axes[key] = [str(v) for v in o.sweep_string_iterator()]
        else:
            raise ValueError(
                f"{key} sweeps an interval ({o.input_line}); sae-sweep's grid takes lists of "
                f"values: e.g. {key}=0.1,0.2,0.4 or {key}='range(1,4)'"
            )
    return axes


def param_lines(params: Mapping[str, str] | None, arguments: Sequence[str]) -> list[str]:
    """The override lines of a sweep: the sweep file's `hydra.sweeper.params`, then the
    command line."""
    return [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)


def grid_jobs(axes: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Every combination of the axes' values, as each job's override lines."""
    keys = list(axes)
    return [[f"{k}={v}" for k, v in zip(keys, values, strict=True)]
            for values in itertools.product(*axes.values())]  # fmt: skip


def batches(jobs: list[list[str]], max_batch_size: int | None) -> list[list[list[str]]]:
    """The jobs in launches of at most `max_batch_size` (None or -1: one launch)."""
    if max_batch_size is None or max_batch_size == -1:
        return [jobs]
    if max_batch_size <= 0:
        raise ValueError(f"hydra.sweeper.max_batch_size={max_batch_size} must be > 0 (or null)")
    return [jobs[i : i + max_batch_size] for i in range(0, len(jobs), max_batch_size)]


def covering_jobs(batch: list[list[str]]) -> list[int]:
    """Indices of jobs (the first always) that together hold every kind of override value of
    the batch: each non-numeric override, and per key one integer and one real number.

    Composing these catches what composing all would: an unknown key, a group option that does
    not exist, a value of the wrong type, a key the chosen group lacks (every job holds every
    swept key, so each group option is composed with all of them). Numbers of one kind for one
    key compose alike, so they count once: a target-L0 round's jobs each carry a lambda of
    their own, and composing all of them kept both workers idle about 2 s a round. Composing a
    job took 0.3 s; a quick sweep's 84 jobs kept both workers idle for 24 s, a 1000-job grid
    for 5 min.
    """
    seen: set[str] = set()
    chosen = []
    for i, overrides in enumerate(batch):
        kinds = {_value_kind(o) for o in overrides}
        if i == 0 or not seen.issuperset(kinds):
            chosen.append(i)
            seen.update(kinds)
    return chosen


def _value_kind(override: str) -> str:
    """`key=<int>` or `key=<real>` for a numeric value, else the override itself."""
    key, sep, value = override.partition("=")
    for kind, parse in (("int", int), ("real", float)):
        try:
            parse(value)
        except ValueError:
            continue
        return f"{key}=<{kind}>" if sep else override
    return override
