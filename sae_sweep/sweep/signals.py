"""How a launch stops when it is told to: SIGTERM or SIGINT (Ctrl-C) to the launching process.

Python's default for SIGTERM ends the process at once: joblib's workers, busy with their
jobs, went on training under PID 1, and the launch left no jobs table and no end time in
sweep.json. While a sweep runs, `StopSignals` turns either signal into `LaunchStopped`
(a KeyboardInterrupt, so joblib, loky and Hydra treat it as Ctrl-C): first the signal is
passed on to the jobs this launch runs in worker processes of this machine, so each records
`interrupted` at its step (the next launch resumes it), then the exception unwinds the
launch: joblib kills its workers, and the sweep's end writes the table and sweep.json and
exits with 128 + the signal's number.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

from ..record.liveness import pid_alive
from ..training.interruption import STOP_SIGNALS, StoppedBySignal, signal_name

log = logging.getLogger("sae_sweep")


class LaunchStopped(StoppedBySignal):
    """The launching process was told to stop by signal `signum`."""

    stopped = "the launch"


class StopSignals:
    """While entered, SIGTERM and SIGINT call `pass_on(signum)` (tell the jobs), then raise
    LaunchStopped; inside `held()` the exception waits for the block's end (the records being
    written). Only in the main thread, the one Python delivers signals to; elsewhere a no-op.
    The earlier handlers come back on exit."""

    def __init__(self, pass_on: Callable[[int], None]) -> None:
        self.pass_on = pass_on
        self.signum: int | None = None  # the first stop signal received
        self._previous: dict[int, object] = {}
        self._holding = 0
        self._held_back = False

    @property
    def name(self) -> str:
        return signal_name(self.signum) if self.signum else ""

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
        if self._held_back and not self._holding:
            self._held_back = False
            raise LaunchStopped(self.signum)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:  # a second signal: the stop is already on its way
            return
        self.signum = signum
        log.warning("%s: stopping the launch (its jobs record `interrupted`)", self.name)
        try:
            self.pass_on(signum)
        finally:
            if self._holding:
                self._held_back = True
            else:
                raise LaunchStopped(signum)


def signal_processes(pids: list[int], signum: int | None, wait_s: float,
                     done: Callable[[int], bool]) -> None:  # fmt: skip
    """Send `signum` (None: nothing) to `pids`, then wait up to `wait_s` until `done(pid)`
    for each (the job recorded its end) or its process is gone."""
    sent = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if signum is not None:
                os.kill(pid, signum)
            sent.append(pid)
    deadline = time.monotonic() + wait_s
    while sent and time.monotonic() < deadline:
        sent = [pid for pid in sent if not done(pid) and pid_alive(pid)]
        time.sleep(0.1)
