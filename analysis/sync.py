"""`sae-analysis SWEEP --sync`: upload every offline W&B run of a sweep, jobs and summary run,
artifacts included, with W&B's own `wandb sync`, resumably.

Offline is the default logger, so a sweep's W&B runs first exist only as `wandb/offline-run-*`
folders inside its job folders (and the report folder, for `--publish`'s summary run). Each
folder holding them is synced by one `wandb sync` process started *in that folder*: an offline
job references its SAE artifact's files relative to its own folder (record/run_logger.py), so
they upload also after the sweep folder moved. `wandb sync` is W&B's supported command (in
wandb 0.31 it drives wandb-core's sync); it marks each uploaded run log with a
`.wandb.synced` file beside it. Progress is written to `wandb_sync.json` in the sweep folder
after every folder, so an interrupted sync (network, Ctrl-C) goes on where it stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sae_sweep.record import layout
from sae_sweep.record.atomic import atomic_write_json

SyncRunner = Callable[[list[str], Path], subprocess.CompletedProcess]
"""Runs `wandb sync` on run folders (paths relative to the folder it runs in)."""

WANDB_DIR = "wandb"
"""W&B's own folder in a run's `dir` (a job folder, the report folder): offline-run-*."""
SYNC_TIMEOUT_S = 3600.0
"""Per `wandb sync` process: one folder's runs (a job's, with its SAE artifact)."""
STOP_AFTER_FAILURES = 3
"""Folders failing in a row after which the sync stops: the cause is not one run's (no
login, no network), and each `wandb sync` costs seconds to say it again."""


def wandb_sync(paths: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`wandb sync PATHS` in `cwd`, in this Python's environment. WANDB_MODE is dropped:
    uploading is what was asked, whatever mode the runs were logged in."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    return subprocess.run(
        [sys.executable, "-m", "wandb", "sync", *paths],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=SYNC_TIMEOUT_S,
    )  # fmt: skip


def offline_runs(sweep_dir: Path) -> dict[Path, list[Path]]:
    """{folder holding a `wandb/` folder: its offline run folders, oldest first} under
    `sweep_dir` (job folders and the report folder of `--publish`)."""
    found: dict[Path, list[Path]] = {}
    for wandb_dir in sorted(Path(sweep_dir).rglob(WANDB_DIR)):
        runs = sorted(p for p in wandb_dir.glob("offline-run-*") if any(p.glob("*.wandb")))
        if wandb_dir.is_dir() and runs:
            found[wandb_dir.parent] = runs  # names start with the run's start time
    return found


def is_synced(run_dir: Path) -> bool:
    """Whether `wandb sync` uploaded every run log of this run folder (its own marker)."""
    logs = list(run_dir.glob("*.wandb"))
    return bool(logs) and all(p.with_suffix(".wandb.synced").exists() for p in logs)


@dataclass
class SyncResult:
    sweep_dir: Path
    synced: list[str] = field(default_factory=list)
    """Run folders uploaded now (relative to the sweep folder)."""
    earlier: list[str] = field(default_factory=list)
    """Run folders uploaded by an earlier sync."""
    failed: dict[str, str] = field(default_factory=dict)
    """Run folder -> why it is not uploaded (the tail of wandb's output)."""
    not_tried: list[str] = field(default_factory=list)
    """Run folders left after `STOP_AFTER_FAILURES` folders failed in a row."""

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_tried

    def describe(self) -> str:
        n = len(self.synced) + len(self.earlier) + len(self.failed) + len(self.not_tried)
        lines = [f"W&B sync of {self.sweep_dir}: {n} offline runs, {len(self.synced)} uploaded "
                 f"now, {len(self.earlier)} earlier, {len(self.failed)} failed"
                 + (f", {len(self.not_tried)} not tried (stopped after {STOP_AFTER_FAILURES} "
                    "failures in a row)" if self.not_tried else "")
                 + f" (progress in {layout.WANDB_SYNC})"]  # fmt: skip
        if not n:
            lines.append("  Nothing to upload: no job folder holds an offline W&B run "
                         "(wandb/offline-run-*). Jobs run with logger=disabled log none; "
                         "logger=online ones are on W&B already.")  # fmt: skip
        for run, why in list(self.failed.items())[:10]:
            lines.append(f"  FAILED {run}: {why}")
        if len(self.failed) > 10:
            lines.append(f"  ... and {len(self.failed) - 10} more")
        if self.failed:
            lines.append("  Fix the cause (`wandb login`, the network), then run the same "
                         "command again: it goes on with the runs not uploaded yet.")  # fmt: skip
        return "\n".join(lines)


def read_progress(sweep_dir: Path) -> dict:
    return layout.read_json(Path(sweep_dir) / layout.WANDB_SYNC) or {"synced": {}}


def sync_sweep(sweep_dir: str | os.PathLike, runner: SyncRunner | None = None) -> SyncResult:
    """Upload every offline W&B run under `sweep_dir` not uploaded yet, with `runner`
    (default `wandb_sync`); never raises on a W&B failure (the result lists it)."""
    runner = runner or wandb_sync
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder not found: {sweep_dir}")
    progress = read_progress(sweep_dir)
    done: dict = progress.setdefault("synced", {})
    res = SyncResult(sweep_dir)
    in_a_row = 0
    for folder, runs in offline_runs(sweep_dir).items():
        rel = {run: run.relative_to(sweep_dir).as_posix() for run in runs}
        if in_a_row >= STOP_AFTER_FAILURES:
            res.not_tried += [rel[run] for run in runs if not (rel[run] in done or is_synced(run))]
            continue
        todo = []
        for run in runs:
            if rel[run] in done or is_synced(run):  # by us, or by a `wandb sync` of the user's
                done.setdefault(rel[run], {"at": None})
                res.earlier.append(rel[run])
            else:
                todo.append(run)
        if not todo:
            continue
        why = ""
        try:
            out = runner([run.relative_to(folder).as_posix() for run in todo], folder)
            why = _tail(out.stdout + out.stderr) or f"wandb sync exited {out.returncode}"
        except (OSError, subprocess.SubprocessError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        for run in todo:
            if is_synced(run):
                done[rel[run]] = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                res.synced.append(rel[run])
            else:
                res.failed[rel[run]] = why
        in_a_row = 0 if all(is_synced(run) for run in todo) else in_a_row + 1
        atomic_write_json(sweep_dir / layout.WANDB_SYNC, progress)
    return res


def _tail(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
