"""Whether the process that wrote a record is still alive.

Records that describe a live process (`progress.json`, `job.json`) carry its `host` and
`pid`. On the host that wrote them, the pid tells whether that process still runs: a
`running` progress whose process is gone was killed without a word (SIGKILL, the kernel's
OOM killer, a lost node). On another host nothing can be told from the pid.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return False
        if exc.errno != errno.EPERM:  # EPERM: it exists, owned by another user
            raise
    try:  # a killed child not yet reaped by its parent is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): os.kill said it exists


def writer_alive(record: dict[str, Any]) -> bool | None:
    """Whether the process named by a record's `host` and `pid` is alive: True or False on the
    host that wrote it, None (cannot tell) on another host or without a pid."""
    pid, host = record.get("pid"), record.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    return pid == os.getpid() or pid_alive(pid)
