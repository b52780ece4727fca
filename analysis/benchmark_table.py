"""The SynthSAEBench table: each variant's ground-truth metrics at each target L0, in the form
of SynthSAEBench's published table (F1, MCC, uniqueness, explained variance: mean and spread
over seeds; arXiv 2602.14687), then the paired verdicts of every gated variant against every
modern architecture (TopK, BatchTopK, Matryoshka BatchTopK, JumpReLU).

A value at a target is read as the verdicts read it (`analysis.matched.match_at_targets`):
each seed of the variant's point nearest the target, moved onto the target along the seed's
own log-L0 curve where its runs bracket it. A variant with no point within the sweep's L0
tolerance of a target, or with a run there in the dense regime, has no row at it. The
verdicts are the report's own (`Analysis.metrics[m].pairs`, with its margins and multiplicity
adjustment), for the table's metrics the report compares: MCC, F1, and FVU for explained
variance (1 - FVU). The section is empty for runs without the ground-truth metrics.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.effects import fmt, pct
from analysis.matched import match_at_targets
from analysis.model import Analysis
from analysis.variants import LABEL

TABLE_METRICS = {
    "f1": "F1",
    "mcc": "MCC",
    "uniqueness": "uniqueness",
    "explained_variance": "explained variance",
}
VERDICT_METRICS = ("mcc", "f1", "fvu")
GATED = {"gated"}
MODERN = {"topk", "batchtopk", "matryoshka_batchtopk", "jumprelu"}


def architectures(a: Analysis) -> dict[str, str]:
    """{variant label: its sae.kind}, for the variants with one kind."""
    runs = a.runs
    if "sae.kind" not in runs or LABEL not in runs:
        return {}
    kinds = runs.groupby(LABEL)["sae.kind"].agg(lambda k: set(k.dropna().astype(str)))
    return {v: next(iter(k)) for v, k in kinds.items() if len(k) == 1}


def benchmark_values(a: Analysis) -> pd.DataFrame:
    """Long form: one row per (target, variant, metric) with the seeds' values at the target:
    columns target, variant, metric, seeds, mean, sd (over seeds, n - 1), l0 (the note)."""
    rows = []
    runs = a.compared
    for metric in TABLE_METRICS:
        if metric not in runs or pd.to_numeric(runs[metric], errors="coerce").isna().all():
            continue
        for variant in a.variants.order:
            # a variant against itself: its seeds' values at each target, read as verdicts are
            matched, _ = match_at_targets(runs, metric, variant, variant, a.targets,
                                          a.tolerance, a.max_l0_fraction)  # fmt: skip
            for m in matched:
                values = np.array(list(m.a.values()), dtype=float)
                sd = float(values.std(ddof=1)) if len(values) > 1 else math.nan
                rows.append([m.l0, variant, metric, len(values), float(values.mean()), sd,
                             m.note.split(";")[0]])  # fmt: skip
    return pd.DataFrame(rows, columns=["target", "variant", "metric", "seeds", "mean", "sd", "l0"])


def benchmark_tables(values: pd.DataFrame) -> dict[float, pd.DataFrame]:
    """{target: the table at it}: one row per variant, `mean ± sd` per metric (the published
    table's form), with the seeds and the achieved L0s."""
    tables = {}
    for target, at in values.groupby("target", sort=True):
        rows = []
        for variant, g in at.groupby("variant", sort=False):
            by = g.set_index("metric")
            row = {"variant": variant, "seeds": int(by["seeds"].min()), "L0": by["l0"].iloc[0]}
            for metric, title in TABLE_METRICS.items():
                row[title] = _mean_sd(by.loc[metric]) if metric in by.index else "n/a"
            rows.append(row)
        tables[float(target)] = pd.DataFrame(rows)
    return tables


def benchmark_text(a: Analysis) -> list[str]:
    """The SynthSAEBench-form tables as plain-text lines (a sweep prints them last); empty
    without ground-truth metrics or targets."""
    values = benchmark_values(a)
    if values.empty or not {"f1", "mcc"} & set(values["metric"]):
        return []
    lines = []
    for target, table in benchmark_tables(values).items():
        lines += [f"at L0 {fmt(target)} (mean ± sd over seeds):", table.to_string(index=False)]
    return lines


def gated_verdicts(a: Analysis) -> list[str]:
    """The report's verdicts at each target L0, for every pair of a gated variant and a
    modern architecture, on MCC, F1 and FVU."""
    kind = architectures(a)
    lines = []
    for metric in VERDICT_METRICS:
        if metric not in a.metrics:
            continue
        for p in a.metrics[metric].pairs:
            kinds = {kind.get(p.a), kind.get(p.b)}
            if not (kinds & GATED and kinds & MODERN):
                continue
            for r in p.rows.itertuples(index=False):
                interval = f" [{pct(r.ci_lo_pct)}, {pct(r.ci_hi_pct)}]" if r.seeds >= 2 else ""
                effect = pct(r.effect_pct) + interval
                lines.append(
                    f"**{metric}** at L0 {fmt(r.l0)}, {r.seeds} seeds: `{p.b}` vs `{p.a}` "
                    f"{effect}, p {fmt(r.p)} (adj {fmt(r.p_adj)}): **{r.verdict}**"
                )
    return lines


def benchmark_section(a: Analysis, files) -> list[tuple]:
    """The report's SynthSAEBench section (empty without ground-truth metrics or targets);
    writes tables/benchmark_table.csv. `files`: the report's table writer."""
    values = benchmark_values(a)
    if values.empty or not {"f1", "mcc"} & set(values["metric"]):
        return []
    files.table(values, "benchmark_table.csv")
    blocks: list[tuple] = [
        ("h2", "Ground-truth table (SynthSAEBench form)"),
        (
            "p",
            "Each variant at each target L0: F1, MCC, uniqueness and explained variance, "
            "mean ± standard deviation over seeds, read at the target as the verdicts "
            "read them (SynthSAEBench's published table: arXiv 2602.14687, L0 20 and 25 "
            "on its 16k model). L0: the achieved L0s of the runs read.",
        ),  # fmt: skip
    ]
    for target, table in benchmark_tables(values).items():
        blocks += [("h3", f"L0 {fmt(target)}"), ("table", table)]
        absent = [v for v in a.variants.order if v not in set(table["variant"])]
        if absent:
            why = "no point within the L0 tolerance, or a run there in the dense regime"
            blocks.append(("p", f"Not at this target ({why}): {', '.join(absent)}."))
    kinds = set(architectures(a).values())
    if kinds & GATED and kinds & MODERN:  # a sweep of gated variants only has no such pair
        lines = gated_verdicts(a)
        blocks.append(("h3", "Gated against each modern architecture"))
        blocks.append(
            ("ul", lines) if lines else ("p", "No gated and modern pair at a matched L0.")
        )
    return blocks


def _mean_sd(row) -> str:
    if not math.isfinite(row["sd"]):
        return fmt(row["mean"])
    return f"{fmt(row['mean'])} ± {fmt(row['sd'])}"
