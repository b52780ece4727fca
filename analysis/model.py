"""The analysis model: everything a report shows, computed from a runs DataFrame.

`analyse(runs)` labels the variants, then per metric: the seed-aggregated frontier points,
the paired comparisons at matched L0 (`analysis.matched`: the verdicts), each variant
relative to the reference variant, and the descriptive frontier comparisons
(`analysis.compare`: overlap, band winners). The p-values are adjusted for multiplicity per
family (`analysis.verdicts`): the headline metrics' per-L0 verdicts together, and each other
metric's on its own; the one-line summaries over the band likewise. Rendering and files
are elsewhere (`analysis.render`, `analysis.report`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.compare import PairComparison, band_verdicts, compare_all
from analysis.frontier import finished, frontier_points, metrics_present
from analysis.matched import (
    MAX_L0_FRACTION,
    PairResult,
    compare_pairs,
    relative_to,
    run_dims,
    sweep_targets,
)
from analysis.tuning import TuneSpec, Tuning, declared_tuning, label_tuned
from analysis.variants import LABEL, Variants, value_key
from analysis.verdicts import Rules, adjust
from sae_sweep.evaluation.catalogue import names, primary_order


@dataclass
class MetricAnalysis:
    metric: str
    points: pd.DataFrame
    """`frontier_points` output: seed-aggregated points, with `on_frontier`."""
    comparisons: list[PairComparison]
    """Descriptive frontier comparisons (overlap, dominated points)."""
    bands: pd.DataFrame
    """`band_verdicts` output (descriptive: which frontier is lowest per band)."""
    pairs: list[PairResult] = field(default_factory=list)
    """Paired comparisons at matched L0: the verdicts."""
    relative: pd.DataFrame = field(default_factory=pd.DataFrame)
    """`relative_to` output: each variant / the reference at matched L0."""


@dataclass
class Analysis:
    """Everything the report shows, computed from a runs DataFrame."""

    runs: pd.DataFrame
    """The runs, with `variant_label`."""
    variants: Variants
    metrics: dict[str, MetricAnalysis] = field(default_factory=dict)
    max_l0_fraction: float = MAX_L0_FRACTION
    """Verdicts cover L0 <= this x d."""
    reference: str | None = None
    """The variant the relative plots divide by."""
    targets: list[float] = field(default_factory=list)
    tolerance: float = 0.1
    recipes: dict[str, str] = field(default_factory=dict)
    """{variant label: the named recipe it reproduces}."""
    rules: Rules = field(default_factory=Rules)
    """Margins, the summaries' L0 band and the multiplicity adjustment."""
    tuning: Tuning | None = None
    """Each variant's best tuned value (a sweep that declared `tune`), else None."""

    @property
    def compared(self) -> pd.DataFrame:
        """The runs every comparison, verdict and frontier uses: all of them, or with tuning
        each variant's runs at its best value on the comparing seeds."""
        return self.runs if self.tuning is None else self.tuning.compared

    @property
    def problems(self) -> pd.DataFrame:
        """Runs that did not finish: failed, running or unfinished."""
        return self.runs[self.runs["status"] != "done"]

    @property
    def d(self) -> float | None:
        """The activation dimension, when all runs share one."""
        d = run_dims(self.runs).dropna().unique()
        return float(d[0]) if len(d) == 1 else None

    @property
    def unplaced(self) -> pd.DataFrame:
        """Finished runs missing from some frontier: L0 missing, 0 or not finite, or a
        metric that other runs have is missing or not finite (a diverged run).
        Columns: run_id, l0, reason, path."""
        done = self.runs[self.runs["status"] == "done"]
        ok = finished(self.runs).index
        rows = []
        for i, r in done.iterrows():
            if i not in ok:
                reason = f"L0 = {r['l0']}"
            else:
                bad = [m for m in self.metrics if not np.isfinite(float(r.get(m, np.nan)))]
                if not bad:
                    continue
                reason = ", ".join(f"{m} = {r.get(m)}" for m in bad)
            rows.append({"run": r["run_id"], "l0": r["l0"], "reason": reason, "path": r["path"]})
        return pd.DataFrame(rows, columns=["run", "l0", "reason", "path"])

    def headline_metrics(self) -> list[str]:
        """The analysed metrics of the opening verdicts (catalogue `headline`: MSE and loss
        recovered say the same as FVU and delta LM loss on one dataset); every metric has its
        own section below."""
        chosen = [m for m in names(headline=True) if m in self.metrics]
        return chosen or list(self.metrics)[:1]


def analyse(
    runs: pd.DataFrame,
    metrics: list[str] | None = None,
    n_bands: int = 3,
    max_l0_fraction: float = MAX_L0_FRACTION,
    reference: str | None = None,
    rules: Rules | None = None,
    tune: TuneSpec | str | None = "declared",
) -> Analysis:
    """Variants, frontiers, paired comparisons and band verdicts for every metric present.

    reference: the variant the relative plots divide by (default: the first variant).
    rules: margins, the summaries' L0 band, the multiplicity adjustment (default `Rules()`).
    tune: "declared" (the tuning the runs' sweep declared, if any), a `TuneSpec`, or None
        (every tuned value is a variant of its own); with tuning, each variant is compared
        at its best value (`analysis.tuning`).
    """
    rules = rules or Rules()
    if not max_l0_fraction > 0:
        raise ValueError(f"max_l0_fraction={max_l0_fraction} must be > 0 (0.5 = L0 up to d/2)")
    spec = declared_tuning(runs) if tune == "declared" else tune
    labelled, variants, tuning = label_tuned(runs, spec, rules, max_l0_fraction)
    ref = variants.order[0] if variants.order else None
    if reference is not None:
        # A variant name also selects its first label ("gated_original (warmup=0)").
        named = [v for v in variants.order if v == reference or v.startswith(f"{reference} (")]
        if not named:
            known = ", ".join(variants.order) or "none"
            raise ValueError(f"--reference {reference!r} is not a variant of these runs ({known})")
        ref = named[0]
    targets, tol = sweep_targets(labelled)
    a = Analysis(labelled, variants, max_l0_fraction=max_l0_fraction, reference=ref,
                 targets=targets, tolerance=tol, recipes=_recipes(labelled),
                 rules=rules, tuning=tuning)  # fmt: skip
    compared = a.compared
    for m in metrics or metrics_present(labelled):
        pts = frontier_points(compared, m)
        a.metrics[m] = MetricAnalysis(
            m,
            pts,
            compare_all(pts, m, variants),
            band_verdicts(pts, m, n_bands=n_bands),
            compare_pairs(compared, m, variants.order, max_l0_fraction, rules),
            relative_to(compared, m, ref, variants.order, max_l0_fraction)
            if ref is not None
            else pd.DataFrame(),
        )
    _adjust_families(a)
    return a


def _adjust_families(a: Analysis) -> None:
    """The report's families: the headline metrics together, every other metric alone."""
    headline = a.headline_metrics()
    families = [headline] + [[m] for m in a.metrics if m not in headline]
    for family in families:
        pairs = [p for m in family for p in a.metrics[m].pairs]
        adjust([j for p in pairs for j in p.judged()], a.rules.multiplicity)
        adjust([p.summary for p in pairs if p.summary is not None], a.rules.multiplicity)


def _recipes(runs: pd.DataFrame) -> dict[str, str]:
    if "recipe" not in runs or not len(runs):
        return {}
    out = {}
    for label, g in runs.groupby(LABEL, sort=False):
        names = {value_key(x) for x in g["recipe"]} - {"None"}
        if len(names) == 1:
            out[label] = names.pop()
    return out


def primary_metric(a: Analysis) -> str | None:
    """The metric of the headline verdicts: loss recovered on LM data, else FVU (catalogue
    `primary`)."""
    for m in primary_order():
        if m in a.metrics:
            return m
    return next(iter(a.metrics), None)
