"""The sweep report: report.md and report.html (same content), plots, CSV tables.

It opens with the verdicts, one line per compared pair, headline metric and matched L0 (the
log ratio b/a as a % change with its 95% CI, raw and adjusted p, the verdict word), then one
summary line per pair and metric over the declared L0 band, the matched L0s left out for
dense runs, what the seeds can resolve and would need (`analysis.verdicts.plan_seeds`), and
the notes on what each pair differs in (once per pair). Then: the target L0s
(a target-L0 sweep), the variants and their knobs, and per metric the frontier plot, the
plot relative to the reference variant, the paired differences at each matched L0, the
frontier per L0 band and the frontier points; last, every failed or unfinished run.
The analysis itself is `analysis.model`, the Markdown/HTML writing `analysis.render`.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.benchmark_table import benchmark_section, benchmark_text
from analysis.compare import pairs_table
from analysis.effects import ci, fmt, l0_range, pct
from analysis.model import Analysis, MetricAnalysis, analyse, primary_metric
from analysis.plots import frontier_plot, relative_plot, save_figure
from analysis.provenance import provenance_warnings
from analysis.render import SIGNIFICANT, md_table, render, write_csv
from analysis.variants import LABEL, frontier_axis, value_key
from analysis.verdicts import Judged, pct_text, plan_seeds
from sae_sweep.evaluation.catalogue import higher_is_better
from sae_sweep.evaluation.catalogue import title as title_of
from sae_sweep.record.targets_file import lambda_per_of

__all__ = ["Analysis", "ReportPaths", "analyse", "md_table", "primary_metric", "write_report"]


@dataclass
class ReportPaths:
    """Files written by `write_report`."""

    report_md: Path
    report_html: Path
    plots: list[Path] = field(default_factory=list)
    """PNG and SVG per metric: frontier_<metric> and relative_<metric>."""
    tables: list[Path] = field(default_factory=list)
    """runs.csv, verdicts.csv, summaries.csv, targets.csv, and per metric frontier_, paired_ and
    comparisons_<metric>.csv."""
    publish: Any = None
    """`analysis.publish.PublishResult` when published, else None."""
    n_runs: int = 0
    """Runs found (any status)."""
    verdicts: list[str] = field(default_factory=list)
    """The report's first lines as plain text: the per-L0 verdicts, then the summaries."""
    benchmark: list[str] = field(default_factory=list)
    """The ground-truth table in SynthSAEBench's form as plain text (empty without one)."""

    def __iter__(self):
        yield from [self.report_md, self.report_html, *self.plots, *self.tables]


def _first_line(s: Any, n: int = 160) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return ""
    lines = [ln for ln in str(s).strip().splitlines() if ln.strip()]
    line = lines[-1] if lines and lines[0].startswith("Traceback") else (lines[0] if lines else "")
    return line if len(line) <= n else line[: n - 3] + "..."


def variants_table(a: Analysis) -> pd.DataFrame:
    """One row per variant: runs done/total, seeds, lambda points, and its varying knobs."""
    rows = []
    lam = frontier_axis(a.runs)
    for v in a.variants.order:
        r = a.runs[a.runs[LABEL] == v]
        d = r[r["status"] == "done"]
        row = {"variant": v, "done / runs": f"{len(d)}/{len(r)}"}
        row["seeds"] = d["seed"].nunique() if "seed" in d else ""
        row["lambdas"] = d[lam].map(value_key).nunique() if lam else ""
        row |= {k: value_key(x) for k, x in a.variants.settings.get(v, {}).items()}
        rows.append(row)
    return pd.DataFrame(rows)


def problems_table(a: Analysis) -> pd.DataFrame:
    """Failed / running / unfinished runs: what, where, why."""
    p = a.problems
    lam = frontier_axis(a.runs)
    out = pd.DataFrame(
        {
            "run": p["run_id"],
            "status": p["status"],
            "variant": p[LABEL],
            "lambda": p[lam] if lam else "",
            "seed": p.get("seed", ""),
            "last step": p["last_step"].map(lambda s: "" if pd.isna(s) else str(int(s))),
            "error": p["error"].map(_first_line),
            "path": p["path"],
        }
    )
    return out.reset_index(drop=True)


def _frontier_table(ma: MetricAnalysis) -> pd.DataFrame:
    m = ma.metric
    p = ma.points
    return pd.DataFrame(
        {
            "variant": p[LABEL],
            "lambda": p["lam"],
            "seeds": p["n_seeds"],
            "L0": p["l0"],
            "L0 std": p["l0_std"],
            m: p[m],
            f"{m} std": p[f"{m}_std"],
            "on frontier": p["on_frontier"].map({True: "yes", False: ""}),
        }
    )


def _status_line(runs: pd.DataFrame) -> str:
    counts = runs["status"].value_counts()
    parts = [f"{counts.get(s, 0)} {s}" for s in ("done", "failed", "running", "unfinished")]
    parts = [p for p in parts if not p.startswith("0 ")]
    return f"{len(runs)} runs" + (": " + ", ".join(parts) if parts else "")


def effect_text(j: Judged) -> str:
    """'-3.02% [-4.10%, -1.93%]': the percentage change exp(ln(b/a)) - 1 and its 95% CI."""
    e = j.effect
    if e.n == 0:
        return "n/a"
    if e.n < 2 or not math.isfinite(e.half_width):
        return pct(e.pct())
    lo, hi = e.ci
    return f"{pct(e.pct())} [{pct(lo)}, {pct(hi)}]"


def p_text(raw: float, adjusted: float) -> str:
    """'0.012 (adj 0.036)'."""
    if not math.isfinite(raw):
        return ""
    return f"{raw:.2g} (adj {adjusted:.2g})"


def verdict_rows(a: Analysis) -> pd.DataFrame:
    """One row per compared pair, headline metric and matched L0: the report's opening lines
    (the primary result), their verdicts adjusted within the report."""
    rows = []
    for m in a.headline_metrics():
        for p in a.metrics[m].pairs:
            for pt in p.points:
                j = pt.judged
                rows.append(
                    {
                        "metric": m,
                        "a": p.a,
                        "b": p.b,
                        "L0": fmt(pt.l0),
                        "seeds": j.effect.n,
                        "b/a - 1, 95% CI": effect_text(j),
                        "p (adj)": p_text(j.p_diff, j.p_diff_adj),
                        "margin": f"±{pct_text(p.margin)}",
                        "verdict": j.words(),
                        **_tuned_columns(a, p.a, p.b),
                    }
                )
    cols = ["metric", "a", "b", "L0", "seeds", "b/a - 1, 95% CI", "p (adj)", "margin", "verdict"]
    return pd.DataFrame(rows, columns=cols + list(_tuned_columns(a, "", "")))


def _tuned_columns(a: Analysis, va: str, vb: str) -> dict[str, str]:
    """With tuning, the value each side of a comparison was trained at (its best)."""
    t = a.tuning
    if t is None:
        return {}
    return {f"a {t.knob_text}": t.chosen(va), f"b {t.knob_text}": t.chosen(vb)}


def summary_rows(a: Analysis) -> pd.DataFrame:
    """One row per compared pair and headline metric: the log ratio over the declared band."""
    rows = []
    for m in a.headline_metrics():
        for p in a.metrics[m].pairs:
            j = p.summary
            rows.append(
                {
                    "metric": m,
                    "a": p.a,
                    "b": p.b,
                    "L0 band": l0_range(*p.band) if math.isfinite(p.band[1]) else "-",
                    "L0 points": ", ".join(fmt(x) for x in p.band_points) or "none",
                    "seeds": j.effect.n if j else 0,
                    "b/a - 1, 95% CI": effect_text(j) if j else "-",
                    "p (adj)": p_text(j.p_diff, j.p_diff_adj) if j else "",
                    "verdict": p.headline,
                    **_tuned_columns(a, p.a, p.b),
                }
            )
    cols = ["metric", "a", "b", "L0 band", "L0 points", "seeds", "b/a - 1, 95% CI", "p (adj)",
            "verdict"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols + list(_tuned_columns(a, "", "")))


def _verdict_line(r) -> str:
    return (
        f"**{r['metric']}** at L0 {r['L0']}, {r['seeds']} seeds: `{r['b']}` vs `{r['a']}` "
        f"{r['b/a - 1, 95% CI']}, p {r['p (adj)']}: **{r['verdict']}**"
    )


def _summary_line(r) -> str:
    return (
        f"**{r['metric']}** over L0 {r['L0 band']} ({r['L0 points']}), {r['seeds']} seeds: "
        f"`{r['b']}` vs `{r['a']}` {r['b/a - 1, 95% CI']}: **{r['verdict']}**"
    )


def verdict_lines(a: Analysis) -> list[str]:
    """The report's first lines as plain text (the end of a sweep prints them)."""
    lines = [_verdict_line(r).replace("**", "") for _, r in verdict_rows(a).iterrows()]
    summary = [_summary_line(r).replace("**", "") for _, r in summary_rows(a).iterrows()]
    tuned = [tuned_line(a).replace("`", "")] if a.tuning is not None else []
    if not lines and (why := _nothing_compared(a)):  # said, not left to an empty heading
        lines = [why]
    return tuned + lines + (["summary over the band:", *summary] if summary else [])


def tuned_line(a: Analysis) -> str:
    """'Each variant at its best train.lr (fvu at L0 16): `a` 0.003, `b` 0.01.'"""
    t = a.tuning
    chosen = ", ".join(f"`{v}` {t.chosen(v)}" for v in a.variants.order if v in t.variants)
    return (f"Each variant at its best {t.knob_text} ({t.metric} at L0 {fmt(t.spec.at_l0)}, "
            f"{_choosing(t)}): {chosen}.")  # fmt: skip


def _choosing(t) -> str:
    seeds = ", ".join(map(str, t.seeds_choose))
    if t.spec.seeds == "pilot":
        return f"chosen on pilot seeds {seeds}, which no verdict uses"
    return f"chosen on the compared seeds {seeds}"


def tuning_table(a: Analysis) -> pd.DataFrame:
    """Per variant and tuned value: the criterion's seed mean on the choosing seeds, which
    value was chosen, and (on its chosen row) how much tuning changed it."""
    t = a.tuning
    rows = []
    for v in a.variants.order:
        vt = t.variants.get(v)
        if vt is None:
            continue
        for c in vt.candidates:
            best = c.key == vt.best
            change = ""
            if best and vt.change is not None and c.key != t.shared:
                change = effect_text(Judged(vt.change, higher_is_better(t.metric)))
            rows.append({
                "variant": v, t.knob_text: t.text(c.key), "seeds": len(c.values),
                f"{t.metric} at L0 {fmt(t.spec.at_l0)}": c.mean,
                "chosen": "best" if best else ("shared" if c.key == t.shared else ""),
                "best vs shared, 95% CI": change,
            })  # fmt: skip
    return pd.DataFrame(rows)


def tuning_changes(a: Analysis) -> list[str]:
    """Per pair: the criterion's verdict at the shared value and with each at its best; a
    pair whose verdict tuning changes says so."""
    t = a.tuning
    out = []
    shared = t.text(t.shared)
    for p in t.pairs:
        va, vb = t.chosen(p.a), t.chosen(p.b)
        line = (f"`{p.b}` vs `{p.a}`: at the shared {t.knob_text} {shared} "
                f"{effect_text(p.shared)}: {p.shared.words()}; each at its best ({vb} vs {va}) "
                f"{effect_text(p.best)}: {p.best.words()}")  # fmt: skip
        before, after = p.shared.kind(), p.best.kind()
        if before != after and "better" in before + after:
            line += f". Tuning changes the verdict: {_who(p, before)} at the shared value, " \
                    f"{_who(p, after)} each at its best"  # fmt: skip
        out.append(line + ".")
    return out


def _who(p, kind: str) -> str:
    return {"b better": f"`{p.b}` wins", "a better": f"`{p.a}` wins"}.get(kind, f"{kind}")


def seed_plans(a: Analysis) -> list[str]:
    """Per headline metric: the smallest effect the seeds could detect, and the paired seeds
    that would settle its margin."""
    out = []
    for m in a.headline_metrics():
        effects = [pt.judged.effect for p in a.metrics[m].pairs for pt in p.points]
        plan = plan_seeds(m, effects)
        if plan is not None:
            out.append(plan.sentence())
    return out


def pair_notes(a: Analysis) -> list[tuple[str, str]]:
    """What each compared pair differs in, once per pair: ("p", recipe vs recipe) or
    ("warn", not like with like)."""
    notes = []
    labels = [
        v
        for v in a.variants.order
        if any(v in (p.a, p.b) for ma in a.metrics.values() for p in ma.pairs)
    ]
    for i, x in enumerate(labels):
        for y in labels[i + 1 :]:
            diff = a.variants.differing(x, y)
            knobs = ", ".join(
                f"`{k}` ({value_key(vx)} vs {value_key(vy)})" for k, (vx, vy) in diff.items()
            )
            if x in a.recipes and y in a.recipes:
                notes.append(
                    (
                        "p",
                        f"`{x}` vs `{y}`: recipe vs recipe (`{a.recipes[x]}` vs "
                        f"`{a.recipes[y]}`), differing in: {knobs or 'nothing'}.",
                    )
                )
            elif not a.variants.like_with_like(x, y):
                counted = ", ".join(f"`{k}`" for k in a.variants.counted(x, y))
                notes.append(("warn", f"not like with like: `{x}` and `{y}` differ in {counted}."))
    return notes


def targets_table(targets: dict[str, Any]) -> pd.DataFrame:
    rows = [
        {
            "variant": t["variant"],
            "target L0": t["target"],
            "status": t["status"],
            # the knob that placed the target: lambda, or k for TopK and BatchTopK
            "knob": t.get("knob", "lambda"),
            "knob value": t.get("lam"),
            "achieved L0 (seed mean)": t.get("l0"),
            "seeds": len(t.get("l0_seeds") or []),
            "reason": t.get("reason", ""),
        }
        for t in targets.get("targets", [])
    ]
    return pd.DataFrame(rows)


def paired_table(ma: MetricAnalysis) -> pd.DataFrame:
    """Per pair and matched L0: the means, b - a, the log ratio's % change and its verdict."""
    rows = []
    for p in ma.pairs:
        for pt in p.points:
            j = pt.judged
            rows.append(
                {
                    "a": p.a,
                    "b": p.b,
                    "L0": pt.l0,
                    "seeds": j.effect.n,
                    "a mean": pt.a,
                    "b mean": pt.b,
                    "b - a": pt.diff.mean,
                    "95% CI": ci(pt.diff.lo, pt.diff.hi, pt.diff.n),
                    "b/a - 1, 95% CI": effect_text(j),
                    "p (adj)": p_text(j.p_diff, j.p_diff_adj),
                    "verdict": j.words(),
                    "L0 match": pt.note,
                }
            )
    return pd.DataFrame(rows)


@dataclass
class _Files:
    """Where a report's plots and tables go, and the list of what was written."""

    out_dir: Path
    paths: ReportPaths
    draw: bool
    """False: the plots are named, not drawn."""

    def table(self, df: pd.DataFrame, name: str, recorded: bool = False) -> None:
        """Write tables/<name>; its floats rounded (`write_csv`) unless `recorded` (the runs
        table: the values of the records, kept exact)."""
        path = self.out_dir / "tables" / name
        write_csv(df, path, digits=None if recorded else SIGNIFICANT)
        self.paths.tables.append(path)

    def figure(self, fig, stem: str) -> Path:
        """Save (or only name) a figure's PNG and SVG; the PNG's path."""
        plot_dir = self.out_dir / "plots"
        if self.draw:
            files = save_figure(fig, plot_dir, stem)
        else:
            files = [plot_dir / f"{stem}.{ext}" for ext in ("png", "svg")]
        self.paths.plots += files
        return files[0]


def write_report(
    runs: pd.DataFrame,
    out_dir: str | Path,
    title: str | None = None,
    manifest: dict[str, Any] | None = None,
    analysis: Analysis | None = None,
    targets: dict[str, Any] | None = None,
    generated: str | None = None,
    plots: bool = True,
) -> ReportPaths:
    """Analyse `runs` and write report.md, report.html, plots/ and tables/ into out_dir.

    targets: the sweep's `targets.json` (a target-L0 sweep), shown as a table.
    generated: where the report comes from, after "Generated" (default: the time now; a
        fixed text makes a rebuilt report byte-identical).
    plots: False leaves the plot files unwritten (the report still names them).
    """
    out_dir = Path(out_dir)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    a = analysis or analyse(runs)
    paths = ReportPaths(out_dir / "report.md", out_dir / "report.html", n_runs=len(a.runs),
                        verdicts=verdict_lines(a), benchmark=benchmark_text(a))  # fmt: skip
    files = _Files(out_dir, paths, plots)
    files.table(a.runs, "runs.csv", recorded=True)
    # The sections, in the order the report shows them (each also writes its tables).
    blocks = [
        *_opening(a, title, generated),
        *_verdicts_section(a, files),
        *_tuning_section(a, files),
        *_targets_section(targets, files),
        *benchmark_section(a, files),  # ground-truth metrics: SynthSAEBench's table
        *_sweep_section(manifest),
        *_variants_section(a),
        *(block for m in a.metrics for block in _metric_section(a, m, files)),
        *_problems_section(a),
        *_unplaced_section(a),
        *_tables_section(files),
    ]
    md, page = render(blocks, out_dir)
    paths.report_md.write_text(md)
    paths.report_html.write_text(page)
    return paths


def _opening(a: Analysis, title: str | None, generated: str | None) -> list[tuple]:
    """The title, where the report comes from, and how many runs it found."""
    sweeps = [s for s in dict.fromkeys(a.runs["sweep"].dropna().astype(str))] if len(a.runs) else []
    title = title or "Sweep report: " + (", ".join(sweeps) or "no runs")
    generated = generated or dt.datetime.now().astimezone().isoformat(timespec="seconds")
    blocks: list[tuple] = [("h1", title), ("p", f"Generated {generated}. {_status_line(a.runs)}.")]
    if len(a.runs) == 0:
        blocks.append(("p", "No runs were found."))
    return blocks + [("p", line) for line in provenance_warnings(a.runs)]


def _excluded(a: Analysis) -> list[str]:
    """The matched targets left out of verdicts (a run in the dense regime), once each."""
    lines = [f"L0 {fmt(t)}: out of verdicts, {why}" for m in a.headline_metrics()
             for p in a.metrics[m].pairs for t, why in p.excluded]  # fmt: skip
    return list(dict.fromkeys(lines))


def _nothing_compared(a: Analysis) -> str | None:
    """Why a sweep with runs has no verdict at all (None: it has no runs)."""
    if not len(a.runs):
        return None
    if all(ma.points.empty for ma in a.metrics.values()):
        return "No finished run has an L0 and a metric: nothing to compare."
    return (
        "No two variants have finished runs at a matched L0 in the sparse regime: "
        "nothing to compare."
    )


def _verdicts_section(a: Analysis, files: _Files) -> list[tuple]:
    """The per-L0 verdicts of the headline metrics (the primary result), the one-line
    summaries over the declared band, how to read them, what more seeds would settle, and
    what each pair differs in; or why nothing was compared."""
    verdicts = verdict_rows(a)
    excluded = _excluded(a)
    if not len(verdicts):
        why = _nothing_compared(a)
        return [("p", why), *([("ul", excluded)] if excluded else [])] if why else []
    limit = f"L0 <= {a.max_l0_fraction:g} d" + (f" = {a.max_l0_fraction * a.d:g}" if a.d else "")
    where = (
        f"at the target L0s {', '.join(f'{t:g}' for t in a.targets)} (runs within "
        f"{100 * a.tolerance:g}%)"
        if a.targets
        else "at matched L0 values inside the range both variants cover"
    )
    method = {"holm": "Holm", "bh": "Benjamini-Hochberg"}[a.rules.multiplicity]
    summaries = summary_rows(a)
    files.table(verdicts, "verdicts.csv")
    files.table(summaries, "summaries.csv")
    return [
        ("h2", f"Verdicts per matched L0 (paired seeds, {method}-adjusted)"),
        *([("p", tuned_line(a))] if a.tuning is not None else []),
        ("ul", [_verdict_line(r) for _, r in verdicts.iterrows()]),
        ("h3", f"Summary over the L0 band {a.rules.band_text(a.d)} (declared before the sweep)"),
        ("ul", [_summary_line(r) for _, r in summaries.iterrows()]),
        (
            "p",
            f"b/a - 1: the per-seed log ratio ln(b/a), averaged over the paired seeds and shown "
            f"as a percentage change, with its 95% t CI; matched {where}; same seed = same "
            f"initialisation and data order. A verdict is one of: b better, a better (the "
            f"paired t test, {method}-adjusted over this report's headline verdicts), "
            f"equivalent within ±margin (two one-sided tests: the 90% CI inside the margin), "
            f"or inconclusive; p (adj): the difference test's raw and adjusted p-values. "
            f"Verdicts cover {limit}, judged on each run's achieved L0: runs above are the "
            "dense regime, kept in the tables and plots but never in a verdict "
            '(docs/analysis.md, "Reading a verdict").',
        ),
        *([("ul", excluded)] if excluded else []),
        ("p", "What the seeds can resolve:"),
        ("ul", seed_plans(a)),
        *pair_notes(a),
    ]


def _tuning_section(a: Analysis, files: _Files) -> list[tuple]:
    """A tuned sweep: each variant's value per tuned value of the criterion, the value
    chosen, how much tuning changed each variant, and each pair at the shared value against
    each at its best (`analysis.tuning`)."""
    t = a.tuning
    if t is None:
        return []
    tt = tuning_table(a)
    files.table(tt, "tuning.csv")
    untuned = [v for v, vt in t.variants.items() if vt.best is None]
    bias = (
        "The pilot seeds chose and are left out of every comparison, so the verdicts carry "
        "no selection bias."
        if t.spec.seeds == "pilot"
        else "The same seeds chose the values and compare the variants: each variant's "
        "best is partly its seeds' luck, so a tuned variant looks a little better than it is "
        "(tune_criterion.seeds=pilot separates the two)."
    )
    shared = ("declared (tune_criterion.shared)" if t.spec.shared
              else "best on average over the variants")  # fmt: skip
    return [
        ("h2", f"Tuning: each variant at its best {t.knob_text}"),
        ("p", tuned_line(a) + " " + bias),
        (
            "p",
            f"Criterion: {t.metric} at L0 {fmt(t.spec.at_l0)}, the seed mean on the choosing "
            f"seeds, {'higher' if higher_is_better(t.metric) else 'lower'} is better; every "
            f"verdict, summary and frontier above uses only each variant's runs at its best "
            f"value, on seeds {', '.join(map(str, t.seeds_compare))}. Shared value "
            f"({shared}): {t.text(t.shared)}; best vs shared: the criterion at the best value "
            "against the shared one on the compared seeds, paired log ratio with its 95% CI.",
        ),
        ("table", tt),
        *([("warn", edge_warning(t))] if edge_warning(t) else []),
        *(
            [
                (
                    "warn",
                    "No tuned value of " + ", ".join(f"`{v}`" for v in untuned) + " can be "
                    f"read at L0 {fmt(t.spec.at_l0)} (no target hit there, the seeds' sparse "
                    "runs do not span it, and a curve is never extrapolated; or its runs are "
                    "dense): not tuned and not compared. Fix: a tune_criterion.at_l0 inside "
                    "the sparse L0 range the runs cover (sae-analysis --tune-criterion "
                    "at_l0=L0).",
                )
            ]
            if untuned
            else []
        ),  # fmt: skip
        *_changes_blocks(a),
    ]


def edge_warning(t) -> str:
    """The variants whose best value is an end of the range tried, and the fix; '' if none."""
    at_edge = [f"`{v}` ({'; '.join(vt.edges)})" for v, vt in t.variants.items() if vt.edges]
    if not at_edge:
        return ""
    return ("At the edge of the range tried: " + ", ".join(at_edge) + ". The best value may "
            "lie beyond, untried: add values past the end to `tune` and run the sweep again "
            "(it trains only the new ones).")  # fmt: skip


def _changes_blocks(a: Analysis) -> list[tuple]:
    """Each pair at the shared value and each at its best, unless no variant moved."""
    t = a.tuning
    if not t.pairs:
        return []
    if all(vt.best == t.shared for vt in t.variants.values() if vt.best is not None):
        return [("p", "Every variant's best value is the shared one: tuning changed no "
                      "comparison.")]  # fmt: skip
    return [
        (
            "p",
            f"{t.metric} at L0 {fmt(t.spec.at_l0)}, each pair at the shared value and each "
            "at its best (adjusted together):",
        ),  # fmt: skip
        ("ul", tuning_changes(a)),
    ]


def _targets_section(targets: dict[str, Any] | None, files: _Files) -> list[tuple]:
    """A target-L0 sweep's targets: where each landed, with which knob value."""
    if not targets:
        return []
    tt = targets_table(targets)
    files.table(tt, "targets.csv")
    within = f"{100 * targets.get('l0_tolerance', 0.1):g}%"
    hit = (
        f"each seed is placed at a lambda of its own, and hits a target when its L0 is within "
        f"{within}"
        if lambda_per_of(targets) == "seed"
        else f"a target is hit when the seed-mean L0 is within {within}"
    )
    return [
        ("h2", "Target L0s"),
        (
            "p",
            f"{targets.get('rounds', 0)} refinement rounds after the grid "
            f"(at most {targets.get('max_rounds')}); {hit}.",
        ),
        ("table", tt),
    ]


def _sweep_section(manifest: dict[str, Any] | None) -> list[tuple]:
    """The sweep's commit, times and grid, from its manifest."""
    if not manifest:
        return []
    info = [f"{k}: `{manifest[k]}`" for k in ("git_commit", "started", "ended") if manifest.get(k)]
    if manifest.get("grid"):
        info.append(f"grid: `{manifest['grid']}`")
    return [("h2", "Sweep"), ("ul", info)]


def _variants_section(a: Analysis) -> list[tuple]:
    """The knobs that make a variant, and one row per variant."""
    aliases = (
        ". Folded aliases: " + ", ".join(f"`{k}` = `{v}`" for k, v in a.variants.aliases.items())
        if a.variants.aliases
        else ""
    )
    knobs = ", ".join(f"`{k}`" for k in a.variants.knobs) or "none (one variant)"
    return [
        ("h2", "Variants"),
        (
            "p",
            "Variant = every knob that varies except the frontier axis and the seed; here: "
            + knobs
            + aliases
            + ".",
        ),
        ("table", variants_table(a)),
    ]


def _metric_section(a: Analysis, m: str, files: _Files) -> list[tuple]:
    """One metric: the frontier plot, the plot relative to the reference, the paired
    differences, the descriptive band winners and overlaps, and the frontier points."""
    ma = a.metrics[m]
    blocks: list[tuple] = [("h2", f"{title_of(m)} vs L0")]
    fig = frontier_plot(
        a.compared, m, order=a.variants.order, points=ma.points, max_l0_fraction=a.max_l0_fraction
    )
    blocks.append(("img", files.figure(fig, f"frontier_{m}"), f"{m} vs L0 frontier"))
    if a.reference is not None and len(a.variants.order) > 1:
        fig = relative_plot(ma.relative, m, a.reference, order=a.variants.order)
        png = files.figure(fig, f"relative_{m}")
        blocks.append(("img", png, f"{m} relative to {a.reference}"))
    pt = paired_table(ma)
    blocks += [("h3", "Paired differences at matched L0"), ("table", pt)]
    if len(pt):
        files.table(pt, f"paired_{m}.csv")
    blocks.append(("h3", "Lowest frontier per L0 band (seed means, descriptive)"))
    blocks.append(("table", ma.bands[["band", "covered by", "verdict"]]))
    if ma.comparisons:
        overlaps = pairs_table(ma.comparisons)
        blocks.append(("h3", "Frontier overlap"))
        blocks.append(("table", overlaps[["a", "b", "L0 overlap", "knobs that differ"]]))
        files.table(overlaps, f"comparisons_{m}.csv")
    ft = _frontier_table(ma)
    files.table(ft, f"frontier_{m}.csv")
    return blocks + [("h3", "Frontier points (seed mean and std)"), ("table", ft)]


def _problems_section(a: Analysis) -> list[tuple]:
    """Every failed, running or unfinished run: what, where, why."""
    problems = problems_table(a)
    blocks: list[tuple] = [("h2", f"Failed and unfinished runs ({len(problems)})")]
    if len(problems):
        blocks.append(("p", "These runs are not in any frontier above."))
    return blocks + [("table", problems)]


def _unplaced_section(a: Analysis) -> list[tuple]:
    """Finished runs that no frontier could place (L0 = 0, a diverged metric)."""
    unplaced = a.unplaced
    if not len(unplaced):
        return []
    return [
        ("h2", f"Finished runs not on any frontier ({len(unplaced)})"),
        ("p", "A log-L0 axis cannot show L0 = 0; NaN/inf marks a diverged run."),
        ("table", unplaced),
    ]


def _tables_section(files: _Files) -> list[tuple]:
    """Where the tables above are, as CSV."""
    names = [f"`{p.relative_to(files.out_dir).as_posix()}`" for p in files.paths.tables]
    return [("p", "Tables as CSV: " + ", ".join(names) + ".")]
