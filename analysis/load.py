"""Load trained SAEs into one pandas DataFrame: one row per SAE.

Two sources give the same columns:
- local records: a sweep folder (Hydra multirun dir) with one job folder per SAE,
  each holding `config.yaml`, `summary.json` and `metrics.jsonl` (docs/design.md, "The record");
- W&B: the runs of a project (optionally one group = one sweep), via the public API.

Columns:
- bookkeeping: `run_id`, `sweep`, `source` ("local" | "wandb"), `path`, `status`
  ("done" | "failed" | "running" | "unfinished"), `error`, `last_step`, and the code that
  made the run: `git_commit` (null outside a checkout) and `git_clean` (False: uncommitted
  changes; null: unknown) (`analysis.provenance`);
- knobs: the flattened, dotted config keys (`sae.kind`, `penalty.coefficient`, `seed`, ...);
  lists become tuples so they can be grouped on. Their names are in `df.attrs["knobs"]`;
- metrics: the flat summary keys (`l0`, `fvu`, `mse`, `mmcs`, `loss_recovered`, ...): every
  number of a summary, whether or not the metric catalogue (`sae_sweep.evaluation.catalogue`)
  names it, so the records of older sae-sweep versions load as they were.

A job with no `summary.json` never started or was killed: it is "unfinished" and kept,
so the report can list it. A summary that cannot be read, or holds a field of the wrong type
(`knobs` as text, `l0` as text: `sae_sweep.record.malformed`), makes its job "failed" with
an error naming the file and the field. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.provenance import commit_and_clean
from sae_sweep.evaluation.catalogue import METRICS
from sae_sweep.record import layout
from sae_sweep.record.malformed import read_checked_summary

BOOKKEEPING_COLUMNS = ["run_id", "sweep", "source", "path", "status", "error", "last_step",
                       "git_commit", "git_clean"]  # fmt: skip

# Summary keys that are neither knobs nor metrics.
_SUMMARY_SKIP = {"knobs", "versions", "inputs", "status", "error", "traceback", "variant",
                 "sweep"}  # fmt: skip

# W&B run states -> our statuses (a killed run never wrote its final summary).
_WANDB_STATES = {
    "finished": "done",
    "failed": "failed",
    "crashed": "failed",
    "killed": "unfinished",
    "running": "running",
    "pending": "unfinished",
    "preempted": "unfinished",
}


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"a.b.c": value}. Lists become tuples (hashable, groupable)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = _hashable(v)
    return out


def _hashable(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, Mapping):  # an empty mapping, or a dict inside a list
        return json.dumps(v, sort_keys=True, default=str)
    return v


def find_job_dirs(sweep_dir: str | os.PathLike) -> list[Path]:
    """Job folders under `sweep_dir`, at any depth, sorted.

    A job folder holds `config.yaml` or `summary.json`, or only Hydra's `.hydra/config.yaml`
    (the job was launched but died before writing its record). The search does not descend
    into a job folder, so weights saved with their own config are not mistaken for jobs.
    """
    root = Path(sweep_dir)
    jobs: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        own_record = layout.CONFIG in filenames or layout.SUMMARY in filenames
        if own_record or (here != root and layout.is_job_dir(here, filenames)):
            jobs.append(here)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(
            d for d in dirnames if d not in layout.NOT_JOB_DIRS and not d.startswith(".")
        )
    return sorted(jobs, key=lambda p: _natural_key(str(p.relative_to(root))))


def _natural_key(s: str) -> list:
    """'10' sorts after '9' (Hydra numbers jobs 0, 1, ..., 10)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def read_sweep_manifest(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    """The optional `sweep.json` manifest, or {}."""
    return layout.read_json(Path(sweep_dir) / layout.MANIFEST) or {}


def _sweep_name(path: Path, root: Path | None = None) -> str:
    """Name of the sweep holding `path`: the nearest folder from `path` up to `root` with a
    `sweep.json` (its name) or Hydra's `multirun.yaml` (the folder's name); else `root`'s
    name. So a folder of several sweeps can be loaded at once."""
    root = root or path
    for p in [path, *path.parents]:
        if (p / layout.MANIFEST).is_file():
            return read_sweep_manifest(p).get("name") or p.resolve().name
        if (p / layout.HYDRA_MULTIRUN).is_file():
            return p.resolve().name
        if p == root:
            break
    return root.resolve().name


def load_history(job_dir: str | os.PathLike) -> pd.DataFrame:
    """A job's `metrics.jsonl` as a DataFrame (one row per logged step).

    A killed job may leave a half-written last line; unparsable lines are skipped.
    """
    p = Path(job_dir) / layout.METRICS
    rows = []
    if p.is_file():
        for line in p.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return pd.DataFrame(rows)


def _last_step(job_dir: Path) -> int | None:
    hist = load_history(job_dir)
    if hist.empty or "step" not in hist:
        return None
    step = hist["step"].max()
    return None if pd.isna(step) else int(step)


def _read_config(job_dir: Path) -> dict[str, Any]:
    return layout.read_config(job_dir) or {}


def _read_summary(job_dir: Path) -> dict[str, Any] | None:
    summary, unreadable = read_checked_summary(job_dir / layout.SUMMARY)
    return {"status": "failed", "error": unreadable} if unreadable else summary


def make_row(
    config: Mapping[str, Any],
    summary: Mapping[str, Any] | None,
    *,
    run_id: str,
    sweep: str | None,
    source: str,
    path: str | None,
    fallback_status: str = "unfinished",
) -> tuple[dict[str, Any], list[str]]:
    """One DataFrame row from a resolved config and a flat summary; returns (row, knob names)."""
    knobs = flatten(config)
    summary = dict(summary or {})
    recorded_knobs = summary.get("knobs")  # a W&B summary is not checked like a local one
    for k, v in flatten(recorded_knobs if isinstance(recorded_knobs, Mapping) else {}).items():
        knobs.setdefault(k, v)
    if summary.get("variant") is not None:
        knobs.setdefault("variant", summary["variant"])

    row: dict[str, Any] = dict(knobs)
    for k, v in summary.items():
        if k in _SUMMARY_SKIP or k.startswith("_"):
            continue
        x = _number(v)
        if x is not None:
            row[k] = x
    # W&B summaries may carry only the `eval/...` names.
    for m in METRICS:
        x = _number(summary.get(f"eval/{m}"))
        if pd.isna(row.get(m, math.nan)) and x is not None:
            row[m] = x
    recorded_versions = summary.get("versions")
    recorded_versions = recorded_versions if isinstance(recorded_versions, Mapping) else {}
    for k, v in recorded_versions.items():
        row[f"versions.{k}"] = v
    row["git_commit"], row["git_clean"] = commit_and_clean(recorded_versions)
    inputs = summary.get("inputs")  # the data's files' sha256, one column each
    for k, v in (inputs if isinstance(inputs, Mapping) else {}).items():
        row[f"inputs.{k}"] = v
    if summary.get("sae_artifact"):  # the W&B artifact of the job's exported SAE
        row["sae_artifact"] = summary["sae_artifact"]

    status = summary.get("status") if summary else None
    row.update(
        run_id=run_id,
        sweep=summary.get("sweep") or sweep,
        source=source,
        path=path,
        status=status if status in {"done", "failed", "running"} else fallback_status,
        error=summary.get("error") or (summary.get("traceback") or None),
        last_step=None,
    )
    return row, list(knobs)


_NONFINITE = {"nan", "inf", "+inf", "-inf", "infinity", "-infinity"}


def _number(v: Any) -> float | None:
    """A summary value as a float metric, or None if it is not a metric.

    None -> NaN; the training job writes NaN/inf (not JSON) as the strings "nan", "inf".
    """
    if v is None:
        return math.nan
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str) and v.strip().lower() in _NONFINITE:
        return float(v)
    return None


def _frame(rows: list[dict[str, Any]], knobs: Iterable[str]) -> pd.DataFrame:
    # A config key named like a bookkeeping column (a top-level `sweep:`) is bookkeeping.
    knob_list = [k for k in dict.fromkeys(knobs) if k not in BOOKKEEPING_COLUMNS]
    df = pd.DataFrame(rows)
    for c in BOOKKEEPING_COLUMNS + ["l0"]:
        if c not in df:
            df[c] = None if c != "l0" else math.nan
    metrics = [c for c in df.columns if c not in knob_list and c not in BOOKKEEPING_COLUMNS]
    df = df[BOOKKEEPING_COLUMNS + [k for k in knob_list if k in df] + metrics]
    df.attrs["knobs"] = KnobNames(k for k in knob_list if k in df)
    return df.reset_index(drop=True)


class KnobNames(tuple):
    """The knob column names kept in `df.attrs["knobs"]`. pandas deep-copies `attrs` into
    every frame an operation returns (a report made about 390k such copies of a 100-name
    list); the names never change, so the copy is the tuple itself."""

    def __deepcopy__(self, memo: dict) -> KnobNames:
        return self


def load_runs(sweep_dirs: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Every job under one or more sweep folders, as one DataFrame (one row per SAE).

    Jobs that failed or never finished are rows too (status "failed" / "running" /
    "unfinished"); their metrics are NaN where missing.
    """
    if isinstance(sweep_dirs, str | os.PathLike):
        sweep_dirs = [sweep_dirs]
    rows: list[dict[str, Any]] = []
    knobs: list[str] = []
    for sweep_dir in sweep_dirs:
        root = Path(sweep_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"sweep folder not found: {root}")
        name = _sweep_name(root)
        for job in find_job_dirs(root):
            summary = _read_summary(job)
            rel = job.relative_to(root).as_posix()
            row, k = make_row(
                _read_config(job),
                summary,
                run_id=f"{name}/{rel}" if rel != "." else name,
                sweep=_sweep_name(job, root),
                source="local",
                path=str(job),
            )
            if row["status"] != "done":
                row["last_step"] = _last_step(job)
            rows.append(row)
            knobs += k
    return _frame(rows, knobs)


def _unwrap_wandb_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """W&B run config -> the resolved nested config (drops `_wandb`, unwraps {"value": v})."""
    out = {}
    for k, v in cfg.items():
        if k.startswith("_"):
            continue
        if isinstance(v, Mapping) and set(v) <= {"value", "desc"} and "value" in v:
            v = v["value"]
        out[k] = v
    return out


def _summary_dict(summary: Any) -> dict[str, Any]:
    if summary is None:
        return {}
    if hasattr(summary, "_json_dict"):
        summary = summary._json_dict
    try:
        return dict(summary)
    except (TypeError, ValueError):
        return {}


class WandbGroupError(ValueError):
    """A W&B project holds several sweep instances and none was chosen."""


def load_wandb_runs(
    project: str, group: str | None = None, api: Any = None, one_group: bool = False
) -> pd.DataFrame:
    """The runs of W&B project `project` ("entity/project"), optionally one group (a sweep
    instance: sweep.json's `id`; a sweep's name for records made before instance ids).

    one_group: with no `group`, the project must hold one group of job runs, else
    `WandbGroupError` lists them (newest first): two runs of one sweep file are two
    instances, and mixing them would double the variants.
    Uses the public API (`wandb.Api()`, which needs `WANDB_API_KEY` or a login). The run
    config is the resolved nested config, its summary holds the flat summary keys, so the
    DataFrame has the same columns as `load_runs`.
    """
    if api is None:
        import wandb

        api = wandb.Api()
    filters = {"group": group} if group else None
    runs = [r for r in api.runs(project, filters=filters)
            if getattr(r, "job_type", None) != "analysis"]  # our own summary runs  # fmt: skip
    groups = list(dict.fromkeys(getattr(r, "group", None) for r in runs))
    if one_group and group is None and len(groups) > 1:
        shown = ", ".join(str(g) for g in groups[:10]) + (" ..." if len(groups) > 10 else "")
        raise WandbGroupError(f"W&B project {project} holds {len(groups)} sweep instances "
                              f"(groups): {shown}. Pick one with --group ID (or --group all "
                              "to analyse them together)")  # fmt: skip
    rows: list[dict[str, Any]] = []
    knobs: list[str] = []
    for run in runs:
        summary = _summary_dict(getattr(run, "summary", None))
        state = getattr(run, "state", None)
        status = _WANDB_STATES.get(state, "unfinished")
        if status != "running" and summary.get("status") in {"done", "failed"}:
            status = summary["status"]
        summary["status"] = status
        row, k = make_row(
            _unwrap_wandb_config(getattr(run, "config", {}) or {}),
            summary,
            run_id=f"{project}/{getattr(run, 'id', '?')}",
            sweep=getattr(run, "group", None) or group,
            source="wandb",
            path=getattr(run, "url", None),
        )
        rows.append(row)
        knobs += k
    return _frame(rows, knobs)


def concat_runs(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Several `load_runs`/`load_wandb_runs` frames as one, keeping the knob list."""
    frames = [f for f in frames if f is not None]
    if not frames:
        return _frame([], [])
    knobs: list[str] = []
    for f in frames:
        knobs += f.attrs.get("knobs", [])
    df = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    return _frame(df.to_dict("records"), knobs)
