"""Publish a sweep's analysis to W&B: a summary run and a W&B Report.

Two steps, each reported:
1. summary run (job_type "analysis", in the sweep's group): the runs table, the pairwise
   comparison tables, a Pareto scatter per metric (W&B table plot + the PNG), and the
   report files as an artifact;
2. a W&B Report (wandb-workspaces) with the paired-CI verdicts, live scatter panels over the group's
   runs, the runs table and the comparison tables.
Both name the frontier runs' SAE artifacts (each job logs its SAELens folder as
`sae-<run id>`); online, the summary run also uses them, so W&B's lineage graph links the
analysis to the SAEs it picked.

Mode (`WANDB_MODE`, else "online"):
- online: both steps. If the second fails after the first succeeded, the result says so
  (`ok` False, `describe()` names what was and was not published): never half-published
  silently.
- offline: step 1 is written to a local offline run, step 2 needs the server and is not
  attempted; `describe()` prints the `wandb sync` command and how to build the Report later.
- disabled: nothing is logged; the local report is all there is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.compare import pairs_table
from analysis.model import Analysis, primary_metric
from analysis.render import md_table as _md_table
from analysis.report import ReportPaths, verdict_rows


@dataclass
class PublishResult:
    mode: str
    """"online", "offline" or "disabled"."""
    project: str
    group: str | None
    steps: dict[str, str] = field(default_factory=dict)
    """{step: "ok" | "skipped: why" | "FAILED: error"}."""
    run_url: str | None = None
    run_dir: str | None = None
    """Local folder of the summary run (offline: what `wandb sync` uploads)."""
    report_url: str | None = None

    @property
    def ok(self) -> bool:
        return not any(s.startswith("FAILED") for s in self.steps.values())

    def describe(self, report_only_cmd: str = "sae-analysis ... --publish --report-only") -> str:
        lines = [f"W&B publish ({self.mode}) to {self.project}, group {self.group}:"]
        lines += [f"  {k}: {v}" for k, v in self.steps.items()]
        if self.run_url:
            lines.append(f"  summary run: {self.run_url}")
        if self.report_url:
            lines.append(f"  W&B report: {self.report_url}")
        if self.mode == "offline" and self.run_dir:
            lines.append("  Nothing was uploaded (offline). To publish, run:")
            lines.append(f"    wandb sync {self.run_dir}")
            lines.append(f"  then, online, build the W&B Report with: {report_only_cmd}")
        if self.mode == "disabled":
            lines.append("  WANDB_MODE=disabled: nothing logged; the local report is the output.")
        if not self.ok:
            done = [k for k, v in self.steps.items() if v == "ok"]
            lines.append(
                "  PARTIALLY PUBLISHED: only "
                + (", ".join(done) or "nothing")
                + f" reached W&B. Fix the error and re-run ({report_only_cmd} for the report)."
            )
        return "\n".join(lines)


def _table_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A DataFrame W&B tables accept: tuples and objects as strings."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object or str(out[c].dtype).startswith("str"):
            out[c] = out[c].map(lambda v: "" if v is None else str(v))
    return out


def frontier_saes(a: Analysis) -> pd.DataFrame:
    """The runs on the primary metric's frontiers, with their SAE artifact (None if the job
    logged none). Columns: variant_label, run_id, l0, <metric>, sae_artifact."""
    pm = primary_metric(a)
    cols = ["variant_label", "run_id", "l0", pm or "metric", "sae_artifact"]
    if pm is None:
        return pd.DataFrame(columns=cols)
    points = a.metrics[pm].points
    ids = {i.strip() for r in points[points["on_frontier"]]["run_ids"] for i in r.split(",")}
    runs = a.runs[a.runs["run_id"].isin(ids)].copy()
    if "sae_artifact" not in runs:
        runs["sae_artifact"] = None
    runs["sae_artifact"] = runs["sae_artifact"].where(runs["sae_artifact"].notna(), None)
    return runs[cols].sort_values(["variant_label", "l0"]).reset_index(drop=True)


def _link_sae_artifacts(run: Any, saes: pd.DataFrame, project: str, entity: str | None) -> str:
    """Online: the summary run uses each frontier SAE artifact (W&B lineage). Returns the
    outcome for the publish steps."""
    names = [n for n in saes["sae_artifact"] if n]
    missing = len(saes) - len(names)
    prefix = f"{entity}/{project}" if entity else project
    failed = []
    for name in names:
        try:
            run.use_artifact(f"{prefix}/{name}:latest")
        except Exception as e:  # noqa: BLE001 - a missing artifact must not stop publishing
            failed.append(f"{name} ({type(e).__name__})")
    note = f"{len(names) - len(failed)} of {len(saes)} frontier SAEs linked"
    if missing:
        note += f"; {missing} jobs logged no artifact (W&B off)"
    return f"FAILED: {note}; not found: {', '.join(failed)}" if failed else f"ok: {note}"


def log_summary_run(
    a: Analysis, paths: ReportPaths, project: str, group: str | None, entity: str | None,
    mode: str, out_dir: Path, links: dict[str, str] | None = None,
) -> Any:  # fmt: skip
    """Step 1: the summary run. Returns the finished run. `links` receives `outcome`, how
    the frontier SAE artifacts were linked (online only)."""
    import wandb

    run = wandb.init(
        project=project, entity=entity, group=group, job_type="analysis",
        name=f"{group or 'sweep'}-analysis", dir=str(out_dir), mode=mode,
        config={"analysis": {"variants": a.variants.knobs, "n_runs": len(a.runs)}},
    )  # fmt: skip
    try:
        runs_t = wandb.Table(dataframe=_table_frame(a.runs))
        logs: dict[str, Any] = {"runs": runs_t}
        verdicts = verdict_rows(a)
        if len(verdicts):
            logs["verdicts"] = wandb.Table(dataframe=_table_frame(verdicts))
        for m, ma in a.metrics.items():
            pts = ma.points[ma.points["on_frontier"]]
            t = wandb.Table(dataframe=_table_frame(pts))
            logs[f"frontier/{m}"] = t
            logs[f"pareto/{m}"] = wandb.plot.scatter(t, "l0", m, title=f"{m} vs L0 (frontier)")
            png = [p for p in paths.plots if p.name == f"frontier_{m}.png"]
            if png:
                logs[f"pareto_png/{m}"] = wandb.Image(str(png[0]))
            if ma.comparisons:
                logs[f"comparisons/{m}"] = wandb.Table(
                    dataframe=_table_frame(pairs_table(ma.comparisons))
                )
        saes = frontier_saes(a)
        logs["frontier_saes"] = wandb.Table(dataframe=_table_frame(saes))
        run.log(logs)
        if mode == "online" and len(saes) and links is not None:
            links["outcome"] = _link_sae_artifacts(run, saes, project, entity)
        art = wandb.Artifact(f"{group or 'sweep'}-report", type="report")
        for p in paths:
            art.add_file(str(p), name=str(p.relative_to(paths.report_md.parent)))
        run.log_artifact(art)
    finally:
        run.finish()
    return run


def build_wandb_report(
    a: Analysis, project: str, group: str | None, entity: str, title: str
) -> str:
    """Step 2: a W&B Report (wandb-workspaces); returns its URL."""
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError as e:
        raise RuntimeError("W&B Reports need wandb-workspaces: pip install wandb-workspaces") from e

    runset = wr.Runset(
        entity=entity, project=project, name=group or "runs",
        filters=f"Metric('Group') == '{group}'" if group else "",
    )  # fmt: skip
    panels = [
        wr.ScatterPlot(title=f"{m} vs L0", x=wr.SummaryMetric("l0"), y=wr.SummaryMetric(m),
                       log_x=True)
        for m in a.metrics
    ]  # fmt: skip
    panels.append(wr.WeavePanelSummaryTable(table_name="runs"))
    pm = primary_metric(a)
    blocks: list[Any] = [wr.H1(title)]
    verdicts = verdict_rows(a)
    if len(verdicts):
        blocks += [wr.H2("Verdicts (paired seeds, 95% CI)"),
                   wr.MarkdownBlock(text=_md_table(verdicts))]  # fmt: skip
    if pm:
        bands = a.metrics[pm].bands
        blocks += [wr.H2(f"Lowest frontier per L0 band ({pm})"),
                   wr.MarkdownBlock(text=_md_table(bands))]  # fmt: skip
    blocks.append(wr.PanelGrid(runsets=[runset], panels=panels))
    for m, ma in a.metrics.items():
        if ma.comparisons:
            blocks += [
                wr.H2(f"Pairwise comparisons: {m}"),
                wr.MarkdownBlock(text=_md_table(pairs_table(ma.comparisons))),
            ]
    saes = frontier_saes(a)
    if len(saes):
        saes["sae_artifact"] = [
            f"[{n}](https://wandb.ai/{entity}/{project}/artifacts/sae/{n}/latest)" if n else "none"
            for n in saes["sae_artifact"]
        ]
        blocks += [
            wr.H2(f"Frontier SAEs ({primary_metric(a)}): SAELens folders as W&B artifacts"),
            wr.MarkdownBlock(text=_md_table(saes)),
        ]
    problems = a.problems
    blocks += [
        wr.H2(f"Failed and unfinished runs ({len(problems)})"),
        wr.MarkdownBlock(text=_md_table(problems[["run_id", "status", "error"]])),
    ]
    report = wr.Report(project=project, entity=entity, title=title, blocks=blocks)
    report.save()
    return report.url


def publish(
    a: Analysis,
    paths: ReportPaths,
    project: str,
    group: str | None = None,
    out_dir: str | Path | None = None,
    mode: str | None = None,
    report_only: bool = False,
    title: str | None = None,
) -> PublishResult:
    """Publish to W&B project `project` ("entity/project" or "project"). Never raises on a
    W&B error: the returned result records each step's outcome."""
    mode = (mode or os.environ.get("WANDB_MODE") or "online").lower()
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)
    entity, _, proj = project.rpartition("/")
    entity = entity or None
    res = PublishResult(mode, project, group)
    out_dir = Path(out_dir or paths.report_md.parent)
    if mode == "disabled":
        res.steps = {"summary run": "skipped: disabled", "W&B report": "skipped: disabled"}
        return res
    if report_only:
        res.steps["summary run"] = "skipped: --report-only"
    else:
        try:
            links: dict[str, str] = {}
            run = log_summary_run(a, paths, proj, group, entity, mode, out_dir, links=links)
            res.run_url = getattr(run, "url", None) if mode == "online" else None
            entity = entity or getattr(run, "entity", None)
            res.run_dir = str(Path(run.dir).parent) if getattr(run, "dir", None) else None
            res.steps["summary run"] = "ok" if mode == "online" else "written locally"
            if links:
                res.steps["frontier SAE artifacts"] = links["outcome"]
        except Exception as e:  # noqa: BLE001 - any W&B error is reported, not raised
            res.steps["summary run"] = f"FAILED: {type(e).__name__}: {e}"
    if mode != "online":
        res.steps["W&B report"] = "skipped: needs online mode (a report is built on the server)"
        return res
    if res.steps.get("summary run", "").startswith("FAILED"):
        res.steps["W&B report"] = "skipped: summary run failed"
        return res
    try:
        if entity is None:
            import wandb

            entity = wandb.Api().default_entity
        res.report_url = build_wandb_report(
            a, proj, group, entity, title or f"Sweep report: {group or proj}"
        )
        res.steps["W&B report"] = "ok"
    except Exception as e:  # noqa: BLE001
        res.steps["W&B report"] = f"FAILED: {type(e).__name__}: {e}"
    return res
