"""The results page (docs/results.md) and its sweep reports, rebuilt from committed run
tables alone.

A results folder holds the page's template `page.md`, its claims `claims.yaml`
(`analysis.claims`) and one folder per sweep (<data set>_<sweep kind>/runs.csv, and
targets.json for a target-L0 sweep). The page is the template with its `{{...}}` fields
filled in: the verdict table, the smallest detectable differences, the scale of each
sweep, and per claim (`{{evidence_<key>}}`) its plots and paired tables. Every number on
the page comes from here; the words around them are in the template. Each sweep folder
also gets its own report (`analysis.report.write_report`), as `sae-analysis` writes it.

`rebuild(folder)` rewrites the page, the reports, their tables and the plots;
`stale(folder)` lists the committed files a rebuild would change.
"""

from __future__ import annotations

import difflib
import itertools
import re
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from analysis import render
from analysis.benchmark_table import benchmark_tables, benchmark_values, gated_verdicts
from analysis.claims import (
    DERIVED_METRICS,
    Claim,
    Claims,
    Sweep,
    Verdict,
    adjust_family,
    load_claims,
    load_sweeps,
    verdict,
    verdicts,
)
from analysis.effects import fmt
from analysis.matched import relative_to
from analysis.plots import frontier_plot, relative_plot
from analysis.report import effect_text, p_text, write_report
from analysis.tuning import select
from analysis.variants import LABEL
from analysis.verdicts import plan_seeds
from sae_sweep.evaluation.catalogue import title as metric_title

STAMP = "rebuilt by docs/results/rebuild.py from the committed run tables"
"""The reports' "Generated ..." text: fixed, so a rebuilt report is byte-identical."""
PLOTS = "plots"
"""The page's plots: <results folder>/plots/."""


@dataclass
class ResultsFolder:
    """A results folder: its claims, its sweeps, its template and the page it fills."""

    root: Path
    claims: Claims
    sweeps: list[Sweep]

    @classmethod
    def load(cls, root: Path) -> ResultsFolder:
        claims = load_claims(root / "claims.yaml")
        return cls(root, claims, load_sweeps(root, claims))

    @property
    def page(self) -> Path:
        """The page: <results folder>.md beside the folder (docs/results.md)."""
        return self.root.parent / f"{self.root.name}.md"

    @property
    def template(self) -> Path:
        return self.root / "page.md"


# ---------------------------------------------------------------------------------------------
# The page's fields


def verdict_table(vs: list[Verdict]) -> str:
    """One row per claim, data set, metric and comparison (the summary over the band, and
    each matched L0's verdict); one "not in the sweep yet" row per claim and data set whose
    sweep lacks the variants."""
    rows = []
    missing = set()
    for v in vs:
        r = v.result
        if r is None:
            if (v.claim.key, v.sweep.name) in missing:
                continue
            missing.add((v.claim.key, v.sweep.name))
        rows.append(
            {
                "claim": f"({v.claim.key})",
                "data": _where(v.claim, v.sweep),
                "b vs a": f"`{r.b}` vs `{r.a}`" if r else f"not in `{v.sweep.name}` yet",
                "metric": v.metric,
                "margin": v.margin(),
                "L0 band (points)": v.band(),
                "seeds": r.summary.effect.n if r and r.summary else "-",
                "b/a - 1 over the band, 95% CI": v.difference(),
                "verdict": v.words(),
                "per matched L0": v.per_l0(),
                "claim holds?": v.answer(),
            }
        )
    return render.md_table(pd.DataFrame(rows))


def tuning_changes(claims: Claims, sweeps: list[Sweep]) -> str:
    """Per tuned sweep: each variant's chosen value, then every claim's comparison over the
    band at the shared value against at each variant's best (`Sweep.untuned` against
    `Sweep.tuned`), each side adjusted within its claim as the verdict table is: how much a
    verdict owes to the tuning."""
    tuned = [s for s in sweeps if s.tuning is not None and s.untuned is not None]
    if not tuned:
        return "No sweep of these tables tunes a knob: every variant trains at the same values."
    out = []
    for s in tuned:
        t = s.tuning
        chosen = ", ".join(f"`{v}` {t.text(vt.best)}" for v, vt in t.variants.items())
        knobs = ", ".join(f"`{k}`" for k in t.spec.knobs)
        edges = [f"`{v}`" for v, vt in t.variants.items() if vt.edges]
        edge = (f" At the edge of the range tried ({', '.join(edges)}): the best value may lie "
                "beyond." if edges else "")  # fmt: skip
        out += [f"`{s.name}`: {knobs} chosen by {t.metric} at L0 {fmt(t.spec.at_l0)}: {chosen}; "
                f"shared: {t.text(t.shared)}.{edge}{_other_metrics_choose(s)}", ""]  # fmt: skip
    rows = []
    for claim in claims.claims:
        mine = [s for s in tuned if s.kind in claim.sweeps and s.data.tests(claim.key)]
        pairs = [(s, c, m) for s in mine for m in claim.metrics_of(s.data) if m in s.metrics
                 for c in claim.comparisons]  # fmt: skip
        at_best = [verdict(claim, s, c, m) for s, c, m in pairs]
        at_shared = [verdict(claim, replace(s, tuned=s.untuned), c, m) for s, c, m in pairs]
        for side in (at_best, at_shared):
            adjust_family(side, claim.rules.multiplicity)
        for best, shared in zip(at_best, at_shared, strict=True):  # no pair: no row
            if best.result is None:
                continue
            rows.append({
                "claim": f"({claim.key})",
                "data": _where(claim, best.sweep),
                "b vs a": f"`{best.result.b}` vs `{best.result.a}`",
                "metric": best.metric,
                "at the shared value": f"{shared.difference()}: {shared.words()}",
                "each at its best": f"{best.difference()}: {best.words()}",
                "verdict moves?": "no" if shared.words() == best.words() else "yes",
            })  # fmt: skip
    return "\n".join(out) + "\n" + render.md_table(pd.DataFrame(rows))


def _other_metrics_choose(s: Sweep) -> str:
    """' By mmcs the choice would differ: `a` 0.001 (not 0.01).': whether the data set's other
    headline metrics, read at the same reference L0, would choose the same values (a best by
    one metric need not be best by another)."""
    t = s.tuning
    out = []
    for m in s.data.headline:
        if m == t.metric or m not in s.metrics:
            continue
        alt = select(s.runs, replace(t.spec, metric=m), list(t.variants), m)
        moved = [f"`{v}` {alt.chosen(v)} (not {t.chosen(v)})" for v in t.variants
                 if alt.variants[v].best is not None and alt.chosen(v) != t.chosen(v)]  # fmt: skip
        out.append(f" By {m} the choice would differ: {', '.join(moved)}." if moved
                   else f" By {m} the same values would be chosen.")  # fmt: skip
    return "".join(out)


def detectable(claims: Claims, vs: list[Verdict]) -> str:
    """Per data set and headline metric: the smallest effect the seeds could detect and the
    paired seeds that would settle the margin (`analysis.verdicts.plan_seeds`), from the
    verdict table's per-L0 effects."""
    out = []
    for data in claims.data_sets:
        for metric in data.headline:
            mine = [v.result for v in vs if v.sweep.data is data and v.result
                    and v.metric == metric]  # fmt: skip
            effects = [p.judged.effect for r in mine for p in r.points]
            plan = plan_seeds(metric, [e for e in effects if e.n >= 2])
            if plan is not None:
                out.append(f"- {data.title}, {plan.sentence()}")
    return "\n".join(out)


def scale_table(sweeps: list[Sweep]) -> str:
    """Per sweep: variants, runs, steps, seeds, targets hit, SAE wall hours and the commits
    its runs came from (`+dirty`: a tree with uncommitted changes)."""
    rows = []
    for s in sweeps:
        r = s.runs
        done = r[r["status"] == "done"]
        t = (s.targets or {}).get("targets", [])
        hit = sum(x.get("status") == "hit" for x in t)
        wall_hours = pd.to_numeric(r.get("wall_s"), errors="coerce").sum() / 3600
        seeds = sorted(pd.to_numeric(r["seed"], errors="coerce").dropna().astype(int).unique())
        data_seeds = (
            len(pd.to_numeric(r["data.seed"], errors="coerce").dropna().unique())
            if s.data.data_seeds and "data.seed" in r
            else "-"
        )
        rows.append(
            {
                "sweep": f"[`{s.name}`]({_link(s)})",
                "data": s.data.title,
                "variants": len(s.variants.order),
                "runs done / all": f"{len(done)} / {len(r)}",
                "steps x batch": _unique_pair(r, "train.steps", "train.batch_size"),
                "seeds": len(seeds),
                "data seeds": data_seeds,
                "target L0s hit": f"{hit} / {len(t)}" if t else "no targets (grid only)",
                "SAE wall hours": f"{wall_hours:.1f}",
                "commit": ", ".join(
                    f"`{c[:7]}{'+dirty' * c.endswith('+dirty')}`" for c in _commits(r)
                ),  # fmt: skip
            }
        )
    return render.md_table(pd.DataFrame(rows))


def inputs_table(sweeps: list[Sweep]) -> str:
    """The sha256 of every local model and dataset file the runs' activations were computed
    from (their records' `inputs.*`), with the sweeps that used each; a line saying so when
    no run recorded them."""
    rows: dict[tuple[str, str], list[str]] = {}
    for s in sweeps:
        for col in (c for c in s.runs.columns if c.startswith("inputs.")):
            for sha in sorted(set(s.runs[col].dropna().astype(str))):
                rows.setdefault((col.removeprefix("inputs."), sha), []).append(s.name)
    if not rows:
        return ("The runs of these tables do not record their input files' checksums (records "
                "name them since the next edition's sweeps).")  # fmt: skip
    table = pd.DataFrame(
        [
            {"file": f"`{f}`", "sha256": f"`{sha}`", "sweeps": ", ".join(names)}
            for (f, sha), names in sorted(rows.items())
        ]  # fmt: skip
    )
    return render.md_table(table)


BENCHMARK = "benchmark"
"""The sweep kind of SynthSAEBench's sweep: shown in its own section, judged by no claim."""


def benchmark(folder: ResultsFolder) -> str:
    """Per benchmark sweep: its ground-truth table at each target L0 in the published form,
    then the paired verdicts of each gated variant against each modern architecture, as its
    report has them (`analysis.benchmark_table`)."""
    out = []
    for s in (s for s in folder.sweeps if s.kind == BENCHMARK):
        a = s.analyse(folder.claims.reference, folder.claims.rules)
        values = benchmark_values(a)
        if values.empty:
            continue
        commits = ", ".join(f"`{c[:7]}`" for c in _commits(s.runs))
        done = int((s.runs["status"] == "done").sum())
        out += [f"From [`{s.name}`]({_link(s)}) ({done} SAEs, commit {commits}).", ""]
        for target, table in benchmark_tables(values).items():
            out += [f"At L0 {fmt(target)}, mean ± sd over seeds:", "", render.md_table(table), ""]
        lines = gated_verdicts(a)
        out += ["Each gated variant against each modern architecture, seed-paired at the target "
                "L0, Holm-adjusted within each metric of the sweep's report:", ""]  # fmt: skip
        out += [f"- {line}" for line in lines] or ["- no gated and modern pair at a matched L0"]
    return "\n".join(out) if out else "No benchmark sweep is among the committed tables."


def _commits(runs: pd.DataFrame) -> list[str]:
    col = "versions.git_commit"
    return sorted(set(runs[col].dropna().astype(str))) if col in runs else []


def _where(claim: Claim, s: Sweep) -> str:
    """The data set a row of a claim is about, and the sweep kind when it is not the
    claim's first: "TinyStories-260k (gated_penalty_long)"."""
    return s.data.title if s.kind == claim.sweeps[0] else f"{s.data.title} ({s.kind})"


def _key(claim: Claim, s: Sweep) -> str:
    """The data set's key in file names, with the kind as `_where` adds it."""
    return s.data.key if s.kind == claim.sweeps[0] else f"{s.data.key}_{s.kind}"


def _link(s: Sweep) -> str:
    """The sweep's report, relative to the page (which sits beside the results folder)."""
    return f"{s.folder.parent.name}/{s.name}/report.md"


def _unique_pair(r: pd.DataFrame, a: str, b: str) -> str:
    va = sorted(set(pd.to_numeric(r[a], errors="coerce").dropna().astype(int)))
    vb = sorted(set(pd.to_numeric(r[b], errors="coerce").dropna().astype(int)))
    return f"{'/'.join(map(str, va))} x {'/'.join(map(str, vb))}"


def evidence(folder: ResultsFolder, claim: Claim, vs: list[Verdict], plots: bool) -> str:
    """Per data set: the claim's plots and its paired table per metric, then (unless the
    claim says not to) the data set's other metrics for the same pairs, as context."""
    out = [f"*Margins.* {claim.why}"] if claim.why else []
    mine = [v for v in vs if v.claim is claim]
    for s in dict.fromkeys(v.sweep for v in mine):
        out.append(f"#### {_where(claim, s)} ([report]({_link(s)}))")
        here = [v for v in mine if v.sweep is s]
        pairs = list(dict.fromkeys((v.result.a, v.result.b) for v in here if v.result))
        if not pairs:
            out.append("The sweep lacks the compared variants.")
            continue
        for metric in dict.fromkeys(v.metric for v in here):
            img = _claim_plots(folder, claim, s, metric, pairs, plots)
            out.append(f"**{_title(metric)}**{_chance(s, metric)}\n\n{img}")
            out.append(_paired_table([v for v in here if v.metric == metric]))
        if claim.other_metrics:
            for metric in [m for m in s.metrics if m not in {v.metric for v in here}]:
                sub = [
                    Verdict(claim, s, metric, s.compare(a, b, metric, claim.max_l0_fraction,
                                                        claim.rules), "context")
                    for a, b in pairs
                ]  # fmt: skip
                adjust_family(sub, claim.rules.multiplicity)
                out.append(f"**{_title(metric)}**{_chance(s, metric)}")
                out.append(_paired_table(sub))
    return "\n\n".join(out)


def _title(metric: str) -> str:
    return DERIVED_METRICS.get(metric) or metric_title(metric)


def _chance(s: Sweep, metric: str) -> str:
    if metric == "mmcs" and "mmcs_random" in s.runs:
        chance = pd.to_numeric(s.runs["mmcs_random"], errors="coerce").mean()
        return f" (chance level for a random dictionary: {chance:.3f})"
    return ""


def _paired_table(vs: list[Verdict]) -> str:
    rows = []
    for v in vs:
        r = v.result
        if r is None:
            continue
        for p in r.points:
            j = p.judged
            rows.append(
                {
                    "b vs a": f"`{r.b}` vs `{r.a}`",
                    "L0": fmt(p.l0),
                    "seeds": j.effect.n,
                    "a": fmt(p.a),
                    "b": fmt(p.b),
                    "b/a - 1, 95% CI": effect_text(j),
                    "p (adj)": p_text(j.p_diff, j.p_diff_adj),
                    "verdict": j.words(),
                    "L0 match": p.note,
                }
            )
        for t, why in r.excluded:
            rows.append({"b vs a": f"`{r.b}` vs `{r.a}`", "L0": fmt(t),
                         "verdict": "out of verdicts (dense run)", "L0 match": why})  # fmt: skip
    return render.md_table(pd.DataFrame(rows).fillna(""))


def _claim_plots(
    folder: ResultsFolder,
    claim: Claim,
    s: Sweep,
    metric: str,
    pairs: list[tuple[str, str]],
    plots: bool,
) -> str:
    """The compared variants vs L0 (frontiers, or curves: `Metric.frontier`), and the
    compared ratios at matched L0 with their paired CI bands: each variant relative to the
    common `a` when every pair has the same one, else each pair's b relative to its own a
    (the difference a verdict is about, not one across pairs)."""
    labels = list(dict.fromkeys(x for pair in pairs for x in pair))
    stem = f"claim_{claim.key}_{_key(claim, s)}_{metric}"
    runs = s.compared[s.compared[LABEL].isin(labels)]
    refs = list(dict.fromkeys(a for a, _ in pairs))
    reference = refs[0] if len(refs) == 1 else "a"
    band = claim.max_l0_fraction
    if plots:
        title = f"({claim.key}) {metric} vs L0, {_where(claim, s)}"
        front = frontier_plot(runs, metric, order=labels, title=title)
        _save(front, folder.root / PLOTS, f"{stem}_frontier")
        if len(refs) == 1:
            rel = relative_to(runs, metric, reference, labels, band)
            fig = relative_plot(rel, metric, reference, order=labels)
        else:
            # the selections' own short names: "gated_original, init on, warm-up on"
            short = {s.label(x): x.short for c in claim.comparisons for x in (c.a, c.b)}
            per_pair = [
                relative_to(runs, metric, a, [a, b], band).assign(
                    variant=pair_label(short.get(a, a), short.get(b, b))
                )
                for a, b in pairs
            ]
            compared = [r for r in per_pair if len(r)]  # a pair with no matched L0 draws nothing
            rel = pd.concat(compared, ignore_index=True) if compared else per_pair[0]
            fig = relative_plot(rel, metric, reference)
        _save(fig, folder.root / PLOTS, f"{stem}_relative")
    what = reference if len(refs) == 1 else "a, per compared pair"
    where = f"{folder.root.name}/{PLOTS}"
    return (
        f"![({claim.key}) {metric} vs L0, {_where(claim, s)}]({where}/{stem}_frontier.png) "
        f"![({claim.key}) {metric} relative to {what}]({where}/{stem}_relative.png)"
    )


def pair_label(a: str, b: str) -> str:
    """'b vs a' for two short names ("gated_original, init on, warm-up on"), naming what the
    two share once, on a line of its own: "init on vs init off\\n(gated_original, warm-up on)"."""
    pa, pb = a.split(", "), b.split(", ")
    shared = [p for p in pa if p in pb]
    only_b = ", ".join(p for p in pb if p not in shared)
    only_a = ", ".join(p for p in pa if p not in shared)
    return f"{only_b} vs {only_a}" + (f"\n({', '.join(shared)})" if shared else "")


def _save(fig, plot_dir: Path, stem: str) -> None:
    plot_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot_dir / f"{stem}.png", dpi=110, metadata={"Software": None})


def build_page(folder: ResultsFolder, plots: bool) -> str:
    """The page's text: the template with every field filled (plots drawn when `plots`)."""
    vs = verdicts(folder.claims, folder.sweeps)
    fields = {
        "verdicts": verdict_table(vs),
        "scale": scale_table(folder.sweeps),
        "detectable": detectable(folder.claims, vs),
        "synthsaebench": benchmark(folder),
        "inputs": inputs_table(folder.sweeps),
        "tuning": tuning_changes(folder.claims, folder.sweeps),
    }
    for claim in folder.claims.claims:
        fields[f"evidence_{claim.key}"] = evidence(folder, claim, vs, plots)
    text = folder.template.read_text()
    used = set(re.findall(r"\{\{(\w+)\}\}", text))
    if used - set(fields):
        raise KeyError(
            f"{folder.template} has fields no claim fills: {sorted(used - set(fields))} "
            f"(a claim with key k fills {{{{evidence_k}}}})"
        )
    return re.sub(r"\{\{(\w+)\}\}", lambda m: fields[m.group(1)], text)


# ---------------------------------------------------------------------------------------------
# The sweep reports, rebuilding and checking


def write_sweep_report(folder: ResultsFolder, s: Sweep, out_dir: Path, plots: bool) -> Path:
    """The sweep's own report (every pair, every metric), as `sae-analysis` writes it, less
    the copies of what is committed already (the runs table, the one-file HTML, SVGs)."""
    a = s.analyse(folder.claims.reference, folder.claims.rules)
    paths = write_report(
        a.runs,
        out_dir,
        title=f"Sweep report: {s.name}",
        analysis=a,
        targets=s.targets,
        generated=STAMP,
        plots=plots,
    )
    svg = [p for p in paths.plots if p.suffix == ".svg"]  # large, and the page shows PNGs
    for copy in (paths.report_html, out_dir / "tables" / "runs.csv", *svg):
        copy.unlink(missing_ok=True)
    return paths.report_md


def _show_diff(committed: Path, rebuilt: Path, lines: int = 12) -> None:
    old = committed.read_text().splitlines() if committed.exists() else []
    diff = difflib.unified_diff(old, rebuilt.read_text().splitlines(), lineterm="", n=0)
    for line in itertools.islice(diff, lines):
        print(line[-260:], file=sys.stderr)


def stale(folder: ResultsFolder, reports: bool = True) -> list[Path]:
    """The committed files (the page, and the sweep reports) a rebuild would change; the
    first lines of each report's difference go to stderr."""
    page = build_page(folder, plots=False)
    out = [] if folder.page.exists() and folder.page.read_text() == page else [folder.page]
    if not reports:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        for s in folder.sweeps:
            md = write_sweep_report(folder, s, Path(tmp) / s.name, plots=False)
            committed = s.folder / "report.md"
            if not committed.exists() or committed.read_text() != md.read_text():
                out.append(committed)
                _show_diff(committed, md)
    return out


def rebuild(folder: ResultsFolder, plots: bool = True, reports: bool = True) -> None:
    """Rewrite the page and (when `reports`) every sweep's report with its tables; the
    plots too when `plots`."""
    page = build_page(folder, plots)
    if reports:
        for s in folder.sweeps:
            write_sweep_report(folder, s, s.folder, plots)
    folder.page.write_text(page)
