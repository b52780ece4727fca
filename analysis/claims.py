"""Claims about variants, written as data (a YAML file of comparisons), tested on committed
sweeps: one verdict row per claim, sweep, metric and compared pair.

A claims file (docs/results/claims.yaml is the results page's) names the data sets and
their metrics, the kinds of sweep, and per claim: its statement, the sweep kind it is
tested on (on every data set that has that sweep), its metrics, the verdicts' L0 band, and
its comparisons. A comparison is variant `b` against variant `a` at matched L0 (the target
L0s of a target-L0 sweep, interpolated L0s otherwise), seed-paired: the log ratio ln(b/a)
with its 95% CI and a verdict per matched L0, and one summary over the declared L0 band
(`analysis.matched.compare_matched`); and what the claim expects of it: `b` (b better),
`a` (a better), `equivalent` (within the margin; `equal` is read as `equivalent`),
`no_worse` (one-sided: b no worse than a by more than the margin), or `context` (no
expectation). The margins (relative, per metric) are the file's `margins`, overridden by a
claim's `margins` and by a comparison's `margin`; `band` is the summaries' L0 band and
`multiplicity` the adjustment within each claim, a family (`analysis.verdicts`). A variant
is named by its preset, and where a sweep varies on/off knobs within one preset (the recipe
sweep), by those switches as well: `{variant: gated_original, init: on, warm-up: off}`.

A sweep is a folder <data set>_<sweep kind>/ with the runs table `runs.csv` (one row per
SAE, as docs/results/collect.py writes it) and, for a target-L0 sweep, `targets.json`.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis.effects import fmt, l0_range
from analysis.frontier import finished
from analysis.matched import MAX_L0_FRACTION, PairResult, compare_matched, sweep_targets
from analysis.model import Analysis, analyse
from analysis.tuning import Tuning, declared_tuning, label_tuned
from analysis.variants import Variants
from analysis.verdicts import Rules, adjust, pct_text
from sae_sweep.evaluation.catalogue import METRICS
from sae_sweep.record import layout

EXPECTATIONS = ("a", "b", "equivalent", "no_worse", "context")
ALIASES = {"equal": "equivalent"}
"""Older names of an expectation."""
HEADLINE = "headline"
"""In a claim's metrics: the headline metrics of each data set."""
DERIVED_METRICS = {"shrinkage_gap": "|1 - shrinkage gamma| (0 = no shrinkage)"}
"""Metrics computed from a runs table (`read_runs`), with their titles; lower is better."""


class ClaimsError(ValueError):
    """A claims file that cannot be read as claims; the message names the entry."""


@dataclass(frozen=True)
class DataSet:
    key: str
    """The folder prefix: <key>_<sweep kind>/."""
    title: str
    metrics: tuple[str, ...]
    """Compared metrics, in the order the evidence shows them."""
    headline: tuple[str, ...]
    """The verdict table's metrics."""
    data_seeds: bool = False
    """Each seed also draws its own data (`data.seed`, synthetic data): the scale table
    counts them."""
    claims: tuple[str, ...] | None = None
    """The keys of the claims tested on it (None: every claim whose sweep it has)."""

    def tests(self, claim_key: str) -> bool:
        return self.claims is None or claim_key in self.claims


@dataclass(frozen=True)
class Selection:
    """One variant of a sweep: its preset, and the on/off knobs that pick it among the
    variants of that preset."""

    variant: str
    switches: tuple[tuple[str, str, bool], ...] = ()
    """(short name, knob, on) per switch, in the order written."""

    @property
    def short(self) -> str:
        """The selection in words: "gated_original, init on, warm-up off"."""
        return self.variant + "".join(
            f", {name} {'on' if on else 'off'}" for name, _, on in self.switches
        )

    def matches(self, variant: str, knobs: dict[str, Any]) -> bool:
        """True for the variant named `variant` whose varying knobs are `knobs`."""
        return variant == self.variant and all(
            _on(knobs.get(knob)) == on for _, knob, on in self.switches
        )


def _on(v: Any) -> bool | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        return v.lower() not in ("false", "0", "none")
    return bool(v)


@dataclass(frozen=True)
class Comparison:
    a: Selection
    b: Selection
    expect: str
    """'b' (b better), 'a' (a better), 'equivalent', 'no_worse' (one-sided: b no worse than
    a by more than the margin), or 'context' (no expectation)."""
    margin: float | None = None
    """Relative, overriding the claim's margin for every metric of this comparison."""

    @property
    def one_sided(self) -> bool:
        return self.expect == "no_worse"


@dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    sweeps: tuple[str, ...]
    """The sweep kinds it is tested on (`sweep:` in the file, one kind or a list). With
    several, a sweep that lacks a comparison's variants has no row for it: the standard
    SAEs of claim (e), say, are in the architectures sweeps and in the d = 128 penalty
    sweep, not in the d = 64 one."""
    comparisons: tuple[Comparison, ...]
    metrics: tuple[str, ...] = (HEADLINE,)
    """The verdict table's metrics; HEADLINE stands for each data set's headline metrics."""
    max_l0_fraction: float = MAX_L0_FRACTION
    """The L0 band of its verdicts: L0 <= this x d (the sparse regime)."""
    other_metrics: bool = True
    """The evidence also shows the data set's other metrics, as context."""
    rules: Rules = Rules()
    """Margins (the file's, overridden by the claim's), band and multiplicity."""
    why: str = ""
    """Why its margins are the right size (shown with its evidence)."""

    def metrics_of(self, data: DataSet) -> list[str]:
        """The claim's metrics on one data set."""
        return [h for m in self.metrics for h in (data.headline if m == HEADLINE else (m,))]


@dataclass(frozen=True)
class Claims:
    """A claims file, read and checked."""

    data_sets: tuple[DataSet, ...]
    sweeps: tuple[str, ...]
    """The sweep kinds, in the order the page lists them."""
    claims: tuple[Claim, ...]
    reference: str | None = None
    """The variant a sweep report's relative plots divide by, where the sweep has it."""
    rules: Rules = Rules()
    """The file's margins, band and multiplicity (the sweep reports use them)."""


def load_claims(path: Path) -> Claims:
    """Read a claims file; a malformed entry raises `ClaimsError` naming it."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ClaimsError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ClaimsError(f"{path}: expected a mapping with data_sets, sweeps and claims")
    _keys(raw, {"data_sets", "sweeps", "switches", "claims", "reference", "max_l0_fraction",
                "band", "margins", "multiplicity"}, {"data_sets", "sweeps", "claims"},
          str(path))  # fmt: skip
    data_sets = tuple(
        _data_set(d, f"{path}: data_sets[{i}]") for i, d in enumerate(raw["data_sets"])
    )
    sweeps = tuple(str(s) for s in raw["sweeps"])
    switches = {str(k): str(v) for k, v in (raw.get("switches") or {}).items()}
    band = float(raw.get("max_l0_fraction", MAX_L0_FRACTION))
    known = {m for d in data_sets for m in d.metrics} | {HEADLINE}
    rules = _rules(raw, Rules(), str(path))
    claims = tuple(
        _claim(c, f"{path}: claims[{i}]", sweeps, switches, known, band, rules)
        for i, c in enumerate(raw["claims"])
    )
    keys = [c.key for c in claims]
    if len(set(keys)) != len(keys):
        raise ClaimsError(f"{path}: claim keys must be unique, got {keys}")
    return Claims(data_sets, sweeps, claims, raw.get("reference"), rules)


def _keys(raw: dict, allowed: set[str], required: set[str], where: str) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise ClaimsError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    missing = required - set(raw)
    if missing:
        raise ClaimsError(f"{where}: missing {sorted(missing)}")


def _data_set(raw: dict, where: str) -> DataSet:
    required = {"key", "title", "metrics", "headline"}
    _keys(raw, required | {"data_seeds", "claims"}, required, where)
    metrics, headline = tuple(raw["metrics"]), tuple(raw["headline"])
    if not set(headline) <= set(metrics):
        raise ClaimsError(f"{where}: headline {list(headline)} must be among its metrics")
    unknown = [m for m in metrics if m not in METRICS and m not in DERIVED_METRICS]
    if unknown:
        raise ClaimsError(
            f"{where}: unknown metrics {unknown}; known: {sorted({*METRICS, *DERIVED_METRICS})}"
        )
    claims = raw.get("claims")
    return DataSet(str(raw["key"]), str(raw["title"]), metrics, headline,
                   bool(raw.get("data_seeds")),
                   tuple(str(c) for c in claims) if claims is not None else None)  # fmt: skip


def _rules(raw: dict, base: Rules, where: str) -> Rules:
    """The verdict rules of a file or a claim: its band, margins and multiplicity over `base`."""
    margins = raw.get("margins") or {}
    if not isinstance(margins, dict):
        raise ClaimsError(f"{where}: margins must map metrics to relative margins, e.g. fvu: 0.05")
    try:
        return Rules(
            {**base.margins, **{str(k): v for k, v in margins.items()}},
            tuple(raw.get("band", base.band)),
            str(raw.get("multiplicity", base.multiplicity)),
        )
    except ValueError as e:
        raise ClaimsError(f"{where}: {e}") from e


def _claim(
    raw: dict,
    where: str,
    sweeps: tuple[str, ...],
    switches: dict,
    known: set,
    band: float,
    rules: Rules,
) -> Claim:
    allowed = {"key", "statement", "sweep", "comparisons", "metrics", "max_l0_fraction",
               "other_metrics", "margins", "why"}  # fmt: skip
    _keys(raw, allowed, {"key", "statement", "sweep", "comparisons"}, where)
    where = f"{where} ({raw['key']})"
    kinds = tuple(str(k) for k in (raw["sweep"] if isinstance(raw["sweep"], list)
                                   else [raw["sweep"]]))  # fmt: skip
    unknown = [k for k in kinds if k not in sweeps]
    if unknown or not kinds:
        named = ", ".join(map(repr, unknown)) or repr(raw["sweep"])
        raise ClaimsError(f"{where}: sweep {named} is not one of {list(sweeps)}")
    metrics = tuple(raw.get("metrics", (HEADLINE,)))
    if not set(metrics) <= known:
        raise ClaimsError(
            f"{where}: metrics {sorted(set(metrics) - known)} are not a data set's metrics "
            f"(write {HEADLINE!r} for each data set's headline metrics)"
        )
    comparisons = tuple(
        _comparison(c, f"{where}: comparisons[{i}]", switches)
        for i, c in enumerate(raw["comparisons"])
    )
    if not comparisons:
        raise ClaimsError(f"{where}: a claim needs at least one comparison")
    return Claim(
        str(raw["key"]),
        str(raw["statement"]),
        kinds,
        comparisons,
        metrics,
        float(raw.get("max_l0_fraction", band)),
        bool(raw.get("other_metrics", True)),
        _rules(raw, rules, where),
        str(raw.get("why", "")).strip(),
    )


def _comparison(raw: dict, where: str, switches: dict) -> Comparison:
    _keys(raw, {"a", "b", "expect", "margin"}, {"a", "b", "expect"}, where)
    expect = ALIASES.get(raw["expect"], raw["expect"])
    if expect not in EXPECTATIONS:
        raise ClaimsError(f"{where}: expect {raw['expect']!r} is not one of {EXPECTATIONS}")
    margin = raw.get("margin")
    if margin is not None and not (isinstance(margin, int | float) and 0 < margin < 1):
        raise ClaimsError(f"{where}: margin {margin!r}: give a relative margin in (0, 1)")
    return Comparison(
        _selection(raw["a"], f"{where}.a", switches),
        _selection(raw["b"], f"{where}.b", switches),
        expect,
        None if margin is None else float(margin),
    )


def _selection(raw: str | dict, where: str, switches: dict) -> Selection:
    if isinstance(raw, str):
        return Selection(raw)
    if not isinstance(raw, dict) or "variant" not in raw:
        raise ClaimsError(f"{where}: a variant name, or a mapping with 'variant' and switches")
    out = []
    for name, value in raw.items():
        if name == "variant":
            continue
        if name not in switches:
            raise ClaimsError(f"{where}: {name!r} is not a switch (switches: {sorted(switches)})")
        on = {"on": True, "off": False}.get(value, value)  # YAML reads on/off as booleans
        if not isinstance(on, bool):
            raise ClaimsError(f"{where}: {name} must be on or off, got {value!r}")
        out.append((name, switches[name], on))
    return Selection(str(raw["variant"]), tuple(out))


# ---------------------------------------------------------------------------------------------
# Sweeps


def read_runs(folder: Path) -> pd.DataFrame:
    """A sweep's committed runs table, with tuples and lists restored from their text and
    the derived metrics (`DERIVED_METRICS`) added."""
    raw = pd.read_csv(folder / "runs.csv", low_memory=False)
    # one frame built at once: assigning column after column fragments it (pandas warns)
    runs = pd.DataFrame(
        {
            c: col if pd.api.types.is_numeric_dtype(col) else col.map(_literal)
            for c, col in raw.items()
        }
    )
    if "shrinkage" in runs:
        runs["shrinkage_gap"] = (1 - pd.to_numeric(runs["shrinkage"], errors="coerce")).abs()
    return runs


def _literal(v):
    if isinstance(v, str) and v[:1] in "[(" and v[-1:] in "])":
        try:
            return tuple(ast.literal_eval(v))
        except (ValueError, SyntaxError):
            return v
    return v


def read_targets(folder: Path) -> dict | None:
    p = folder / layout.TARGETS
    return json.loads(p.read_text()) if p.exists() else None


@dataclass(eq=False)  # identity: a sweep is one folder
class Sweep:
    data: DataSet
    kind: str
    folder: Path
    runs: pd.DataFrame
    """The runs table, with `variant_label`."""
    variants: Variants
    targets: dict | None
    tuned: pd.DataFrame | None = None
    """A sweep that declared `tune`: each variant's runs at its best value, on the comparing
    seeds (`analysis.tuning`); None: no tuning."""
    untuned: pd.DataFrame | None = None
    """A tuned sweep: every variant's runs at the shared value instead (what the comparisons
    would read without tuning); None: no tuning or no shared value."""
    tuning: Tuning | None = None

    @property
    def compared(self) -> pd.DataFrame:
        """The runs the claims compare: every run, or with tuning each variant's at its best."""
        return self.runs if self.tuned is None else self.tuned

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def metrics(self) -> list[str]:
        """The data set's metrics that some finished run of this sweep has."""
        done = finished(self.runs)
        return [m for m in self.data.metrics if m in done and done[m].notna().any()]

    def label(self, select: Selection) -> str | None:
        """The variant label `select` means, if this sweep has it."""
        for label in self.variants.order:
            name = label.split(" (")[0]
            if select.matches(name, self.variants.settings.get(label, {})):
                return label
        return None

    def compare(
        self,
        a: str,
        b: str,
        metric: str,
        max_l0_fraction: float,
        rules: Rules,
        one_sided: bool = False,
        margin: float | None = None,
    ) -> PairResult:
        """b against a at matched L0 (the sweep's targets, else interpolated L0s)."""
        targets, tol = sweep_targets(self.runs)
        return compare_matched(self.compared, metric, a, b, max_l0_fraction, targets, tol, rules,
                               one_sided, margin)  # fmt: skip

    def analyse(self, reference: str | None, rules: Rules | None = None) -> Analysis:
        """The whole analysis of the sweep's own report (every pair, every metric), relative
        to `reference` where the sweep has that variant."""
        have = set(self.runs.get("variant", []))
        return analyse(
            self.runs,
            metrics=self.metrics,
            reference=reference if reference in have else None,
            rules=rules,
        )


def load_sweeps(root: Path, claims: Claims) -> list[Sweep]:
    """Every sweep folder <data set>_<kind>/ under root that has a runs table."""
    sweeps = []
    for data in claims.data_sets:
        for kind in claims.sweeps:
            folder = root / f"{data.key}_{kind}"
            if not (folder / "runs.csv").exists():
                continue
            runs = read_runs(folder)
            runs, variants, tuning = label_tuned(runs, declared_tuning(runs))
            tuned = tuning.compared if tuning is not None else None
            untuned = tuning.at_shared if tuning is not None else None
            sweeps.append(Sweep(data, kind, folder, runs, variants, read_targets(folder), tuned,
                                untuned, tuning))  # fmt: skip
    return sweeps


# ---------------------------------------------------------------------------------------------
# Verdicts


@dataclass
class Verdict:
    """One comparison of a claim, on one sweep and metric."""

    claim: Claim
    sweep: Sweep
    metric: str
    result: PairResult | None
    """None: the sweep lacks one of the two variants."""
    expect: str

    def per_l0(self) -> str:
        """Each matched L0's verdict, shortly: "4: b better; 8: equivalent; 32: out (dense)"."""
        if self.result is None:
            return "-"
        parts = [(p.l0, p.judged.kind()) for p in self.result.points]
        out = [f"{fmt(l0)}: {kind}" for l0, kind in parts]
        out += [f"{fmt(t)}: out (dense run)" for t, _ in self.result.excluded]
        return "; ".join(out) or "-"

    def words(self) -> str:
        """The summary verdict over the band, adjusted within the claim."""
        if self.result is None:
            return "not run"
        if self.result.summary is not None and self.result.summary.effect.n == 0:
            return "no seed reached a matched L0 in both variants: not compared"
        return self.result.headline

    def answer(self) -> str:
        """Does the summary verdict say what the claim expects?"""
        r = self.result
        if r is None or r.summary is None or not r.summary.testable or self.expect == "context":
            return ""
        kind = r.summary.kind()
        if self.expect in ("a", "b"):
            other = "a" if self.expect == "b" else "b"
            if kind == f"{self.expect} better":
                return "holds"
            if kind == f"{other} better":
                return "contradicted"
            return f"not shown ({kind})"
        if self.expect == "equivalent":
            if kind == "equivalent":
                return "holds"
            return "does not hold" if kind.endswith("better") else "not settled"
        # no_worse
        if kind in ("no worse", "b better"):
            return "holds"
        return "does not hold" if kind == "a better" else "not settled"

    def band(self) -> str:
        """The summary's L0 band and the matched L0s inside it."""
        if self.result is None:
            return "-"
        lo, hi = self.result.band
        pts = ", ".join(fmt(x) for x in self.result.band_points) or "none"
        return f"{l0_range(lo, hi)} ({pts})"

    def margin(self) -> str:
        if self.result is None:
            return "-"
        m = pct_text(self.result.margin)
        return f"{m}, one-sided" if self.result.one_sided else f"±{m}"

    def difference(self) -> str:
        """The summary's % change exp(mean ln(b/a)) - 1 with its 95% CI."""
        r = self.result
        if r is None or r.summary is None or r.summary.effect.n == 0:
            return "-"
        e = r.summary.effect
        if e.n < 2 or not math.isfinite(e.half_width):
            return f"{e.pct():+.2f}%"
        lo, hi = e.ci
        return f"{e.pct():+.2f}% [{lo:+.2f}, {hi:+.2f}]"


def verdict(claim: Claim, sweep: Sweep, c: Comparison, metric: str) -> Verdict:
    """One comparison of a claim on one sweep and metric."""
    a, b = sweep.label(c.a), sweep.label(c.b)
    result = None
    if a is not None and b is not None:
        result = sweep.compare(a, b, metric, claim.max_l0_fraction, claim.rules, c.one_sided,
                               c.margin)  # fmt: skip
    return Verdict(claim, sweep, metric, result, c.expect)


def adjust_family(vs: list[Verdict], multiplicity: str) -> None:
    """Adjust one family's verdicts: its per-L0 tests together, its summaries together."""
    results = [v.result for v in vs if v.result is not None]
    adjust([j for r in results for j in r.judged()], multiplicity)
    adjust([r.summary for r in results if r.summary is not None], multiplicity)


def verdicts(claims: Claims, sweeps: list[Sweep]) -> list[Verdict]:
    """Every claim's comparisons on every sweep of its kind, per claim metric the sweep has:
    the rows of the verdict table, in the claims file's order. Each claim is a family: its
    p-values are adjusted together (`adjust_family`)."""
    out = []
    for claim in claims.claims:
        mine = [
            verdict(claim, s, c, metric)
            for s in sweeps
            if s.kind in claim.sweeps and s.data.tests(claim.key)
            for metric in claim.metrics_of(s.data)
            if metric in s.metrics
            for c in claim.comparisons
        ]
        if len(claim.sweeps) > 1:  # a kind without the pair's variants is not its test
            mine = [v for v in mine if v.result is not None]
        adjust_family(mine, claim.rules.multiplicity)
        out += mine
    return out
