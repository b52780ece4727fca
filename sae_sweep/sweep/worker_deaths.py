"""Which child processes of the launching process died, in the order they died, of what.

When one of joblib's worker processes is killed (SIGKILL from the kernel's out-of-memory
killer, a `kill` by hand), loky breaks its whole pool: it kills the other workers with
SIGKILL and raises TerminatedWorkerError, which names the exit codes but neither the pid nor
the job. To fail only the job whose worker died first, the launcher watches its children:
one thread per process blocks in `waitid(P_ALL, WEXITED | WNOWAIT)`, which returns as soon
as a child has ended, with its pid and how it ended, without reaping it (loky still reaps
its workers). The first death of a job's worker is the cause; the deaths after it are loky's.
On a loaded machine the watcher can wake late: `waitid` then names any of the ended children,
not the first to end, and loky may already have reaped the first. So a death is taken as the
first only when no other child had ended when it was seen and the deaths of every suspect's
worker were seen; otherwise which died first is unknown (the sweep then relaunches the jobs
one at a time).
`is_job_fault` tells such a fault from the launcher's own, and `first_dead` picks the job
whose worker died first among a broken batch's (`Sweep.launch` then fails it alone).
"""

from __future__ import annotations

import os
import re
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from ..training.interruption import signal_name
from .signals import LaunchStopped


@dataclass(frozen=True)
class Death:
    pid: int
    signal: int | None  # the signal that ended it, or None when it exited
    exit_code: int | None  # its exit status, or None when a signal ended it
    seq: int  # the order of the deaths seen by this process
    alone: bool = True  # no other child had ended, unreaped, when this death was seen

    def describe(self) -> str:
        if self.signal is not None:
            return f"killed by {signal_name(self.signal)}"
        return f"exited with status {self.exit_code}"


class ChildDeaths:
    """Every child of this process that ended since `watch()` was first called."""

    def __init__(self) -> None:
        self._deaths: list[Death] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self) -> int:
        """Start watching (once per process); returns a mark for `since`."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="child-deaths",
                                                daemon=True)  # fmt: skip
                self._thread.start()
            return len(self._deaths)

    def since(self, mark: int) -> list[Death]:
        with self._lock:
            return list(self._deaths[mark:])

    def _run(self) -> None:
        seen: set[int] = set()  # pids ended and not yet reaped by their owner
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:  # no child now
                seen.clear()
                time.sleep(0.05)
                continue
            except InterruptedError:
                continue
            if info is None:
                continue
            if info.si_pid in seen:  # still a zombie: wait for its owner to reap it
                time.sleep(0.002)
                seen &= _zombies(seen)
                continue
            seen.add(info.si_pid)
            killed = info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
            others = _ended_children()
            alone = others is not None and not (others - seen)
            with self._lock:
                self._deaths.append(Death(
                    pid=info.si_pid, signal=info.si_status if killed else None,
                    exit_code=None if killed else info.si_status, seq=len(self._deaths),
                    alone=alone,
                ))  # fmt: skip


def _zombies(pids: set[int]) -> set[int]:
    """Those of `pids` that are still unreaped children of this process."""
    left = set()
    for pid in pids:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                left.add(pid)
        except ChildProcessError:
            pass
    return left


def _ended_children() -> set[int] | None:
    """The children of this process that have ended and are not yet reaped (zombies), read
    from /proc (`waitid` names only one of them); None where /proc cannot be read."""
    me, ended = os.getpid(), set()
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return None
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # it ended and was reaped meanwhile
            continue
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]  # the name may hold spaces
        if state == "Z" and int(ppid) == me:
            ended.add(int(entry.name))
    return ended


CHILD_DEATHS = ChildDeaths()
"""The one watcher of this process (a second would see the same deaths)."""


# -- telling which job a broken pool was the fault of ---------------------------------


def is_job_fault(exc: BaseException) -> bool:
    """Whether `exc`, raised by a launch of local workers, is one job's fault (its worker
    died, or the job was interrupted on its own) and not the launcher's."""
    return isinstance(exc, BrokenProcessPool) or (
        isinstance(exc, KeyboardInterrupt) and not isinstance(exc, LaunchStopped)
    )


def first_dead(suspects: list[tuple[list[int], list[Path], list[dict]]], deaths: list[Death],
                reported: set[int]) -> tuple[list[int], Death] | None:  # fmt: skip
    """The suspect pack whose worker died first (its records name the worker's pid); None
    when that cannot be known: a suspect's worker whose death was not seen (loky reaped it
    before the watcher looked, so it may have been the first), a first death seen only after
    other children had ended, or one that disagrees with how loky says the worker that broke
    its pool ended (`reported`: exit codes, -signal for a signal; empty: unknown)."""
    by_pid = {r.get("pid"): members for members, _, records in suspects for r in records}
    seen = [death for death in deaths if death.pid in by_pid]
    if not seen or {death.pid for death in seen} != set(by_pid):
        return None
    first = seen[0]
    code = -first.signal if first.signal is not None else first.exit_code
    known = first.alone and (not reported or code in reported)
    return (by_pid[first.pid], first) if known else None


def reported_exit_codes(fault: BaseException) -> set[int]:
    """The exit codes loky's TerminatedWorkerError names (`{SIGKILL(-9)}`), or {}."""
    return {int(code) for code in re.findall(r"\w+\((-?\d+)\)", str(fault))}
