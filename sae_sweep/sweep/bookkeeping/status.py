"""`sae-sweep-status SWEEP_DIR`: how far along a sweep is, what failed, when it will end.

    sae-sweep-status multirun/quick/2024-06-01_12-00-00
    sae-sweep-status multirun/quick/2024-06-01_12-00-00 --watch        # redraw every 10 s
    sae-sweep-status SWEEP_DIR --stale-after 1800 --json

It reads only the records: the sweep manifest (`sweep.json`), and per job folder
`job.json`, `summary.json` and `progress.json`. So it works for every launcher, during and
after the run, from any machine that sees the folder. A job is

    done         its summary says done
    failed       its summary says failed (the first line of the error is shown)
    unreadable   its summary cannot be read or holds a field of the wrong type (named)
    interrupted  stopped by Ctrl-C or a preemption; the next launch resumes it
    conflict     its folder holds another config; the launch left it alone
    running      started, no summary yet: step, L0, FVU (last logged window) and ETA
    stale        running, but its progress has not moved for --stale-after seconds
                 (a killed SLURM job, a lost node): re-run the sweep command to resume it
    stopped      running, but its launcher is gone and so is its process (on this host):
                 re-run the sweep command to resume it
    not started  the manifest counts more jobs than there are job folders

The sweep's launcher is `running` while a launch holds the folder's lock (sweep.lock),
`ended` when the last launch recorded its end in sweep.json, and `stopped` when it did not
and holds the lock no more: it was killed (SIGKILL, a lost login node). A stopped sweep is
never "finished"; its running jobs are checked one by one.

Exit status: 0, or 2 when SWEEP_DIR holds no sweep.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from ...record import layout
from ...record.liveness import writer_alive
from ...record.malformed import read_checked_summary
from ...record.progress import duration, read_progress
from .lock import describe, launcher_alive, read_holder
from .manifest import read_manifest

STATES = ("done", "running", "stale", "stopped", "failed", "interrupted", "unreadable",
          "conflict", "not started")  # fmt: skip
DEFAULT_STALE_AFTER_S = 600.0
DEFAULT_WATCH_S = 10.0
RECORD_FILES = (layout.JOB, layout.SUMMARY, layout.PROGRESS)


def job_status(job_dir: Path, stale_after_s: float, now: float,
               launcher_gone: bool = False) -> dict[str, Any]:  # fmt: skip
    """One job's row, from the files in its folder (`launcher_gone`: the sweep's launcher
    is known to be dead)."""
    job = layout.read_json(job_dir / layout.JOB) or {}
    summary, unreadable = _summary(job_dir)
    progress = read_progress(job_dir / layout.PROGRESS) or {}
    row: dict[str, Any] = {"job": job.get("job"), "dir": None, "state": None, "step": None,
                           "steps": None, "l0": None, "fvu": None, "eta_s": None,
                           "age_s": None, "wall_s": None, "note": None,
                           "started": job.get("started")}  # fmt: skip
    if unreadable:
        return {**row, "state": "unreadable", "note": unreadable}
    finished = summary.get("status")
    if finished in ("done", "failed", "interrupted"):
        wall = job.get("wall_s") if job.get("outcome") == finished else summary.get("wall_s")
        row.update(state=finished, step=summary.get("steps"), wall_s=wall)
        if finished == "done":
            row.update(steps=summary.get("steps"), l0=summary.get("l0"), fvu=summary.get("fvu"))
        else:
            row.update(step=progress.get("done"), steps=progress.get("total"))
            row["note"] = _first_line(summary.get("error"))
        return row
    if job.get("outcome") == "conflict":
        return {**row, "state": "conflict", "note": job.get("reason")}
    # Started and not finished: running, or dead without a word (stale).
    updated = progress.get("updated_unix") or job.get("started")
    age = now - updated if updated else None
    eta = progress.get("eta_s")
    row.update(
        state="running",
        step=progress.get("done"),
        steps=progress.get("total"),
        l0=progress.get("l0"),
        fvu=progress.get("fvu"),
        age_s=age,
        eta_s=max(eta - (age or 0.0), 0.0) if isinstance(eta, int | float) else None,
        note=progress.get("note") or _phase(progress.get("state")),
    )
    if job.get("started") and row["eta_s"] is not None:  # the job's whole time, as wall_s
        row["wall_s"] = now - job["started"] + row["eta_s"]
    host = progress.get("host") or job.get("host")
    pid = progress.get("pid") or job.get("pid")
    if launcher_gone and writer_alive({"host": host, "pid": pid}) is False:
        return {**row, "state": "stopped", "eta_s": None, "wall_s": None,
                "note": f"its launcher and its process ({host}:{pid}) are gone; re-run the "
                "sweep to resume"}  # fmt: skip
    if age is not None and age > stale_after_s:
        row.update(
            state="stale",
            eta_s=None,
            note=f"no progress for {duration(age)} ({host}:{pid}); re-run the sweep to resume",
        )
    return row


def sweep_status(
    sweep_dir: Path, stale_after_s: float = DEFAULT_STALE_AFTER_S, now: float | None = None
) -> dict[str, Any]:
    """The sweep's jobs, counts and estimated time to finish."""
    sweep_dir = Path(sweep_dir)
    now = time.time() if now is None else now
    manifest = read_manifest(sweep_dir)
    launcher = launcher_state(sweep_dir, manifest)
    rows = []
    for folder in job_folders(sweep_dir):
        row = job_status(folder, stale_after_s, now, launcher_gone=launcher == "stopped")
        row["dir"] = str(folder.relative_to(sweep_dir))
        rows.append(row)
    rows.sort(key=lambda r: (r["job"] is None, r["job"], r["dir"]))
    counts = {state: sum(r["state"] == state for r in rows) for state in STATES}
    counts["not started"] = max(int(manifest.get("n_jobs") or 0) - len(rows), 0)
    return {
        "sweep_dir": str(sweep_dir),
        "name": manifest.get("name"),
        "n_jobs": max(int(manifest.get("n_jobs") or 0), len(rows)),
        "started": manifest.get("started"),
        "ended": manifest.get("ended"),
        "launcher": launcher,
        "launcher_holder": describe(read_holder(sweep_dir / layout.LAUNCH_LOCK)),
        "counts": counts,
        "eta_s": sweep_eta(rows, counts["not started"]),
        "jobs": rows,
    }


def _summary(job_dir: Path) -> tuple[dict[str, Any], str | None]:
    """The job's summary ({} when it has none) and what makes it unreadable (None: nothing)."""
    summary, unreadable = read_checked_summary(job_dir / layout.SUMMARY)
    return summary or {}, unreadable


def launcher_state(sweep_dir: Path, manifest: dict[str, Any]) -> str | None:
    """`running`, `ended` or `stopped` (see the module docstring); None when nothing tells
    (a sweep of an earlier sae-sweep, without sweep.lock, that recorded no end)."""
    alive = launcher_alive(sweep_dir)
    if alive:
        return "running"
    launches = manifest.get("launches")
    last = launches[-1] if isinstance(launches, list) and launches else {}
    if isinstance(last, dict) and last.get("ended"):
        return "ended"
    return "stopped" if alive is False else None


def job_folders(sweep_dir: Path) -> list[Path]:
    """Folders holding a job record (hidden folders such as Hydra's `.hydra` excluded)."""
    found = set()
    for name in RECORD_FILES:
        for path in Path(sweep_dir).rglob(name):
            rel = path.parent.relative_to(sweep_dir)
            if path.parent != Path(sweep_dir) and not any(p.startswith(".") for p in rel.parts):
                found.add(path.parent)
    return sorted(found)


def sweep_eta(rows: list[dict[str, Any]], not_started: int) -> float | None:
    """Seconds until the last job ends: the work left (running jobs' ETAs, and for each job
    not started the median time of the finished ones, or of the running ones) divided by the
    most jobs that have run at once. 0 when nothing is left; None when nothing is known."""
    running = [r for r in rows if r["state"] == "running"]
    if not running and not not_started:
        return 0.0
    if any(r["eta_s"] is None for r in running):
        return None
    durations = [r["wall_s"] for r in rows if r["state"] == "done" and r["wall_s"]]
    if not durations:  # no job finished yet: a running job's elapsed + remaining time
        durations = [r["wall_s"] for r in running if r["wall_s"]]
    if not_started and not durations:
        return None
    per_job = statistics.median(durations) if durations else 0.0
    work = sum(r["eta_s"] for r in running) + not_started * per_job
    longest = max((r["eta_s"] for r in running), default=0.0)
    return max(work / max(len(running), parallelism(rows), 1), longest)


def parallelism(rows: list[dict[str, Any]]) -> int:
    """The most jobs that ran at the same time, from their start times and durations."""
    events = []
    for r in rows:
        if r["started"] and r["wall_s"] and r["state"] in ("done", "failed", "running"):
            events += [(r["started"], 1), (r["started"] + r["wall_s"], -1)]
    most = now = 0
    for _, change in sorted(events):  # at a tie the end (-1) sorts first
        now += change
        most = max(most, now)
    return most


def render(status: dict[str, Any]) -> str:
    """The status as text: a header, the counts, the sweep's ETA and one line per job."""
    c = status["counts"]
    head = ", ".join(f"{n} {state}" for state, n in c.items() if n)
    eta = status["eta_s"]
    if status.get("launcher") == "stopped":
        finish = (f"stopped: its launcher ({status['launcher_holder']}) ended without "
                  "recording its end; re-run the sweep command to resume")  # fmt: skip
    elif eta == 0 and (c["running"] or c["stale"] or c["not started"]):
        finish = "overdue"
    else:
        finish = "finished" if eta == 0 else f"about {duration(eta)} left" if eta else "ETA unknown"
    lines = [
        f"sweep {status['name'] or '?'}: {status['sweep_dir']}",
        f"{status['n_jobs']} jobs: {head or 'none yet'}; {finish}",
        "",
    ]
    columns = ("job", "dir", "state", "step", "l0", "fvu", "ETA", "updated", "note")
    cells = [columns] + [_cells(r) for r in status["jobs"]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns) - 1)]
    for row in cells:
        body = "  ".join(v.ljust(w) for v, w in zip(row[:-1], widths, strict=True))
        lines.append(f"{body}  {row[-1]}".rstrip())
    return "\n".join(lines) + "\n"


def _cells(r: dict[str, Any]) -> tuple[str, ...]:
    if r["step"] is None:
        step = ""
    elif r["steps"]:
        step = f"{r['step']}/{r['steps']}"
    else:
        step = str(r["step"])
    fmt = lambda v: "" if v is None else f"{v:.4g}" if isinstance(v, int | float) else str(v)  # noqa: E731
    eta = duration(r["eta_s"]) if r["state"] == "running" else ""
    age = f"{duration(r['age_s'])} ago" if r["age_s"] is not None else ""
    job = "" if r["job"] is None else str(r["job"])
    return (job, r["dir"], r["state"], step, fmt(r["l0"]), fmt(r["fvu"]), eta, age,
            r["note"] or "")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sae-sweep-status",
        description="The jobs of a sweep folder: done, running (step, ETA), failed, stale.",
    )
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="the sweep folder (hydra.sweep.dir)")
    p.add_argument(
        "--stale-after",
        type=float,
        default=DEFAULT_STALE_AFTER_S,
        metavar="SECONDS",
        help="a running job whose progress.json is older than this is stale "
        f"(default {DEFAULT_STALE_AFTER_S:.0f}; keep it above logger.progress_every_s)",
    )
    p.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=DEFAULT_WATCH_S,
        metavar="SECONDS",
        help=f"redraw every SECONDS (default {DEFAULT_WATCH_S:.0f}) until no job is left",
    )
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        print(f"sae-sweep-status: error: {sweep_dir} is not a folder", file=sys.stderr)
        return 2
    try:
        return _show(sweep_dir, args)
    except KeyboardInterrupt:  # the way out of --watch
        return 0


def _show(sweep_dir: Path, args: argparse.Namespace) -> int:
    while True:
        status = sweep_status(sweep_dir, args.stale_after)
        if not status["jobs"] and not status["n_jobs"]:
            print(
                f"sae-sweep-status: error: {sweep_dir} holds no sweep (no sweep.json and no job "
                "folder with job.json, summary.json or progress.json). Fix: give the folder "
                "set by hydra.sweep.dir",
                file=sys.stderr,
            )
            return 2
        text = json.dumps(status, indent=2) if args.json else render(status)
        if args.watch is None:
            print(text, end="" if text.endswith("\n") else "\n")
            return 0
        if sys.stdout.isatty():
            print("\033[2J\033[H", end="")  # clear the screen: a redraw, not a scroll
        print(f"{time.strftime('%H:%M:%S')}  (every {args.watch:g} s, Ctrl-C to stop)")
        print(text, flush=True)
        left = status["counts"]["running"] + status["counts"]["not started"]
        if not left:
            return 0
        time.sleep(args.watch)


def _phase(state: str | None) -> str | None:
    return state if state in ("preparing", "evaluating") else None


def _first_line(text: Any) -> str | None:
    return str(text).strip().splitlines()[0][:160] if text else None


if __name__ == "__main__":
    sys.exit(main())
