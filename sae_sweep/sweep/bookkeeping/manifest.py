"""The sweep manifest, `<sweep dir>/sweep.json`: what was launched, from which code, when.

    {"id", "name", "grid": {key: [values]}, "n_jobs", "git_commit", "versions", "started",
     "ended", "launches": [{"id", "started", "ended", "command", "overrides", "git_commit",
     "jobs"}]}

`id` names the sweep instance (`<name>-<first start>-<4 hex>`), made on the first launch and
kept by every later launch into the same folder: the W&B group of its runs, so two runs of
the same sweep file never share panels. Top-level fields describe the latest launch
(`started` is the first launch's); every launch into the same folder (re-runs, resumes) is
appended to `launches`. Written by the launching process only (the one holding sweep.lock),
atomically. It is never silently replaced: a sweep.json that cannot be read is moved aside
to `sweep.json.unreadable-<time>` (named in a warning) before a new one is started, so the
launch history is kept.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...record.atomic import atomic_write_json
from ...record.layout import MANIFEST as MANIFEST_FILE
from ...record.versions import versions

log = logging.getLogger("sae_sweep")


def start_launch(
    sweep_dir: Path, name: str | None, grid: dict[str, list[str]], overrides: list[str],
    launch_id: str, n_jobs: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Record a launch's start in sweep.json (created on the first launch). n_jobs: the jobs
    of its first launch, when not every grid point (a target sweep's one-round variants)."""
    sweep_dir = Path(sweep_dir)
    manifest = read_manifest(sweep_dir)
    if not manifest:
        keep_aside_unreadable(sweep_dir)
    commit = versions().get("git_commit")
    now = _now()
    name = name or manifest.get("name") or sweep_dir.name
    manifest.setdefault(
        "id", new_sweep_id(name, manifest.get("started") or now)
    )  # an earlier sweep.json keeps its own
    manifest.update(
        name=name,
        grid={k: v for k, v in grid.items() if len(v) > 1},
        fixed={k: v[0] for k, v in grid.items() if len(v) == 1},
        n_jobs=math.prod(len(v) for v in grid.values()) if n_jobs is None else n_jobs,
        git_commit=commit,
        versions=versions(),
        started=manifest.get("started") or now,
        ended=None,
    )
    manifest.setdefault("launches", []).append(
        {
            "id": launch_id,
            "started": now,
            "ended": None,
            "command": " ".join(["sae-sweep", *sys.argv[1:]]),
            "overrides": list(overrides),
            "git_commit": commit,
        }
    )
    atomic_write_json(sweep_dir / MANIFEST_FILE, manifest)
    return manifest


def end_launch(sweep_dir: Path, launch_id: str, counts: dict[str, int]) -> None:
    """Record a launch's end and its job counts (in a new sweep.json when the one the launch
    started has become unreadable meanwhile: that one is kept aside)."""
    manifest = read_manifest(sweep_dir)
    if not manifest:
        keep_aside_unreadable(sweep_dir)
    now = _now()
    manifest["ended"] = now
    for launch in manifest.get("launches", []):
        if launch.get("id") == launch_id:
            launch.update(ended=now, jobs=counts)
    atomic_write_json(Path(sweep_dir) / MANIFEST_FILE, manifest)


def new_sweep_id(name: str, started: str) -> str:
    """A sweep instance's id: readable (name, start time) and unique (random suffix)."""
    stamp = datetime.fromisoformat(started).strftime("%Y%m%d-%H%M%S")
    return f"{name}-{stamp}-{os.urandom(2).hex()}"


def sweep_id(sweep_dir: Path) -> str | None:
    """The sweep instance id of `sweep_dir` (None: no manifest, or one older than ids)."""
    return read_manifest(sweep_dir).get("id")


def keep_aside_unreadable(sweep_dir: Path) -> Path | None:
    """Move a sweep.json that exists but holds no readable manifest (truncated, edited by
    hand, not an object) to `sweep.json.unreadable-<time>`; returns where, or None."""
    path = Path(sweep_dir) / MANIFEST_FILE
    if not path.exists():
        return None
    stem = f"{MANIFEST_FILE}.unreadable-{datetime.now():%Y%m%d-%H%M%S}"
    aside, n = path.with_name(stem), 1
    while aside.exists():  # never over an earlier one kept the same second
        aside, n = path.with_name(f"{stem}-{n}"), n + 1
    path.rename(aside)
    log.warning("%s could not be read as a sweep manifest: kept as %s, and a new %s started "
                "(the launch history before it is in the kept file)", path, aside.name,
                MANIFEST_FILE)  # fmt: skip
    return aside


def read_manifest(sweep_dir: Path) -> dict[str, Any]:
    try:
        loaded = json.loads((Path(sweep_dir) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
