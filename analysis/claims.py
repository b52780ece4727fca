"""Claims about variants, written as data (a YAML file of comparisons), tested on committed
sweeps: one verdict row per claim, sweep, metric and compared pair.

A claims file (docs/results/claims.yaml is the results page's) names the data sets and
their metrics, the kinds of sweep, and per claim: its statement, the sweep kind it is
tested on (on every data set that has that sweep), its metrics, the verdicts' L0 band, and
its comparisons. A comparison is variant `b` against variant `a` at matched L0 (the target
L0s of a target-L0 sweep, interpolated L0s otherwise), seed-paired, with a 95% CI
(`analysis.matched.compare_matched`), and what the claim expects of it: `b` (b better),
`a` (a better), `equal`, or `context` (no expectation). A variant is named by its preset,
and where a sweep varies on/off knobs within one preset (the recipe sweep), by those
switches as well: `{variant: gated_original, init: on, warm-up: off}`.

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
from analysis.matched import PairResult, compare_matched, sweep_targets
from analysis.model import Analysis, analyse
from analysis.paired import PairedDiff, winner
from analysis.variants import Variants, assign_variants
from sae_sweep.evaluation.catalogue import METRICS, higher_is_better
from sae_sweep.record import layout

EXPECTATIONS = ("a", "b", "equal", "context")
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
    """'b' (b better), 'a' (a better), 'equal', or 'context' (no expectation)."""


@dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    sweep: str
    """The sweep kind it is tested on."""
    comparisons: tuple[Comparison, ...]
    metrics: tuple[str, ...] = (HEADLINE,)
    """The verdict table's metrics; HEADLINE stands for each data set's headline metrics."""
    max_l0_fraction: float = 0.5
    """The L0 band of its verdicts: L0 <= this x d (the sparse regime)."""
    other_metrics: bool = True
    """The evidence also shows the data set's other metrics, as context."""

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


def load_claims(path: Path) -> Claims:
    """Read a claims file; a malformed entry raises `ClaimsError` naming it."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ClaimsError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ClaimsError(f"{path}: expected a mapping with data_sets, sweeps and claims")
    _keys(raw, {"data_sets", "sweeps", "switches", "claims", "reference", "max_l0_fraction"},
          {"data_sets", "sweeps", "claims"}, str(path))  # fmt: skip
    data_sets = tuple(
        _data_set(d, f"{path}: data_sets[{i}]") for i, d in enumerate(raw["data_sets"])
    )
    sweeps = tuple(str(s) for s in raw["sweeps"])
    switches = {str(k): str(v) for k, v in (raw.get("switches") or {}).items()}
    band = float(raw.get("max_l0_fraction", 0.5))
    known = {m for d in data_sets for m in d.metrics} | {HEADLINE}
    claims = tuple(
        _claim(c, f"{path}: claims[{i}]", sweeps, switches, known, band)
        for i, c in enumerate(raw["claims"])
    )
    keys = [c.key for c in claims]
    if len(set(keys)) != len(keys):
        raise ClaimsError(f"{path}: claim keys must be unique, got {keys}")
    return Claims(data_sets, sweeps, claims, raw.get("reference"))


def _keys(raw: dict, allowed: set[str], required: set[str], where: str) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise ClaimsError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    missing = required - set(raw)
    if missing:
        raise ClaimsError(f"{where}: missing {sorted(missing)}")


def _data_set(raw: dict, where: str) -> DataSet:
    required = {"key", "title", "metrics", "headline"}
    _keys(raw, required | {"data_seeds"}, required, where)
    metrics, headline = tuple(raw["metrics"]), tuple(raw["headline"])
    if not set(headline) <= set(metrics):
        raise ClaimsError(f"{where}: headline {list(headline)} must be among its metrics")
    unknown = [m for m in metrics if m not in METRICS and m not in DERIVED_METRICS]
    if unknown:
        raise ClaimsError(
            f"{where}: unknown metrics {unknown}; known: {sorted({*METRICS, *DERIVED_METRICS})}"
        )
    return DataSet(
        str(raw["key"]), str(raw["title"]), metrics, headline, bool(raw.get("data_seeds"))
    )


def _claim(
    raw: dict, where: str, sweeps: tuple[str, ...], switches: dict, known: set, band: float
) -> Claim:
    allowed = {"key", "statement", "sweep", "comparisons", "metrics", "max_l0_fraction",
               "other_metrics"}  # fmt: skip
    _keys(raw, allowed, {"key", "statement", "sweep", "comparisons"}, where)
    where = f"{where} ({raw['key']})"
    if raw["sweep"] not in sweeps:
        raise ClaimsError(f"{where}: sweep {raw['sweep']!r} is not one of {list(sweeps)}")
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
        str(raw["sweep"]),
        comparisons,
        metrics,
        float(raw.get("max_l0_fraction", band)),
        bool(raw.get("other_metrics", True)),
    )


def _comparison(raw: dict, where: str, switches: dict) -> Comparison:
    _keys(raw, {"a", "b", "expect"}, {"a", "b", "expect"}, where)
    if raw["expect"] not in EXPECTATIONS:
        raise ClaimsError(f"{where}: expect {raw['expect']!r} is not one of {EXPECTATIONS}")
    return Comparison(
        _selection(raw["a"], f"{where}.a", switches),
        _selection(raw["b"], f"{where}.b", switches),
        raw["expect"],
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

    def compare(self, a: str, b: str, metric: str, max_l0_fraction: float) -> PairResult:
        """b against a at matched L0 (the sweep's targets, else interpolated L0s)."""
        targets, tol = sweep_targets(self.runs)
        return compare_matched(self.runs, metric, a, b, max_l0_fraction, targets, tol)

    def analyse(self, reference: str | None) -> Analysis:
        """The whole analysis of the sweep's own report (every pair, every metric), relative
        to `reference` where the sweep has that variant."""
        have = set(self.runs.get("variant", []))
        return analyse(
            self.runs, metrics=self.metrics, reference=reference if reference in have else None
        )


def load_sweeps(root: Path, claims: Claims) -> list[Sweep]:
    """Every sweep folder <data set>_<kind>/ under root that has a runs table."""
    sweeps = []
    for data in claims.data_sets:
        for kind in claims.sweeps:
            folder = root / f"{data.key}_{kind}"
            if not (folder / "runs.csv").exists():
                continue
            runs, variants = assign_variants(read_runs(folder))
            sweeps.append(Sweep(data, kind, folder, runs, variants, read_targets(folder)))
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

    @property
    def winners(self) -> list[tuple[float, str | None]]:
        """(matched L0, the better variant or None) per matched L0."""
        out = []
        if self.result is None:
            return out
        a, b = self.result.a, self.result.b
        for r in self.result.rows.itertuples(index=False):
            diff = PairedDiff(int(r.seeds), r.diff, r.ci_hi - r.diff)  # the row's symmetric CI
            out.append((float(r.l0), winner(diff, a, b, higher_is_better(self.metric))))
        return out

    def words(self) -> str:
        """The verdict in words, saying where it flips when it depends on L0."""
        if self.result is None:
            return "not run"
        if not len(self.result.rows):
            return "no matched L0 in the sparse regime: not compared"
        won = self.winners
        names = {w for _, w in won if w}
        d = self.result.pooled
        if d.n == 0:
            return "no seed reached a matched L0 in both variants: not compared"
        if not names:
            return f"no difference detected with {d.n} seeds (CI ±{fmt(d.half_width)}%)"
        if len(won) == 1 or (len(names) == 1 and all(w for _, w in won)):
            return f"`{names.pop()}` better at every matched L0"
        parts = []
        for w, group in _runs_of(won):
            at = "L0 " + ", ".join(fmt(x) for x in group)
            parts.append(f"`{w}` better at {at}" if w else f"no difference detected at {at}")
        return "depends on L0: " + "; ".join(parts)

    def answer(self) -> str:
        """Does the comparison say what the claim expects?"""
        if self.result is None or self.result.pooled.n == 0 or self.expect == "context":
            return ""
        won = [w for _, w in self.winners]
        want = {"a": self.result.a, "b": self.result.b}.get(self.expect)
        if self.expect == "equal":
            return "holds" if not any(won) else "does not hold"
        if all(w == want for w in won):
            return "holds"
        if any(w == want for w in won):
            return "holds at some L0 only"
        if any(won):
            return "contradicted"
        return "not confirmed"

    def band(self) -> str:
        """The matched L0s' range."""
        if self.result is None or self.result.band is None:
            return "-"
        return l0_range(*self.result.band)

    def difference(self) -> str:
        """The pooled relative difference (b - a) / a with its CI."""
        if self.result is None or not len(self.result.rows) or self.result.pooled.n == 0:
            return "-"
        d = self.result.pooled
        if d.n < 2 or not math.isfinite(d.half_width):
            return f"{d.mean:+.2f}%"
        return f"{d.mean:+.2f}% [{d.lo:+.2f}, {d.hi:+.2f}]"


def _runs_of(won: list[tuple[float, str | None]]):
    """Consecutive matched L0s with the same winner: [(winner, [l0, ...]), ...]."""
    out: list[tuple[str | None, list[float]]] = []
    for l0, w in won:
        if out and out[-1][0] == w:
            out[-1][1].append(l0)
        else:
            out.append((w, [l0]))
    return out


def verdict(claim: Claim, sweep: Sweep, c: Comparison, metric: str) -> Verdict:
    """One comparison of a claim on one sweep and metric."""
    a, b = sweep.label(c.a), sweep.label(c.b)
    result = None if a is None or b is None else sweep.compare(a, b, metric, claim.max_l0_fraction)
    return Verdict(claim, sweep, metric, result, c.expect)


def verdicts(claims: Claims, sweeps: list[Sweep]) -> list[Verdict]:
    """Every claim's comparisons on every sweep of its kind, per claim metric the sweep has:
    the rows of the verdict table, in the claims file's order."""
    return [
        verdict(claim, s, c, metric)
        for claim in claims.claims
        for s in sweeps
        if s.kind == claim.sweep
        for metric in claim.metrics_of(s.data)
        if metric in s.metrics
        for c in claim.comparisons
    ]
