"""`run_analysis`: load -> analyse -> report (-> publish), the one call behind
`sae-analysis` and behind the sweep runner's automatic analysis at the end of a sweep."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from analysis.load import (
    WandbGroupError,
    concat_runs,
    load_runs,
    load_wandb_runs,
    read_sweep_manifest,
)
from analysis.matched import MAX_L0_FRACTION
from analysis.model import analyse
from analysis.report import ReportPaths, write_report
from analysis.tuning import DECLARED, Tune
from analysis.variants import is_bookkeeping, knob_columns, value_key
from analysis.verdicts import DEFAULT_BAND, Rules
from sae_sweep.record import layout


class WandbLoadError(RuntimeError):
    """Runs could not be loaded from W&B (no login, no network, unknown project)."""


def _unique(runs: pd.DataFrame, col: str) -> str | None:
    if col not in runs.columns:
        return None
    vals = runs[col].dropna().astype(str).unique()
    return vals[0] if len(vals) == 1 else None


def sweep_group(runs: pd.DataFrame, manifest: dict | None = None) -> str | None:
    """The W&B group of the runs: the sweep instance (`id` in sweep.json, which every job of
    it logs to), else the jobs' `logger.group`, else the sweep name (records made before
    sweeps had instance ids)."""
    return (manifest or {}).get("id") or _unique(runs, "logger.group") or _unique(runs, "sweep")


def wandb_project(runs: pd.DataFrame) -> str | None:
    """ "entity/project" (or "project") from the runs' logger config, if they agree."""
    project = _unique(runs, "logger.project")
    entity = _unique(runs, "logger.entity")
    if project and entity and "/" not in project:
        return f"{entity}/{project}"
    return project


def drop_wandb_duplicates(runs: pd.DataFrame) -> pd.DataFrame:
    """Drop W&B rows that mirror a local record (same sweep and same knobs, seed included):
    the local record is the source of truth (docs/design.md, "The record"), W&B its mirror."""
    if runs.empty or set(runs["source"]) != {"local", "wandb"}:
        return runs
    knobs = [k for k in knob_columns(runs) if not is_bookkeeping(k)]

    def key(row: pd.Series) -> tuple:
        return (str(row["sweep"]),) + tuple(value_key(row.get(k)) for k in knobs)

    keys = runs.apply(key, axis=1)
    local = set(keys[runs["source"] == "local"])
    dup = (runs["source"] == "wandb") & keys.isin(local)
    out = runs[~dup].reset_index(drop=True)
    out.attrs = dict(runs.attrs)
    return out


def default_out_dir(sweep_dirs: list[Path], group: str | None) -> Path:
    """One sweep folder: the report goes into it. Otherwise ./sae-analysis/<name>."""
    if len(sweep_dirs) == 1:
        return sweep_dirs[0]
    names = [p.resolve().name for p in sweep_dirs] or [group or "wandb"]
    return Path("sae-analysis") / re.sub(r"[^\w.-]+", "_", "+".join(names))[:100]


def first_variant(manifest: dict | None, runs: pd.DataFrame) -> str | None:
    """The sweep's first variant (its grid's order), the default reference of the relative
    plots; None when the sweep does not name its variants."""
    names = ((manifest or {}).get("grid") or {}).get("variant") or []
    have = set(runs["variant"].dropna().astype(str)) if "variant" in runs else set()
    return next((v for v in names if v in have), None)


def read_targets(sweep_dir: Path) -> dict | None:
    """The target-L0 sweeper's `targets.json` of a sweep folder, if any."""
    return layout.read_json(Path(sweep_dir) / layout.TARGETS)


def run_analysis(
    sweep_dirs: str | os.PathLike | Iterable[str | os.PathLike] = (),
    out_dir: str | os.PathLike | None = None,
    *,
    wandb: str | None = None,
    group: str | None = None,
    publish: bool = False,
    report_only: bool = False,
    title: str | None = None,
    reference: str | None = None,
    max_l0_fraction: float = MAX_L0_FRACTION,
    metrics: list[str] | None = None,
    band: tuple[float | str, float | str] = DEFAULT_BAND,
    margins: dict[str, float] | None = None,
    multiplicity: str = "holm",
    tune: Tune | None = DECLARED,
    publish_cmd: str | None = None,
) -> ReportPaths:
    """Analyse sweep folders (and/or a W&B project) and write the report.

    sweep_dirs: one or more sweep folders (local records). Failed and unfinished jobs are
        listed in the report; they never make this fail.
    out_dir: where report.md, report.html, plots/ and tables/ go (default: the sweep
        folder when there is one, else ./sae-analysis/<name>).
    wandb: "entity/project" to load runs from W&B as well, of one sweep instance (W&B
        group): `group`, else the one of the sweep folder, else the project's only one;
        `group="all"` loads every group. W&B runs that mirror a loaded local record are
        dropped.
    publish: also push to W&B (see `analysis.publish`), to `wandb` if given, else to the
        runs' `logger.entity`/`logger.project`; the outcome is in `.publish`.
    reference: the variant the relative plots divide by (default: the first variant).
    max_l0_fraction: verdicts cover L0 <= this x d (runs above are the dense regime).
    metrics: the metrics to analyse (default: every metric of the metric catalogue
        compared by default (`compared`) that the runs have).
    band: the L0 band of the one-line summaries, e.g. (3, "d/4") (the default).
    margins: relative margins per metric, e.g. {"fvu": 0.05}, over the defaults
        (`analysis.verdicts.DEFAULT_MARGINS`).
    multiplicity: "holm" (default) or "bh" (Benjamini-Hochberg).
    tune: the tuning: `DECLARED` (default) the one the sweep declared, if any; `Tune(knobs,
        criterion)` other knobs or criterion fields; None: none (`analysis.tuning`).
    publish_cmd: the command that publishes again, printed when publishing is incomplete.
    Returns the written paths (`.report_md`, `.report_html`, `.plots`, `.tables`) and the
    report's first lines (`.verdicts`).
    """
    if isinstance(sweep_dirs, str | os.PathLike):
        sweep_dirs = [sweep_dirs]
    dirs = [Path(d) for d in sweep_dirs]
    frames = [load_runs(dirs)] if dirs else []
    manifest = read_sweep_manifest(dirs[0]) if len(dirs) == 1 else None
    if group is None and frames:
        group = sweep_group(frames[0], manifest)
    if wandb:
        try:
            frames.append(load_wandb_runs(wandb, None if group == "all" else group,
                                          one_group=group is None))  # fmt: skip
        except WandbGroupError:
            raise
        except Exception as e:  # noqa: BLE001 - auth, network, unknown project
            raise WandbLoadError(f"could not load runs from W&B {wandb!r}: {e}") from e
    if not frames:
        raise ValueError("give at least one sweep folder or a W&B project")
    runs = drop_wandb_duplicates(concat_runs(frames))
    group = sweep_group(runs) if group in (None, "all") else group
    out = Path(out_dir) if out_dir is not None else default_out_dir(dirs, group)
    reference = reference or first_variant(manifest, runs)
    rules = Rules(margins or {}, tuple(band), multiplicity)
    spec = tune.resolve(runs) if tune is not None else None
    a = analyse(runs, metrics=metrics, reference=reference, max_l0_fraction=max_l0_fraction,
                rules=rules, tune=spec)  # fmt: skip
    targets = read_targets(dirs[0]) if len(dirs) == 1 else None
    paths = write_report(a.runs, out, title=title, manifest=manifest, analysis=a, targets=targets)
    if publish:
        from analysis.publish import publish as _publish

        project = wandb or wandb_project(runs)
        if project is None:
            raise ValueError("--publish needs a W&B project: --wandb ENTITY/PROJECT")
        paths.publish = _publish(
            a, paths, project, group, out, report_only=report_only, title=title,
            sweep_dir=dirs[0] if len(dirs) == 1 else None, manifest=manifest,
            publish_cmd=publish_cmd,
        )  # fmt: skip
    return paths
