"""Live progress of a long task (a job's training, a cache build), for people and programs.

People see a tqdm bar on a terminal, or a log line every `every_s` seconds in batch logs
(SLURM, joblib workers, `main.log`). Programs read `progress.json`, rewritten atomically at
the same moments: `sae-sweep-status` reads it from any machine that sees the folder, and a
job waiting for an activation cache reads the building job's. The file holds

    {"label", "state", "done", "total", "unit", "fraction", "rate_per_s", "elapsed_s",
     "eta_s", "scaled", "<scaled>", "<scaled>_per_s", ...figures,
     "host", "pid", "started", "updated", "updated_unix"}

where `state` is `preparing`, `running`, `evaluating`, `done`, `failed` or `interrupted`,
and `updated_unix` (seconds since the epoch) tells how fresh it is. A job killed without a
word (SIGKILL, the out-of-memory killer) leaves a running state under a dead pid: its next
start records it `failed` (`reclassify_dead`). Reporting never touches
a device: callers pass figures they have already read.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import socket
import sys
import time
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import layout
from .atomic import atomic_write_json
from .liveness import writer_alive

PROGRESS_FILE = layout.PROGRESS
RUNNING_STATES = ("preparing", "running", "evaluating")

log = logging.getLogger("sae_sweep.progress")
_alive: weakref.WeakSet[Progress] = weakref.WeakSet()


def resolve_mode(mode: str) -> str:
    """`auto`: a bar when stderr is a terminal and this is not a worker process (parallel
    jobs would draw over each other's bars), else log lines."""
    mode = getattr(mode, "value", mode)
    if mode != "auto":
        return mode
    tty = getattr(sys.stderr, "isatty", lambda: False)()
    interactive = tty and multiprocessing.parent_process() is None
    return "bar" if interactive else "lines"


class Progress:
    """Counts `done` of `total` units; reports when due (every `every_s` s, and with the first
    figures, which give the first rate and ETA early) and at every change of state.

    `scale` converts a unit into `scaled` things (a step is `batch_size` activations): the
    report then also gives their count and rate. `update` is cheap when nothing is due.
    """

    def __init__(
        self,
        label: str,
        *,
        total: int,
        unit: str,
        path: Path | None,
        mode: str = "auto",
        every_s: float = 30.0,
        scale: float = 1.0,
        scaled: str | None = None,
        initial: int = 0,
        state: str = "running",
        clock=time.monotonic,
    ):
        self.label, self.total, self.unit, self.path = label, int(total), unit, path
        self.mode, self.every_s = resolve_mode(mode), every_s
        self.scale, self.scaled = scale, scaled
        self.clock = clock
        self.started = _now_iso()
        self.figures: dict[str, Any] = {}
        self.restart(initial, state)
        _alive.add(self)

    def restart(self, initial: int, state: str = "running") -> None:
        """Count from `initial` (e.g. a resumed job's checkpoint step); the rate starts now."""
        self.done = self.initial = int(initial)
        self.state = state
        self.t0 = self.clock()
        self._last_report = -math.inf
        self._figures_reported = False
        self.figures.pop("note", None)
        if getattr(self, "bar", None) is not None:
            self.bar.close()
        self.bar = None
        if self.mode == "bar" and state == "running":
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=self.total, initial=self.initial, desc=self.label, unit=self.unit,
                dynamic_ncols=True, leave=True,
            )  # fmt: skip
        self.report(log_line=state != "running")  # the first line comes with the first figures

    def update(self, done: int, figures: dict[str, Any] | None = None) -> None:
        if figures:
            self.figures.update(figures)
        if self.bar is not None:
            self.bar.update(done - self.done)
            if figures:
                self.bar.set_postfix_str(self._figures_text(), refresh=False)
        first_figures = figures and not self._figures_reported
        self.done = done
        if first_figures or self.clock() - self._last_report >= self.every_s:
            self._figures_reported = self._figures_reported or bool(figures)
            self.report()

    def set_state(self, state: str, figures: dict[str, Any] | None = None) -> None:
        """A new phase (`evaluating`) or the end (`done`, `failed`, `interrupted`)."""
        if figures:
            self.figures.update(figures)
        self.state = state
        if self.bar is not None and state not in RUNNING_STATES:
            self.bar.close()
            self.bar = None
        self.report()

    def snapshot(self) -> dict[str, Any]:
        elapsed = self.clock() - self.t0
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        left = max(self.total - self.done, 0)
        eta = left / rate if rate > 0 else None
        snap: dict[str, Any] = {
            "label": self.label,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "unit": self.unit,
            "fraction": self.done / self.total if self.total else 1.0,
            "rate_per_s": rate,
            "elapsed_s": elapsed,
            "eta_s": 0.0 if left == 0 else eta,
        }
        if self.scaled:
            snap["scaled"] = self.scaled
            snap[self.scaled] = int(self.done * self.scale)
            snap[f"{self.scaled}_per_s"] = rate * self.scale
        snap.update(self.figures)
        now = time.time()
        snap.update(
            host=socket.gethostname(), pid=os.getpid(), started=self.started,
            updated=_now_iso(now), updated_unix=now,
        )  # fmt: skip
        return snap

    def report(self, log_line: bool = True) -> dict[str, Any]:
        self._last_report = self.clock()
        snap = self.snapshot()
        if self.path is not None:
            atomic_write_json(self.path, {k: _json_number(v) for k, v in snap.items()})
        if self.mode == "lines" and log_line:
            log.info("%s", describe(snap))
        return snap

    def _figures_text(self) -> str:
        shown = {k: v for k, v in self.figures.items() if v is not None and k != "metrics"}
        return "  ".join(f"{k}={_short(v)}" for k, v in shown.items())


def heartbeat(note: str) -> None:
    """Keep this process's `preparing` progress files fresh during a long wait or cache
    build, saying what they wait for: a job waiting is not taken for a dead (stale) one."""
    for progress in list(_alive):
        if progress.state == "preparing":
            news = progress.figures.get("note") != note
            progress.figures["note"] = note
            if news or progress.clock() - progress._last_report >= progress.every_s:
                progress.report(log_line=False)


def describe(snap: dict[str, Any]) -> str:
    """One line: `label: state unit done/total (pct)  count  figures  rate  elapsed  ETA`."""
    unit, scaled = snap.get("unit", ""), snap.get("scaled")
    if snap.get("state") == "preparing":
        return f"{snap.get('label', '')}: preparing (data, activation cache, normalisation)"
    pct = f" ({100 * snap['fraction']:.0f}%)" if snap.get("fraction") is not None else ""
    label = f"{snap['label']}: " if snap.get("label") else ""
    parts = [
        f"{label}{snap.get('state')} {unit} {snap.get('done', 0):,}/{snap.get('total', 0):,}{pct}"
    ]
    if scaled:
        parts.append(f"{scaled} {_short(snap.get(scaled))}")
    for key, value in snap.items():
        figure = key not in _NOT_FIGURES and key != scaled and not key.endswith("_per_s")
        if figure and value is not None and not isinstance(value, dict | list):
            parts.append(f"{key} {_short(value)}")
    rate_key = f"{scaled}_per_s" if scaled else "rate_per_s"
    parts.append(f"{scaled or unit + 's'}/s {_short(snap.get(rate_key))}")
    parts.append(f"elapsed {duration(snap.get('elapsed_s'))}")
    if snap.get("state") in RUNNING_STATES:
        parts.append(f"ETA {duration(snap.get('eta_s'))}")
    return "  ".join(parts)


_NOT_FIGURES = {"label", "state", "done", "total", "unit", "fraction", "elapsed_s", "eta_s",
                "scaled", "metrics", "note", "host", "pid", "started", "updated",
                "updated_unix"}  # fmt: skip


def reclassify_dead(job_dir: Path) -> dict[str, Any] | None:
    """Record `failed` a job whose progress says it runs (preparing, running, evaluating) under
    a pid of this host that is dead, with no summary of its end: it was killed without a word
    (SIGKILL: the kernel's out-of-memory killer, a kill by hand). Called at the job's next
    start, before anything else reads its record; returns the summary written, or None when
    the job is no such one (finished, stopped, alive, or on another host: cannot be told)."""
    job_dir = Path(job_dir)
    snap = read_progress(job_dir / PROGRESS_FILE)
    if snap is None or snap.get("state") not in RUNNING_STATES or writer_alive(snap) is not False:
        return None
    status = (layout.read_summary(job_dir) or {}).get("status")
    if status in ("done", "failed", "interrupted"):
        return None
    done, total, state = snap.get("done"), snap.get("total"), snap.get("state")
    resumes = layout.checkpoint_step(job_dir)
    where = f"step {done} of {total}" if state == "running" else f"step {done} ({state})"
    error = (
        f"KilledWithoutRecord: the job's process (pid {snap.get('pid')} on {snap.get('host')}) "
        f"ended at {where} without writing its record: it was killed (SIGKILL), most likely "
        "by the kernel's out-of-memory killer. Fix: lower train.batch_size, "
        "train.eval_batch_size or sae.d_sae (or run fewer jobs at once), then run it again "
        f"(a sweep: rerun_failed=true), resuming from the checkpoint of step {resumes or 0}"
    )
    config = layout.read_config(job_dir) or {}
    summary = {"status": "failed", "error": error, "traceback": "", "steps_done": done,
               "checkpoint_step": resumes, "signal": None, "variant": config.get("variant"),
               "sweep": config.get("sweep")}  # fmt: skip
    atomic_write_json(job_dir / layout.SUMMARY, summary)
    atomic_write_json(job_dir / PROGRESS_FILE, {**snap, "state": "failed", "error": error[:200]})
    log.warning("%s: %s", job_dir, error)
    return summary


def read_progress(path: Path) -> dict[str, Any] | None:
    """A progress.json, or None when it is missing or unreadable."""
    return layout.read_json(path)


def duration(seconds: float | None) -> str:
    """`1:02:03`, `2:03`, or `?` when unknown."""
    if seconds is None or not math.isfinite(float(seconds)):
        return "?"
    s = int(round(float(seconds)))
    h, m, s = s // 3600, s % 3600 // 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _short(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if abs(v) >= 1e4:
            return f"{v / 1e6:.2f}M" if abs(v) >= 1e6 else f"{v / 1e3:.1f}k"
        return f"{v:.4g}"
    if isinstance(v, int) and abs(v) >= 10_000:
        return f"{v / 1e6:.2f}M" if abs(v) >= 1e6 else f"{v / 1e3:.1f}k"
    return str(v)


def _json_number(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _now_iso(t: float | None = None) -> str:
    when = datetime.fromtimestamp(time.time() if t is None else t, timezone.utc)
    return when.isoformat(timespec="seconds")
