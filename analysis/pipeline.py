"""`run_analysis`: load -> analyse -> report (-> publish), the one call behind
`sae-analysis` and behind the sweep runner's automatic analysis at the end of a sweep."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from analysis.load import concat_runs, load_runs, load_wandb_runs, read_sweep_manifest
from analysis.report import ReportPaths, analyse, write_report


def _unique(runs: pd.DataFrame, col: str) -> str | None:
    if col not in runs.columns:
        return None
    vals = runs[col].dropna().astype(str).unique()
    return vals[0] if len(vals) == 1 else None


def sweep_group(runs: pd.DataFrame) -> str | None:
    """The W&B group of the runs (= the sweep): `logger.group`, else the sweep name."""
    return _unique(runs, "logger.group") or _unique(runs, "sweep")


def wandb_project(runs: pd.DataFrame) -> str | None:
    """ "entity/project" (or "project") from the runs' logger config, if they agree."""
    project = _unique(runs, "logger.project")
    entity = _unique(runs, "logger.entity")
    if project and entity and "/" not in project:
        return f"{entity}/{project}"
    return project


def default_out_dir(sweep_dirs: list[Path], group: str | None) -> Path:
    """One sweep folder: the report goes into it. Otherwise ./sae-analysis/<name>."""
    if len(sweep_dirs) == 1:
        return sweep_dirs[0]
    names = [p.resolve().name for p in sweep_dirs] or [group or "wandb"]
    return Path("sae-analysis") / re.sub(r"[^\w.-]+", "_", "+".join(names))[:100]


def run_analysis(
    sweep_dirs: str | os.PathLike | Iterable[str | os.PathLike] = (),
    out_dir: str | os.PathLike | None = None,
    *,
    wandb: str | None = None,
    group: str | None = None,
    publish: bool = False,
    report_only: bool = False,
    title: str | None = None,
) -> ReportPaths:
    """Analyse sweep folders (and/or a W&B project) and write the report.

    sweep_dirs: one or more sweep folders (local records). Failed and unfinished jobs are
        listed in the report; they never make this fail.
    out_dir: where report.md, report.html, plots/ and tables/ go (default: the sweep
        folder when there is one, else ./sae-analysis/<name>).
    wandb: "entity/project" to load runs from W&B as well (`group` selects one sweep).
    publish: also push to W&B (see `analysis.publish`); the outcome is in `.publish`.
    Returns the written paths (`.report_md`, `.report_html`, `.plots`, `.tables`).
    """
    if isinstance(sweep_dirs, str | os.PathLike):
        sweep_dirs = [sweep_dirs]
    dirs = [Path(d) for d in sweep_dirs]
    frames = [load_runs(dirs)] if dirs else []
    if wandb:
        frames.append(load_wandb_runs(wandb, group))
    if not frames:
        raise ValueError("give at least one sweep folder or a W&B project")
    runs = concat_runs(frames)
    group = group or sweep_group(runs)
    out = Path(out_dir) if out_dir is not None else default_out_dir(dirs, group)
    manifest = read_sweep_manifest(dirs[0]) if len(dirs) == 1 else None
    a = analyse(runs)
    paths = write_report(a.runs, out, title=title, manifest=manifest, analysis=a)
    if publish:
        from analysis.publish import publish as _publish

        project = wandb or wandb_project(runs)
        if project is None:
            raise ValueError("--publish needs a W&B project: --wandb ENTITY/PROJECT")
        paths.publish = _publish(
            a, paths, project, group, out, report_only=report_only, title=title
        )
    return paths
