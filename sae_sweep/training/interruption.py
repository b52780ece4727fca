"""SIGTERM and SIGINT end a job with a resumable record, and never in the middle of a step.

While a job runs (`stop_on_signals`, entered by job.py), the first SIGTERM (what `kill`,
SLURM at a time limit and most schedulers send) or SIGINT (Ctrl-C):
- during training, lets the step in progress finish: the loop then saves each SAE's
  checkpoint at that step (its state is in memory; a write costs what a periodic one does)
  and raises `JobInterrupted` (training/loop.py);
- anywhere else (preparing the data, evaluating), raises `JobInterrupted` at once.
A second signal raises at once wherever it lands, except while the job writes files that
belong together (`held`: a checkpoint, the record of its end). job.py records every
unfinished SAE `interrupted` with the step it reached; a re-run resumes from the checkpoint;
a single run's process exits with 128 + the signal's number (main.py).

Handlers are installed only over a signal's default disposition: a handler set up by
whoever runs the job stays in charge. Under SLURM, submitit ignores SIGTERM and turns
SIGUSR2 (sent `signal_delay_s` before a time limit or preemption) into a requeue and a
SystemExit, which job.py also records as `interrupted` (conf/hydra/launcher/slurm.yaml).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger("sae_sweep")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_DEFAULT = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}


class StoppedBySignal(KeyboardInterrupt):
    """A process told to stop by signal `signum` (a KeyboardInterrupt, as Ctrl-C is: every
    `except Exception` lets it through). A job's is JobInterrupted, a launch's LaunchStopped
    (sweep/signals.py)."""

    stopped = "the process"

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"{self.stopped} was stopped by {signal_name(signum)}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for a process ended by a signal


class JobInterrupted(StoppedBySignal):
    """The job was told to stop: it records `interrupted` on its way out (job.py)."""

    stopped = "the job"


class _State:
    deferring = 0  # > 0 while the training loop checks `requested()` after every step
    holding = 0  # > 0 while the job writes its record: no signal cuts it short
    pending: int | None = None  # a signal received while deferring


_state = _State()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While entered, SIGTERM and SIGINT raise JobInterrupted (deferred to the end of the step
    inside `at_step_ends`). Only in the main thread, the one Python delivers signals to."""
    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) == _DEFAULT[signum]:
                previous[signum] = signal.signal(signum, _handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state.pending = None


@contextlib.contextmanager
def at_step_ends() -> Iterator[None]:
    """The training loop's steps: a stop signal waits for the step in progress to end. One
    that came after the loop's last look at `requested()` is raised when the steps end."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    if _state.pending is not None and not _state.deferring:
        raise JobInterrupted(_state.pending)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """While the job writes files that belong together (a checkpoint's state and manifest, the
    record of its end): a stop signal is noted, never raised in the middle (a checkpoint cut
    between its files is unusable, a record cut short is lost); the step's end acts on it."""
    _state.holding += 1
    try:
        yield
    finally:
        _state.holding -= 1


def requested() -> int | None:
    """The stop signal received during a step, if any (one attribute read: cheap per step)."""
    return _state.pending


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _handle(signum: int, frame) -> None:
    if _state.holding:
        log.warning("%s: stopping once the files being written are whole", signal_name(signum))
        _state.pending = signum if _state.pending is None else _state.pending
        return
    if _state.deferring and _state.pending is None:
        _state.pending = signum
        log.warning("%s: stopping after this step, with a checkpoint (send it again to stop at "
                    "once)", signal_name(signum))  # fmt: skip
        return
    raise JobInterrupted(signum)
