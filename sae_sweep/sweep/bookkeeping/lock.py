"""One launcher per sweep folder at a time: `<sweep dir>/sweep.lock`, held by the launch.

Two launches into the same `hydra.sweep.dir` would both train every job (the second
"resuming" the first's live jobs) and overwrite each other's records. The launching process
holds an exclusive `flock` on sweep.lock from before it writes anything until it ends; the
kernel releases it when the process dies however it dies (SIGKILL included), so a lock is
never left stale. The file also names its holder (pid, host, start, command) for the message
a second launch prints, and for `sae-sweep-status`, which tells a live launcher from a dead
one by trying the lock (`launcher_alive`).

A second launch refuses, naming the holder; with `hydra.sweeper.wait_for_lock=true` it waits
for the first to end, then resumes what the first left.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...record.layout import LAUNCH_LOCK

log = logging.getLogger("sae_sweep")


class SweepLockedError(RuntimeError):
    """Another process is launching into the sweep folder."""


class LaunchLock:
    """The sweep folder's lock, held from `acquire` to `release` (or the process's end)."""

    def __init__(self, sweep_dir: Path, launch_id: str) -> None:
        self.path = Path(sweep_dir) / LAUNCH_LOCK
        self.launch_id = launch_id
        self._file = None

    def acquire(self, wait: bool = False) -> None:
        """Take the lock, or raise SweepLockedError naming its holder (`wait`: block until free)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 -- held open for as long as the lock
        try:
            locked = _try_lock(handle)
        except OSError as exc:  # a file system without locks (some network mounts)
            log.warning("cannot lock %s (%s): a second launch into this folder will not be "
                        "detected", self.path, exc)  # fmt: skip
            locked = True
        if not locked:
            holder = describe(read_holder(self.path))
            if not wait:
                handle.close()
                raise SweepLockedError(
                    f"another launch is running into {self.path.parent} ({holder}). Two "
                    "launches into one folder would train the same jobs twice. Fix: wait for "
                    "it to end (sae-sweep-status shows its jobs), or add "
                    "hydra.sweeper.wait_for_lock=true to start when it ends, or launch into "
                    "another hydra.sweep.dir"
                ) from None
            log.warning("waiting for the launch holding %s to end (%s)", self.path, holder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder_record(self.launch_id)) + "\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def _try_lock(handle, attempts: int = 10) -> bool:
    """The exclusive lock without blocking; a few tries over a second, since
    `launcher_alive` (sae-sweep-status) holds a shared lock for an instant."""
    for attempt in range(attempts):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt < attempts - 1:
                time.sleep(0.1)
    return False


def holder_record(launch_id: str) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "launch_id": launch_id,
        "command": " ".join(["sae-sweep", *sys.argv[1:]]),
    }


def read_holder(path: Path) -> dict[str, Any]:
    """What the lock file says of its (last) holder; {} when it says nothing readable."""
    try:
        loaded = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "holder unknown"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started "
            f"{holder.get('started')}: {holder.get('command')}")  # fmt: skip


def launcher_alive(sweep_dir: Path) -> bool | None:
    """Whether a launch holds the sweep folder's lock now; None for a folder without a lock
    file (a sweep of an earlier sae-sweep: nothing can be told)."""
    path = Path(sweep_dir) / LAUNCH_LOCK
    try:
        handle = open(path)  # noqa: SIM115
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:  # a file system without locks: nothing can be told
            return None
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
