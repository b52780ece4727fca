"""Publish a sweep's analysis to W&B: a summary run and a W&B Report of one sweep instance.

Before anything is sent, the inputs are checked (report title length, entity and project
names). Then, online:
1. the jobs: offline job runs not uploaded yet are synced (`analysis.sync`), and every job
   run the records name must be on the server, in the sweep instance's group; otherwise
   nothing is linked (the report's panels and artifact links would be empty) and the result
   says which runs are missing and the one command that uploads them;
2. summary run (job_type "analysis", in the instance's group): the runs table, verdicts,
   comparison tables, the report's PNG figures (frontiers, relative plots with their CI
   band) and the report files as an artifact; online it uses the frontier runs' SAE
   artifacts (W&B lineage). Its id is kept in `wandb_publish.json` beside the report, so
   re-publishing continues the same run instead of adding a second one;
3. a W&B Report (wandb-workspaces): what the sweep is (sweep, instance, commit, date), the
   verdicts first, then per compared metric a live scatter of every job run (L0 against the
   metric, log axes as in the report's plots, one run set and colour per variant, the
   running best as a line) and the report's own figures of each variant's frontier and the
   relative plot with its CI band (logged to the summary run), then the band table,
   pairwise comparisons, the frontier SAEs (links on the configured W&B host) and the runs
   that did not finish. Its id is kept too: re-publishing updates the same report.

Mode (`WANDB_MODE`, else "online"):
- online: all steps; a failed step is reported (`ok` False, `describe()` says what was and
  was not published), never half-published silently.
- offline: the summary run is written locally; `describe()` prints the one command that
  uploads everything and builds the Report.
- disabled: nothing is logged; the local report is all there is.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import sync
from analysis.compare import pairs_table
from analysis.model import Analysis, primary_metric
from analysis.plots import variant_styles
from analysis.render import md_table as _md_table
from analysis.report import ReportPaths, verdict_rows
from analysis.variants import LABEL
from sae_sweep.evaluation.catalogue import METRICS, higher_is_better
from sae_sweep.evaluation.catalogue import title as title_of
from sae_sweep.record import layout
from sae_sweep.record.atomic import atomic_write_json
from sae_sweep.record.run_logger import SAE_ARTIFACT_TYPE

SUMMARY_JOB_TYPE = "analysis"
MAX_TITLE = 128
"""The longest title a W&B Report takes (wandb-workspaces' `Report.title`)."""
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
"""An entity or project name W&B accepts: letters, digits, `_`, `-`, `.`."""


@dataclass
class PublishResult:
    mode: str
    """"online", "offline" or "disabled"."""
    project: str
    group: str | None
    steps: dict[str, str] = field(default_factory=dict)
    """{step: "ok..." | "skipped: why" | "FAILED: error"}."""
    run_url: str | None = None
    run_dir: str | None = None
    """Local folder of the summary run (offline: what the sync uploads)."""
    report_url: str | None = None
    report_updated: bool = False
    """True: an earlier publish's report was updated; False: a new report."""
    publish_cmd: str = "WANDB_MODE=online sae-analysis SWEEP --publish"
    """The one command that uploads the offline runs and builds the Report."""

    @property
    def ok(self) -> bool:
        return not any(s.startswith("FAILED") for s in self.steps.values())

    def describe(self) -> str:
        lines = [f"W&B publish ({self.mode}) to {self.project}, group {self.group}:"]
        lines += [f"  {k}: {v}" for k, v in self.steps.items()]
        if self.run_url:
            lines.append(f"  summary run: {self.run_url}")
        if self.report_url:
            how = "updated" if self.report_updated else "new"
            lines.append(f"  W&B report ({how}): {self.report_url}")
        if self.mode == "offline":
            lines.append(
                "  Nothing was uploaded (offline). To upload every run of the sweep "
                "(jobs, summary, SAE artifacts) and build the W&B Report, run:"
            )
            lines.append(f"    {self.publish_cmd}")
        if self.mode == "disabled":
            lines.append("  WANDB_MODE=disabled: nothing logged; the local report is the output.")
        if not self.ok:
            done = [k for k, v in self.steps.items() if v.startswith("ok")]
            what = (
                f"PARTIALLY PUBLISHED: only {', '.join(done)}" if done else "NOT PUBLISHED: nothing"
            )
            lines.append(f"  {what} reached W&B. Fix the error and run again: {self.publish_cmd}")
        return "\n".join(lines)


def check_inputs(title: str, entity: str | None, project: str) -> None:
    """Refuse what W&B would reject only after the summary run was published."""
    if len(title) > MAX_TITLE:
        raise ValueError(f"report title is {len(title)} characters, W&B takes at most "
                         f"{MAX_TITLE}: shorten --title")  # fmt: skip
    for what, name in (("entity", entity), ("project", project)):
        if name is not None and not _NAME.match(name):
            raise ValueError(
                f"W&B {what} {name!r} is not a valid name (letters, digits, _ - . only, at "
                "most 128): fix --wandb ENTITY/PROJECT or logger.project"
            )


def default_title(a: Analysis, group: str | None, manifest: dict | None) -> str:
    """`<sweep>: <n> variants, <instance>`, cut to W&B's limit."""
    name = (manifest or {}).get("name") or _unique(a.runs, "sweep") or "sweep"
    title = f"{name}: {len(a.variants.order)} variants" + (f" ({group})" if group else "")
    return title[:MAX_TITLE]


def _table_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A DataFrame W&B tables accept: tuples and objects as strings."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object or str(out[c].dtype).startswith("str"):
            out[c] = out[c].map(lambda v: "" if v is None else str(v))
    return out


def _unique(runs: pd.DataFrame, col: str) -> str | None:
    vals = runs[col].dropna().astype(str).unique() if col in runs else []
    return vals[0] if len(vals) == 1 else None


def wandb_run_ids(runs: pd.DataFrame) -> pd.Series:
    """Each run's W&B run id (None where the job logged no W&B run): a local record keeps it
    in its folder, a run loaded from W&B is its id."""

    def one(row: pd.Series) -> str | None:
        if row.get("source") == "wandb":
            return str(row["run_id"]).rsplit("/", 1)[-1]
        path = row.get("path")
        p = Path(str(path)) / layout.WANDB_RUN_ID if isinstance(path, str) else None
        return p.read_text().strip() if p is not None and p.is_file() else None

    return runs.apply(one, axis=1) if len(runs) else pd.Series(dtype=object)


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


def artifact_url(app_url: str, entity: str, project: str, name: str) -> str:
    """An SAE artifact's page on the W&B host the API talks to (WANDB_BASE_URL / settings)."""
    return f"{app_url.rstrip('/')}/{entity}/{project}/artifacts/{SAE_ARTIFACT_TYPE}/{name}/latest"


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


def read_record(out_dir: Path) -> dict:
    """What an earlier publish from `out_dir` made: summary run id, report id and URL."""
    return layout.read_json(Path(out_dir) / layout.WANDB_PUBLISH) or {}


def _write_record(out_dir: Path, record: dict) -> None:
    atomic_write_json(Path(out_dir) / layout.WANDB_PUBLISH, record)


def log_summary_run(
    a: Analysis, paths: ReportPaths, project: str, group: str | None, entity: str | None,
    mode: str, out_dir: Path, links: dict[str, str] | None = None, run_id: str | None = None,
) -> Any:  # fmt: skip
    """Step 2: the summary run (`run_id`: an earlier publish's, continued). Returns the
    finished run. `links` receives `outcome`, how the frontier SAE artifacts were linked
    (online only)."""
    import wandb

    run = wandb.init(
        project=project, entity=entity, group=group, job_type=SUMMARY_JOB_TYPE,
        name=f"{group or 'sweep'} analysis", dir=str(out_dir), mode=mode, id=run_id,
        resume="allow", config={"analysis": {"variants": a.variants.knobs,
                                             "n_runs": len(a.runs)}},
        settings=wandb.Settings(silent=True, console="off", save_code=False, disable_git=True,
                                x_save_requirements=False),
    )  # fmt: skip
    try:
        logs: dict[str, Any] = {"runs": wandb.Table(dataframe=_table_frame(a.runs))}
        verdicts = verdict_rows(a)
        if len(verdicts):
            logs["verdicts"] = wandb.Table(dataframe=_table_frame(verdicts))
        for m, ma in a.metrics.items():
            pts = ma.points[ma.points["on_frontier"]]
            t = wandb.Table(dataframe=_table_frame(pts))
            logs[f"frontier/{m}"] = t
            for key, png in figure_keys(paths, m).items():
                logs[key] = wandb.Image(str(png))
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


def figure_keys(paths: ReportPaths, metric: str) -> dict[str, Path]:
    """{summary-run media key: PNG} of the report's figures of `metric`: each variant's
    frontier, and each variant relative to the reference with the paired CI band."""
    pngs = {p.name: p for p in paths.plots if p.suffix == ".png"}
    keys = {f"figures/frontier_{metric}": pngs.get(f"frontier_{metric}.png"),
            f"figures/relative_{metric}": pngs.get(f"relative_{metric}.png")}  # fmt: skip
    return {k: p for k, p in keys.items() if p is not None}


@dataclass
class ReportContext:
    """What the W&B Report states besides the analysis: where it comes from."""

    sweep: str | None = None
    commit: str | None = None
    generated: str = field(
        default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    )
    app_url: str = "https://wandb.ai"
    """The W&B host's app URL, for links (the API's: WANDB_BASE_URL / wandb settings)."""
    figures: dict[str, dict[str, Path]] = field(default_factory=dict)
    """{metric: `figure_keys`}: the figures logged to the summary run."""


def _q(value: str) -> str:
    if "'" in value:
        raise ValueError(f"W&B filters cannot hold a quote: {value!r}")
    return f"'{value}'"


def job_runsets(
    a: Analysis, entity: str, project: str, group: str | None
) -> list[Any]:  # fmt: skip
    """One run set per variant (its name, its runs in its colour of the report's plots) of
    the instance's job runs; one run set of them all when the runs name no variant."""
    import wandb_workspaces.reports.v2 as wr

    base = f"Metric('JobType') != {_q(SUMMARY_JOB_TYPE)}"
    if group:
        base = f"Metric('Group') == {_q(group)} and {base}"
    runs = a.runs.assign(_wandb_id=wandb_run_ids(a.runs))
    styles = variant_styles(a.variants.order)
    names = {v: runs.loc[runs[LABEL] == v, "variant"].dropna().astype(str).unique()
             if "variant" in runs else [] for v in a.variants.order}  # fmt: skip
    if not names or any(len(n) != 1 for n in names.values()):
        return [wr.Runset(entity=entity, project=project, name="job runs", filters=base)]
    sets = []
    for v, (config_variant,) in names.items():
        ids = runs.loc[(runs[LABEL] == v), "_wandb_id"].dropna()
        colour = styles[v]["color"]
        sets.append(wr.Runset(
            entity=entity, project=project, name=v,
            # the key as W&B's UI stores a config filter: `.value` after the top-level key
            filters=f"{base} and Config('variant.value') == {_q(config_variant)}",
            run_settings={i: wr.RunSettings(color=colour) for i in ids},
            pinned_columns=["summary:l0", *[f"summary:{m}" for m in a.metrics]],
        ))  # fmt: skip
    return sets


def build_wandb_report(
    a: Analysis, project: str, group: str | None, entity: str, title: str,
    context: ReportContext | None = None,
) -> Any:  # fmt: skip
    """Step 3: the W&B Report (wandb-workspaces), not saved yet (`Report.save` sends it)."""
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError as e:
        raise RuntimeError("W&B Reports need wandb-workspaces: pip install wandb-workspaces") from e
    ctx = context or ReportContext()
    n_done = int((a.runs["status"] == "done").sum())
    about = [
        f"**Sweep** `{ctx.sweep or '?'}`, instance `{group or '?'}` (its W&B group)",
        f"**Commit** `{ctx.commit or 'unknown'}`",
        f"**Generated** {ctx.generated}",
        f"**Runs** {len(a.runs)} ({n_done} done), {len(a.variants.order)} variants"
        + (f", relative plots against `{a.reference}`" if a.reference else ""),
    ]
    blocks: list[Any] = [wr.MarkdownBlock(text="  \n".join(about))]
    verdicts = verdict_rows(a)
    blocks.append(wr.H2("Verdicts (paired seeds at matched L0, 95% CI)"))
    blocks.append(wr.MarkdownBlock(text=_md_table(verdicts) if len(verdicts) else
                                   "No verdicts: no pair of variants shares seeds at a "
                                   "matched L0 (see the local report)."))  # fmt: skip
    runsets = job_runsets(a, entity, project, group)
    summary = wr.Runset(
        entity=entity, project=project, name="summary run",
        filters=(f"Metric('Group') == {_q(group)} and " if group else "")
        + f"Metric('JobType') == {_q(SUMMARY_JOB_TYPE)}",
    )  # fmt: skip
    for m in a.metrics:
        better = "higher" if higher_is_better(m) else "lower"
        log_y = bool(METRICS[m].log_scale) if m in METRICS else False
        blocks += [
            wr.H2(f"{title_of(m)} against L0 ({better} is better)"),
            wr.MarkdownBlock(text=(
                "Live: every job run of the sweep instance, one run set and colour per "
                "variant (hover a point for its variant, L0 knob and seed); the line is the "
                f"running {'maximum' if better == 'higher' else 'minimum'} over all runs. "
                "Below: each variant's frontier (seed means, seed spread) and each variant "
                "relative to the reference at matched L0 with its paired 95% CI band, as in "
                "the local report.")),
            wr.PanelGrid(runsets=runsets, panels=[wr.ScatterPlot(
                title=f"{m} vs L0", x=wr.SummaryMetric("l0"), y=wr.SummaryMetric(m),
                log_x=True, log_y=log_y or None,
                running_ymin=better == "lower" or None, running_ymax=better == "higher" or None,
                layout=wr.Layout(w=24, h=10),
            )]),
        ]  # fmt: skip
        keys = list(ctx.figures.get(m, {}))
        if keys:
            blocks.append(wr.PanelGrid(runsets=[summary], hide_run_sets=True, panels=[
                wr.MediaBrowser(title=k.split("/")[-1], media_keys=[k], num_columns=1,
                                layout=wr.Layout(x=12 * i, w=12, h=10))
                for i, k in enumerate(keys)
            ]))  # fmt: skip
    pm = primary_metric(a)
    if pm:
        blocks += [wr.H2(f"Lowest frontier per L0 band ({pm})"),
                   wr.MarkdownBlock(text=_md_table(a.metrics[pm].bands))]  # fmt: skip
    for m, ma in a.metrics.items():
        if ma.comparisons:
            blocks += [wr.H2(f"Pairwise comparisons: {m}"),
                       wr.MarkdownBlock(text=_md_table(pairs_table(ma.comparisons)))]  # fmt: skip
    saes = frontier_saes(a)
    if len(saes):
        saes["sae_artifact"] = [
            f"[{n}]({artifact_url(ctx.app_url, entity, project, n)})" if n else "none"
            for n in saes["sae_artifact"]
        ]
        blocks += [
            wr.H2(f"Frontier SAEs ({pm}): SAELens folders as W&B artifacts"),
            wr.MarkdownBlock(text=_md_table(saes)),
        ]
    problems = a.problems
    blocks += [
        wr.H2(f"Failed and unfinished runs ({len(problems)})"),
        wr.MarkdownBlock(text=_md_table(problems[["run_id", "status", "error"]])),
    ]
    return wr.Report(project=project, entity=entity, title=title, blocks=blocks)


def jobs_on_server(api: Any, entity: str, project: str, group: str | None,
                   expected: set[str]) -> set[str]:  # fmt: skip
    """The job run ids of `expected` that the W&B server does not have."""
    filters = {"group": group} if group else None
    have = {getattr(r, "id", None) for r in api.runs(f"{entity}/{project}", filters=filters)}
    return expected - have


def publish(
    a: Analysis,
    paths: ReportPaths,
    project: str,
    group: str | None = None,
    out_dir: str | Path | None = None,
    mode: str | None = None,
    report_only: bool = False,
    title: str | None = None,
    sweep_dir: str | Path | None = None,
    manifest: dict | None = None,
    runner: sync.SyncRunner | None = None,
    publish_cmd: str | None = None,
) -> PublishResult:
    """Publish to W&B project `project` ("entity/project" or "project"). Bad inputs raise
    ValueError before anything is sent; after that it never raises on a W&B error: the
    result records each step's outcome. `sweep_dir`: the sweep whose offline job runs are
    synced first (online); `runner` runs `wandb sync` (default `analysis.sync.wandb_sync`)."""
    mode = (mode or os.environ.get("WANDB_MODE") or "online").lower()
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)
    entity, _, proj = project.rpartition("/")
    entity = entity or None
    title = title or default_title(a, group, manifest)
    check_inputs(title, entity, proj)
    res = PublishResult(mode, project, group)
    if publish_cmd:
        res.publish_cmd = publish_cmd
    out_dir = Path(out_dir or paths.report_md.parent)
    record = read_record(out_dir)
    if record.get("group") not in (None, group) or record.get("project") not in (None, proj):
        record = {}  # another instance or project: a new summary run and report
    if mode == "disabled":
        res.steps = {"summary run": "skipped: disabled", "W&B report": "skipped: disabled"}
        return res
    api = None
    if mode == "online":
        try:
            import wandb

            api = wandb.Api()
            entity = entity or api.default_entity
            if sweep_dir is not None:
                res.steps["sync"] = _sync_step(Path(sweep_dir), runner or sync.wandb_sync)
            expected = set(wandb_run_ids(a.runs).dropna())
            missing = jobs_on_server(api, entity, proj, group, expected)
            res.steps["jobs on W&B"] = (
                f"FAILED: {len(missing)} of {len(expected)} job runs are not on W&B in group "
                f"{group} (e.g. {', '.join(sorted(missing)[:3])}); upload them: "
                f"{res.publish_cmd}" if missing else
                f"ok: {len(expected)} job runs in group {group}"
            )  # fmt: skip
        except Exception as e:  # noqa: BLE001 - login, network
            res.steps["jobs on W&B"] = f"FAILED: {type(e).__name__}: {e}"
        if not res.ok:
            why = "skipped: needs every job run on W&B first (nothing linked)"
            res.steps["summary run"] = res.steps["W&B report"] = why
            return res
    if report_only:
        res.steps["summary run"] = "skipped: --report-only"
    else:
        try:
            links: dict[str, str] = {}
            run = log_summary_run(a, paths, proj, group, entity, mode, out_dir, links=links,
                                  run_id=record.get("summary_run_id"))  # fmt: skip
            record.update(project=proj, group=group, summary_run_id=getattr(run, "id", None))
            _write_record(out_dir, record)
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
        from wandb_workspaces._graphql import get_app_url

        ctx = ReportContext(
            sweep=(manifest or {}).get("name") or _unique(a.runs, "sweep"),
            commit=(manifest or {}).get("git_commit") or _unique(a.runs, "git_commit"),
            app_url=get_app_url(api),
            figures={m: figure_keys(paths, m) for m in a.metrics},
        )
        report = build_wandb_report(a, proj, group, entity, title, ctx)
        res.report_updated = bool(record.get("report_id")) and record.get("entity") == entity
        if res.report_updated:
            report.id = record["report_id"]
        report.save()
        res.report_url = report.url
        record.update(entity=entity, project=proj, group=group, report_id=report.id,
                      report_url=res.report_url)  # fmt: skip
        _write_record(out_dir, record)
        res.steps["W&B report"] = "ok: updated" if res.report_updated else "ok: new report"
    except Exception as e:  # noqa: BLE001
        res.steps["W&B report"] = f"FAILED: {type(e).__name__}: {e}"
    return res


def _sync_step(sweep_dir: Path, runner: sync.SyncRunner) -> str:
    """Upload the sweep's offline runs not uploaded yet (`analysis.sync`)."""
    if not sync.offline_runs(sweep_dir):
        return "ok: no offline runs"
    out = sync.sync_sweep(sweep_dir, runner)
    if not out.ok:
        first = next(iter(out.failed.items()))
        return f"FAILED: {len(out.failed)} offline runs not uploaded (e.g. {first[0]}: {first[1]})"
    return f"ok: {len(out.synced)} offline runs uploaded now, {len(out.earlier)} earlier"
