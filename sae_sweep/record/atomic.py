"""Atomic file writes: write a temp file beside the target, then rename over it.

A reader (the analysis, a resumed job) sees either the old file or the whole new one,
never a half-written file, even when the job is killed mid-write. The temp file is named
`.<name>.<pid>.<random>.tmp` after the process writing it: one killed mid-write (SIGKILL,
out of memory) leaves it behind, and `remove_stale_temporaries` removes those whose writer
is dead when the job next starts (a checkpoint's can weigh hundreds of MB).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .liveness import pid_alive

log = logging.getLogger("sae_sweep")
# .<name>.<pid>.<random>.tmp (mkstemp's random part: 8 characters); earlier: no <pid>.
_TEMPORARY = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp$")


@contextmanager
def replace_atomically(path: Path) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    with replace_atomically(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def remove_stale_temporaries(folder: Path) -> int:
    """Remove the temp files that writers killed mid-write left in `folder` (those of a live
    process, e.g. one still writing, stay); returns the bytes freed. Temp files of earlier
    versions, which carry no pid, count as stale."""
    freed = 0
    if not Path(folder).is_dir():
        return freed
    for entry in os.scandir(folder):
        match = _TEMPORARY.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = match.group("pid")
        if pid is not None and (int(pid) == os.getpid() or pid_alive(int(pid))):
            continue
        size = entry.stat(follow_symlinks=False).st_size
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            freed += size
            log.warning("removed %s (%d MB), left by a write that was killed", entry.path,
                        size // 2**20)  # fmt: skip
    return freed
