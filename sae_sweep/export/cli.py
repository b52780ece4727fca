"""`sae-export`: trained SAEs as SAELens folders, one job or a sweep's frontier.

    sae-export multirun/2024-06-01/12-00-00/3 out/sae          # one job folder
    sae-export multirun/2024-06-01/12-00-00 out/ --frontier     # every variant's frontier
    sae-export multirun/2024-06-01/12-00-00 out/ --all          # every finished job

Over a sweep, each SAE gets a sub-folder named after its variant, frontier-axis value and
seed, and `index.csv` lists them with their metrics; every job left out (failed, unfinished,
an unreadable summary) is named on stderr with the reason. Only a job whose summary says
`done` is exported. OUT_DIR must be empty or new (`--overwrite` writes into a folder that is
not). Exit status: 0 on success, 2 on bad arguments, a job that did not finish, a non-empty
OUT_DIR, or a folder that holds nothing to export.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from ..evaluation.catalogue import names
from ..record.weights import WEIGHTS_CONFIG_FILE
from .run import export_run
from .saelens import ExportError

INDEX_FILE = "index.csv"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sae-export",
        description="Write trained SAEs in SAELens's folder format (cfg.json + "
        "sae_weights.safetensors), loadable with sae_lens.SAE.load_from_disk.",
    )
    p.add_argument("record_dir", metavar="RECORD_DIR", help="a job folder or a sweep folder")
    p.add_argument("out_dir", metavar="OUT_DIR", help="where the SAELens folder(s) go")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="sweep: every finished job")
    which.add_argument(
        "--frontier",
        action="store_true",
        help="sweep: the jobs on each variant's Pareto frontier (all seeds of a frontier point)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into OUT_DIR even when it is not empty (files of the same name are replaced)",
    )
    p.add_argument(
        "--metric",
        default="fvu",
        help="with --frontier: the (L0, metric) frontier to take (default fvu; e.g. "
        f"{', '.join(names(compared=True))})",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    source, out = Path(args.record_dir), Path(args.out_dir)
    try:
        refuse_non_empty(out, args.overwrite)
        if (source / WEIGHTS_CONFIG_FILE).is_file():
            if args.all or args.frontier:
                parser.error(f"{source} is one job: --all/--frontier apply to a sweep folder")
            print(export_run(source, out))
            return 0
        if not (args.all or args.frontier):
            raise ExportError(
                f"{source} is not a finished job folder (no {WEIGHTS_CONFIG_FILE}). For a sweep "
                "folder, choose --frontier (the frontier runs) or --all (every finished job)."
            )
        index = export_sweep(source, out, frontier_metric=args.metric if args.frontier else None)
    except (ExportError, FileNotFoundError) as e:
        print(f"sae-export: error: {e}", file=sys.stderr)
        return 2
    for folder in index["folder"]:
        print(out / folder)
    print(f"index: {out / INDEX_FILE}", file=sys.stderr)
    return 0


def refuse_non_empty(out_dir: Path, overwrite: bool) -> None:
    if not overwrite and out_dir.is_dir() and any(out_dir.iterdir()):
        raise ExportError(
            f"{out_dir} is not empty: an export there would mix with (or replace) what it holds. "
            "Fix: give a new or empty folder, or add --overwrite."
        )


def export_sweep(sweep_dir: Path, out_dir: Path, frontier_metric: str | None) -> pd.DataFrame:
    """Export a sweep's finished jobs (or only its frontier's); returns the index written.
    The jobs left out for not being finished are named on stderr."""
    report_left_out(sweep_dir)
    runs = selected_runs(sweep_dir, frontier_metric)
    folders = folder_names(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    for (_, run), folder in zip(runs.iterrows(), folders, strict=True):
        export_run(Path(run["path"]), out_dir / folder)
    keep = ["variant_label", "run_id", "path", "seed", *names(exported=True)]
    index = runs[[c for c in keep if c in runs.columns]].copy()
    index.insert(0, "folder", folders)
    index.to_csv(out_dir / INDEX_FILE, index=False)
    return index


def selected_runs(sweep_dir: Path, frontier_metric: str | None) -> pd.DataFrame:
    """The finished runs of a sweep with a `variant_label`; only frontier runs if a metric.
    On a sweep that tuned a knob per variant (`tune`), a frontier is that of each variant at
    its best value, as the analysis compares it (every value's runs are exported without
    a metric)."""
    from analysis.frontier import finished, frontier_points
    from analysis.load import load_runs
    from analysis.tuning import declared_tuning, label_tuned
    from analysis.variants import LABEL

    done = finished(load_runs(sweep_dir))
    spec = declared_tuning(done) if frontier_metric is not None else None
    runs, _, tuning = label_tuned(done, spec)
    if tuning is not None:
        runs = tuning.compared
    if runs.empty:
        raise ExportError(f"{sweep_dir} holds no finished job (status done) to export")
    if frontier_metric is None:
        return runs.reset_index(drop=True)
    if frontier_metric not in runs.columns or runs[frontier_metric].isna().all():
        present = [m for m in names(compared=True) if m in runs and runs[m].notna().any()]
        raise ExportError(
            f"--metric {frontier_metric!r}: no finished run of {sweep_dir} has it. "
            f"Fix: one of {present}."
        )
    points = frontier_points(runs, frontier_metric)
    on = points[points["on_frontier"]]
    ids = {
        (row[LABEL], rid.strip()) for _, row in on.iterrows() for rid in row["run_ids"].split(",")
    }
    mask = [(label, rid) in ids for label, rid in zip(runs[LABEL], runs["run_id"], strict=True)]
    return runs[mask].sort_values([LABEL, "l0"], kind="stable").reset_index(drop=True)


def report_left_out(sweep_dir: Path) -> None:
    """Name on stderr every job of the sweep that is not exported because it has no result
    (failed, unfinished, or a summary that cannot be read), with the reason."""
    from analysis.frontier import finished
    from analysis.load import load_runs

    runs = load_runs(sweep_dir)
    left = runs[~runs["run_id"].isin(finished(runs)["run_id"])]
    for _, run in left.iterrows():
        reason = str(run["error"]).strip().splitlines()[0] if isinstance(run["error"], str) else ""
        if run["status"] == "done":
            reason = f"l0={run['l0']} is no finite positive L0"
        print(f"left out: {run['path']} ({run['status']}{': ' + reason if reason else ''})",
              file=sys.stderr)  # fmt: skip


def folder_names(runs: pd.DataFrame) -> list[str]:
    """`<variant>__<axis>-<value>__seed-<seed>`, the axis the one that names the variant's
    points (`l0_target` for a run placed by L0 control, whose lambda multiplier is the
    preset's); a name the knobs do not tell apart gets its job folder added."""
    from analysis.variants import LABEL, point_axis, value_key

    axes = {label: point_axis(group) for label, group in runs.groupby(LABEL, sort=False)}
    folders = []
    for _, run in runs.iterrows():
        parts = [_slug(str(run[LABEL]))]
        if axis := axes[run[LABEL]]:
            parts.append(f"{_slug(axis.split('.')[-1])}-{_slug(value_key(run[axis]))}")
        if "seed" in runs.columns:
            parts.append(f"seed-{run['seed']}")
        folders.append("__".join(parts))
    clashes = {f for f in folders if folders.count(f) > 1}
    jobs = [_slug(Path(p).name) for p in runs["path"]]
    return [f"{f}__{job}" if f in clashes else f for f, job in zip(folders, jobs, strict=True)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text.replace("=", "-")).strip("_") or "run"


if __name__ == "__main__":
    sys.exit(main())
