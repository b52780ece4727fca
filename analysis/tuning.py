"""Each variant at its own best value of the tuned knobs, chosen before any comparison.

A sweep that declares `tune` (its spec: sae_sweep/tuning.py) trains every variant at
every tuned value (at the reference L0; at its other targets, by default, only each variant's
chosen value and the shared one: sae_sweep/sweep/tuned_stages.py). Here, per variant, each
value's criterion is read: the criterion metric at the reference L0 `at_l0`, seed by seed,
from the grid's runs and those aimed at `at_l0` (`reference_evidence`), as the comparisons
read a matched L0 (`analysis.matched.values_at`), on the choosing seeds (`pilot_seeds`, or
every seed). The best mean wins (the metric's catalogue direction says which way). Every
comparison, verdict and frontier then sees only each variant's runs at its best value, on the
comparing seeds: with `seeds: pilot` the pilot seeds chose and are left out, so the
verdicts carry no selection bias; with `seeds: same` the same seeds chose and compare,
which favours every variant a little (the report says so).

How much tuning mattered, on the comparing seeds at `at_l0`:
- per variant, the criterion at its best value against the shared value (the value every
  variant would have used without tuning: `tune_criterion.shared`, else the value best on
  average over the variants), a paired log ratio with its 95% CI;
- per pair, the verdict at the shared value and with each at its best (one family,
  adjusted like the report's verdicts), so a variant that loses at a shared value but wins
  at its own best is named.

    spec = declared_tuning(runs)                # from the records: tune.*, tune_criterion.*
    t = select(labelled, spec, order, metric)   # the choice; t.compared: the runs compared
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import KnobNames
from analysis.matched import MAX_L0_FRACTION, sweep_targets, values_at
from analysis.paired import LogRatio, log_ratio
from analysis.variants import (
    LABEL,
    SEED,
    Variants,
    assign_variants,
    knob_columns,
    short_names,
    value_key,
)
from analysis.verdicts import Judged, Rules, adjust
from sae_sweep.evaluation.catalogue import higher_is_better, primary_order
from sae_sweep.tuning import CRITERION_FIELDS, TuneSpec, tune_spec

TUNE_PREFIX = "tune."
CRITERION_PREFIX = "tune_criterion."


def _first(col: pd.Series) -> Any:
    vals = [v for v in col if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return vals[0] if vals else None


def declared(runs: pd.DataFrame) -> tuple[dict[str, list], dict[str, Any]]:
    """The `tune` and `tune_criterion` the runs' sweep declared, from their records' knobs
    (`tune.<knob>`, `tune_criterion.<field>`), as plain mappings ({} and {}: none)."""
    tune: dict[str, list] = {}
    criterion: dict[str, Any] = {}
    for c in runs.columns:
        if c.startswith(TUNE_PREFIX) and _first(runs[c]) is not None:
            tune[c[len(TUNE_PREFIX) :]] = _every_value(runs[c])
        elif c.startswith(CRITERION_PREFIX) and (v := _first(runs[c])) is not None:
            name = c[len(CRITERION_PREFIX) :]
            if name.startswith("shared."):
                criterion.setdefault("shared", {})[name[len("shared.") :]] = v
            elif name in CRITERION_FIELDS and name != "shared":
                criterion[name] = list(v) if isinstance(v, tuple) else v
    return tune, criterion


def _every_value(col: pd.Series) -> list:
    """Every tuned value the runs' launches declared, in the order first declared: a sweep
    resumed with a longer list (a value added beyond the edge of the range) declares both."""
    out: list = []
    for v in col:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        for x in v if isinstance(v, tuple | list) else [v]:
            if x not in out:
                out.append(x)
    return out


def declared_tuning(runs: pd.DataFrame) -> TuneSpec | None:
    """The tuning the runs' sweep declared, or None. ValueError naming the fix when it is
    incomplete (no `at_l0` with several targets, say)."""
    return resolve_tuning(runs)


def parse_criterion(items: Iterable[str]) -> dict[str, Any]:
    """`--tune-criterion` items -> criterion fields: metric=fvu at_l0=16 seeds=pilot
    pilot_seeds=0,1 shared.train.lr=0.003."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = (x.strip() for x in item.partition("="))
        if not sep:
            raise ValueError(f"--tune-criterion {item!r}: write KEY=VALUE, e.g. at_l0=16")
        if key.startswith("shared."):
            out.setdefault("shared", {})[key[len("shared.") :]] = _number(value)
        elif key == "pilot_seeds":
            out[key] = [int(s) for s in value.split(",") if s]
        elif key == "at_l0":
            out[key] = _number(value)
        else:
            out[key] = value
    return out


def _number(s: str) -> Any:
    try:
        return float(s)
    except ValueError:
        return s


def resolve_tuning(
    runs: pd.DataFrame,
    knobs: list[str] | None = None,
    criterion: Mapping[str, Any] | None = None,
) -> TuneSpec | None:
    """The tuning to apply: the runs' declared one, its knobs replaced by `knobs` (their
    values those the runs have) and its criterion's fields by `criterion`; None: none."""
    tune, base = declared(runs)
    if knobs:
        missing = [k for k in knobs if k not in runs.columns]
        if missing:
            raise ValueError(f"--tune {' '.join(missing)}: not a knob of these runs (tune a "
                             "knob they vary, e.g. train.lr)")  # fmt: skip
        tune = {k: list(dict.fromkeys(runs[k].map(value_key))) for k in knobs}
    if criterion and not tune:
        raise ValueError("--tune-criterion without tuning: the runs declare no `tune`; name "
                         "the knobs to tune with --tune KNOB, e.g. --tune train.lr")  # fmt: skip
    base = {**base, **(criterion or {})}
    return tune_spec(tune, base, sweep_targets(runs)[0]) if tune else None


@dataclass(frozen=True)
class Tune:
    """What `sae-analysis` was asked to tune: knobs (None: the declared ones) and criterion
    fields over the declared ones (`resolve_tuning`)."""

    knobs: list[str] | None = None
    criterion: Mapping[str, Any] = field(default_factory=dict)

    def resolve(self, runs: pd.DataFrame) -> TuneSpec | None:
        return resolve_tuning(runs, self.knobs, self.criterion)


DECLARED = Tune()
"""The tuning the runs' sweep declared, as it declared it."""


def without_knobs(runs: pd.DataFrame, knobs: Iterable[str]) -> pd.DataFrame:
    """`runs` whose knob list leaves out `knobs`: variants are then labelled without them."""
    drop = set(knobs)
    out = runs.copy()
    out.attrs["knobs"] = KnobNames(k for k in knob_columns(runs) if k not in drop)
    return out


def tuned_keys(runs: pd.DataFrame, knobs: Iterable[str]) -> pd.Series:
    """Each run's tuned values, as a tuple of `value_key` strings."""
    knobs = list(knobs)
    cols = [runs[k].map(value_key) if k in runs else pd.Series("None", index=runs.index)
            for k in knobs]  # fmt: skip
    return pd.Series(list(zip(*cols, strict=True)), index=runs.index, dtype=object)


@dataclass
class Candidate:
    """One tuned value of a variant and its criterion on the choosing seeds."""

    key: tuple[str, ...]
    values: dict[int, float]
    """{seed: the criterion metric at the reference L0}."""

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values()))) if self.values else math.nan


@dataclass
class VariantTuning:
    variant: str
    candidates: list[Candidate]
    best: tuple[str, ...] | None
    """None: no value has a criterion (no run at the reference L0)."""
    change: LogRatio | None = None
    """ln(criterion at best / at the shared value) on the comparing seeds."""
    edges: list[str] = field(default_factory=list)
    """Per numeric knob whose best value is the largest or smallest one read: what lies
    beyond was not tried, so the best may be there (`edge_notes`)."""


@dataclass
class PairChange:
    """One pair at the reference L0: at the shared value, and each at its own best."""

    a: str
    b: str
    shared: Judged
    best: Judged


@dataclass
class Tuning:
    spec: TuneSpec
    metric: str
    variants: dict[str, VariantTuning]
    shared: tuple[str, ...] | None
    """The value every variant would share without tuning (None: no value all have)."""
    compared: pd.DataFrame
    """The runs the comparisons use: each variant's runs at its best value, comparing seeds."""
    pairs: list[PairChange] = field(default_factory=list)
    seeds_choose: list[int] = field(default_factory=list)
    seeds_compare: list[int] = field(default_factory=list)
    at_shared: pd.DataFrame | None = None
    """Every variant's runs at the shared value, comparing seeds (None without one): the
    comparisons as they would be without tuning."""

    def text(self, key: tuple[str, ...] | None) -> str:
        """A tuned value as the report writes it: '0.003', or 'lr=0.003, batch_size=256'."""
        if key is None:
            return "none"
        if len(key) == 1:
            return key[0]
        short = short_names(list(self.spec.knobs))
        return ", ".join(f"{short[k]}={v}" for k, v in zip(self.spec.knobs, key, strict=True))

    @property
    def knob_text(self) -> str:
        return " x ".join(self.spec.knobs)

    def chosen(self, variant: str) -> str:
        v = self.variants.get(variant)
        return self.text(v.best) if v is not None else ""


def _seeds(runs: pd.DataFrame) -> pd.Series:
    s = runs[SEED] if SEED in runs else pd.Series(0, index=runs.index)
    return pd.to_numeric(s, errors="coerce").fillna(0).astype(int)


def _declared_order(spec: TuneSpec) -> list[tuple[str, ...]]:
    return list(itertools.product(*([value_key(v) for v in vs] for vs in spec.values.values())))


def _better(h: bool, x: float, y: float) -> bool:
    return x > y if h else x < y


def select(
    runs: pd.DataFrame,
    spec: TuneSpec,
    order: list[str],
    metric: str,
    rules: Rules | None = None,
    max_l0_fraction: float = MAX_L0_FRACTION,
) -> Tuning:
    """Each variant's best tuned value by the criterion, and the runs compared.

    runs: labelled without the tuned knobs (`without_knobs` before `assign_variants`).
    metric: the criterion's metric when the spec names none (the report's primary).
    """
    rules = rules or Rules()
    metric = spec.metric or metric
    if metric not in runs.columns:
        raise ValueError(f"the tuning criterion's metric {metric!r} is not in these runs: set "
                         "--tune-criterion metric=NAME to one they have, e.g. fvu")  # fmt: skip
    h = higher_is_better(metric)
    targets, tol = sweep_targets(runs)
    keys = tuned_keys(runs, spec.knobs)
    seeds = _seeds(runs)
    pilot = set(spec.pilot_seeds) if spec.seeds == "pilot" else set()
    choose = seeds.isin(pilot) if pilot else pd.Series(True, index=runs.index)
    compare = ~seeds.isin(pilot) if pilot else pd.Series(True, index=runs.index)
    rank = {k: i for i, k in enumerate(_declared_order(spec))}

    evidence = reference_evidence(runs, spec.at_l0)

    def read(v: str, key: tuple[str, ...] | None, which: pd.Series) -> dict[int, float]:
        if key is None:
            return {}
        sub = runs[(runs[LABEL] == v) & (keys == key) & which & evidence]
        return values_at(sub, metric, v, spec.at_l0, max_l0_fraction, targets, tol)

    variants: dict[str, VariantTuning] = {}
    for v in order:
        have = sorted(set(keys[runs[LABEL] == v]), key=lambda k: (rank.get(k, len(rank)), k))
        cands = [Candidate(k, read(v, k, choose)) for k in have]
        best = None
        for c in cands:
            if c.values and (best is None or _better(h, c.mean, best.mean)):
                best = c
        variants[v] = VariantTuning(v, cands, best.key if best else None)
        variants[v].edges = edge_notes(spec.knobs, cands, variants[v].best)
    shared = _shared(spec, variants, h)
    chosen = pd.Series([variants[lab].best if lab in variants else None for lab in runs[LABEL]],
                       index=runs.index, dtype=object)  # fmt: skip
    compared = runs[(keys == chosen) & compare]
    compared.attrs = dict(runs.attrs)
    t = Tuning(spec, metric, variants, shared, compared, seeds_choose=sorted(set(seeds[choose])),
               seeds_compare=sorted(set(seeds[compare])))  # fmt: skip
    if shared is not None:
        t.at_shared = runs[keys.map(lambda k: k == shared).astype(bool) & compare]
        t.at_shared.attrs = dict(runs.attrs)
    at_best = {v: read(v, vt.best, compare) for v, vt in variants.items()}
    at_shared = {v: read(v, shared, compare) for v in variants}
    margin = rules.margin(metric)
    for v, vt in variants.items():
        if vt.best is not None and shared is not None:
            vt.change = log_ratio(*_paired(at_shared[v], at_best[v]), margin)
    tested = [v for v in order if variants[v].best is not None]
    for a, b in itertools.combinations(tested, 2):
        t.pairs.append(PairChange(
            a, b,
            Judged(log_ratio(*_paired(at_shared[a], at_shared[b]), margin), h),
            Judged(log_ratio(*_paired(at_best[a], at_best[b]), margin), h),
        ))  # fmt: skip
    adjust([j for p in t.pairs for j in (p.shared, p.best)], rules.multiplicity)
    return t


def edge_notes(
    knobs: tuple[str, ...], candidates: list[Candidate], best: tuple[str, ...] | None
) -> list[str]:
    """'train.lr 0.01 is the largest value tried' for each numeric knob whose best value is
    an end of the values read at the reference L0: the best may lie beyond, untried."""
    if best is None:
        return []
    out = []
    for i, knob in enumerate(knobs):
        tried = {c.key[i] for c in candidates if c.values}
        numbers = {k: _as_number(k) for k in tried}
        if len(tried) < 2 or any(x is None for x in numbers.values()):
            continue
        x = numbers[best[i]]
        if x == max(numbers.values()):
            out.append(f"{knob} {best[i]} is the largest value tried")
        elif x == min(numbers.values()):
            out.append(f"{knob} {best[i]} is the smallest value tried")
    return out


def _as_number(text: str) -> float | None:
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def reference_evidence(runs: pd.DataFrame, at_l0: float) -> pd.Series:
    """The runs the criterion reads at the reference L0: those of the grid and those aimed at
    `at_l0` (their `l0_target`), not the rounds aimed at other targets. Every tuned value is
    then judged on the same kind of evidence, and a sweep that trains the other targets only
    at the chosen values (`other_targets: chosen`) chooses, before those rounds, exactly what
    this reading chooses at the end: their runs would otherwise add points near `at_l0` to
    the chosen value's curves alone."""
    if "l0_target" not in runs:
        return pd.Series(True, index=runs.index)
    aimed = pd.to_numeric(runs["l0_target"], errors="coerce")
    return aimed.isna() | np.isclose(aimed.fillna(-1.0), at_l0)


def _paired(a: dict[int, float], b: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    s = sorted(set(a) & set(b))
    return np.array([a[x] for x in s], dtype=float), np.array([b[x] for x in s], dtype=float)


def _shared(spec: TuneSpec, variants: dict[str, VariantTuning], h: bool) -> tuple | None:
    """The declared shared value, else the value whose criterion is best on average (the mean
    log criterion over the variants) among the values every tuned variant has."""
    if spec.shared:
        return tuple(value_key(spec.shared.get(k)) for k in spec.knobs)
    tuned = [vt for vt in variants.values() if vt.best is not None]
    if not tuned:
        return None
    means: dict[tuple, list[float]] = {}
    for vt in tuned:
        for c in vt.candidates:
            if c.values and c.mean > 0:
                means.setdefault(c.key, []).append(math.log(c.mean))
    common = {k: float(np.mean(v)) for k, v in means.items() if len(v) == len(tuned)}
    best = None
    for k, m in common.items():
        if best is None or _better(h, m, common[best]):
            best = k
    return best


def primary_present(runs: pd.DataFrame) -> str:
    """The report's primary metric among those the runs have a value of (the criterion when
    the spec names none): loss recovered on a language model, else FVU."""
    for m in primary_order():
        if m in runs and pd.to_numeric(runs[m], errors="coerce").notna().any():
            return m
    return "fvu"


def label_tuned(
    runs: pd.DataFrame,
    spec: TuneSpec | None,
    rules: Rules | None = None,
    max_l0_fraction: float = MAX_L0_FRACTION,
) -> tuple[pd.DataFrame, Variants, Tuning | None]:
    """(the runs with their variant labels, the variants, the tuning): with a spec, variants
    are labelled without the tuned knobs and each is chosen its best value (`select`); the
    comparisons then read `Tuning.compared`. Without one: `assign_variants` and None."""
    if spec is None:
        return (*assign_variants(runs), None)
    labelled, variants = assign_variants(without_knobs(runs, spec.knobs))
    t = select(labelled, spec, variants.order, primary_present(labelled), rules, max_l0_fraction)
    return labelled, variants, t
