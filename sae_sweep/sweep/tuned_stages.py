"""A tuned target sweep's rounds in two stages (`tune_criterion.other_targets: chosen`).

A tuned sweep compares each variant at its best value, chosen at one reference L0 (`at_l0`);
at the other targets the comparisons read only each variant's chosen value, and the shared
one (the baseline of "what tuning changed"). Training every value at every target would pay
for rounds no comparison reads. So:

1. the reference stage: every value's chains at `at_l0`, and the chains of the declared shared
   value at every target (they are read whatever is chosen, and run alongside);
2. the choice: the analysis's own reading (`analysis.tuning.label_tuned` on the sweep folder),
   which reads the criterion from the grid's runs and the runs aimed at `at_l0` only
   (`reference_evidence`), so the report at the end chooses the same values;
3. the band stage: the other targets' chains of each variant's chosen value (and of the shared
   one, when it was not declared and is only known now).

A variant placed by control (`l0_placement: control`) launched every target with the grid; its
chains only read their runs, and stay in the first stage. Both stages replay on a resume: the
reference stage's runs are on disk, so the choice, and the band's proposals, come out the same.

    if staged(spec, targets):
        first = reference_stage(every, spec, plan, choose(sweep_dir, spec, grid_runs))
        ...                                           # the first stage's rounds
        second = band_stage(every, first, choose(sweep_dir, spec, runs))
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..tuning import TuneSpec
from .planning import chains

log = logging.getLogger("sae_sweep")

Chain = tuple[str, float]
"""(the plan's variant of a chain, its target L0)."""
Key = tuple[str, ...]
"""A tuned value as the analysis keys it (`analysis.tuning.tuned_keys`)."""


def staged(spec: TuneSpec | None, targets: Sequence[float]) -> bool:
    """Whether a sweep's rounds run in two stages: tuned, `other_targets: chosen`, and a target
    besides the reference one."""
    return (
        spec is not None
        and spec.other_targets == "chosen"
        and any(not math.isclose(t, spec.at_l0) for t in targets)
    )


@dataclass
class Choice:
    """What the analysis reads of the sweep folder: every chain's variant label and tuned value
    (by its runs' folders), each label's chosen value, and the shared value."""

    identity: dict[str, tuple[str, Key]] = field(default_factory=dict)
    best: dict[str, Key | None] = field(default_factory=dict)
    shared: Key | None = None
    texts: dict[str, str] = field(default_factory=dict)
    """{label: its chosen value as the report writes it}."""
    edges: dict[str, list[str]] = field(default_factory=dict)
    """{label: its knobs whose chosen value is an end of the range tried}."""

    def value_of(self, variant: str) -> Key | None:
        return self.identity[variant][1] if variant in self.identity else None

    def keeps(self, variant: str) -> bool:
        """Whether a chain's value is read at the other targets: its label's chosen value or
        the shared one. A chain the analysis cannot place (no finished run) is kept: nothing
        is known against it."""
        if variant not in self.identity:
            return True
        label, key = self.identity[variant]
        return key == self.best.get(label) or key == self.shared


def reference_stage(
    every: Sequence[Chain], spec: TuneSpec, plan: chains.TargetPlan, choice: Choice
) -> list[Chain]:
    """The first stage: every chain at `at_l0`, the declared shared value's chains at every
    target, and every chain of a variant placed in one round (its jobs ran with the grid)."""
    shared = choice.shared if spec.shared else None

    def first(v: str, t: float) -> bool:
        at_reference = math.isclose(t, spec.at_l0)
        is_shared = shared is not None and choice.value_of(v) == shared
        return at_reference or is_shared or v in plan.one_round

    return [(v, t) for v, t in every if first(v, t)]


def band_stage(every: Sequence[Chain], done: Sequence[Chain], choice: Choice) -> list[Chain]:
    """The second stage: the chains not run yet whose value the comparisons read."""
    ran = set(done)
    return [(v, t) for v, t in every if (v, t) not in ran and choice.keeps(v)]


def choose(sweep_dir: Path, spec: TuneSpec, runs: Sequence[Mapping[str, Any]]) -> Choice:
    """Each variant's chosen value, read from the sweep folder as the report will read it.
    runs: the chains' run records (`chains.match_runs`), whose folders name each chain's label
    and tuned value in the analysis's table. An analysis that cannot choose (no run finished,
    say) is logged and chooses nothing: every chain is then kept."""
    from analysis.load import load_runs  # the sweep imports the analysis, never the reverse
    from analysis.tuning import label_tuned, tuned_keys
    from analysis.variants import LABEL

    try:
        table = load_runs(sweep_dir)
        labelled, _, tuning = label_tuned(table, spec)
    except Exception as exc:  # noqa: BLE001 -- keeping every value is always correct
        log.warning("tuning: the reference target could not choose (%s); every value goes on "
                    "to the other targets", exc)  # fmt: skip
        return Choice()
    keys = tuned_keys(labelled, spec.knobs)
    by_folder = {
        os.path.relpath(str(path), sweep_dir): (str(label), tuple(key))
        for path, label, key in zip(labelled["path"], labelled[LABEL], keys, strict=True)
        if isinstance(path, str)
    }
    identity: dict[str, tuple[str, Key]] = {}
    for r in runs:
        where = by_folder.get(os.path.normpath(str(r.get("dir"))))
        if where is not None:
            identity.setdefault(str(r["variant"]), where)
    best = {label: vt.best for label, vt in tuning.variants.items()} if tuning else {}
    texts = {label: tuning.chosen(label) for label in best} if tuning else {}
    edges = {label: vt.edges for label, vt in tuning.variants.items() if vt.edges} if tuning \
        else {}  # fmt: skip
    return Choice(identity, best, tuning.shared if tuning else None, texts, edges)


def merge_runs(*groups: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Run records of several stages or chains, each once (a chain's outcome repeats the
    grid's runs of its variant, and runs another chain launched at the same lambda)."""
    out, seen = [], set()
    for group in groups:
        for r in group:
            key = (r.get("variant"), r.get("lam"), r.get("seed"), r.get("dir"))
            if key not in seen:
                seen.add(key)
                out.append(dict(r))
    return out
