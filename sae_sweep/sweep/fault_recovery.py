"""A batch after one job's fault took it down: every pack ends with a record, and those the
fault only took along are launched again.

When a job's worker process on this machine dies (SIGKILL, the out-of-memory killer) or a
job is interrupted on its own, joblib's loky kills the batch's other workers and raises.
`recover` then sorts out the batch's packs from their records (`job.json`, `summary.json`):
- those that ended, or were not (re)started since, keep their outcome or are launched;
- a pack whose job recorded `interrupted` (a signal to the job itself) stays interrupted;
- of the packs that were running, the one whose worker died first fails, its record naming
  the signal (worker_deaths.py tells which); the others are recorded interrupted and
  launched again, resuming from their checkpoints.
When the deaths cannot tell which worker died first, the packs are launched again one at a
time, so that a job that kills its worker again (out of memory) is the one that fails.

`Sweep.launch` (lifecycle.py) calls it with a `relaunch` callback that launches packs again
through the sweep's launcher (pack files, launch numbers): the sorting lives here, the
launching with the sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

from ..record import layout
from .running.task import fail_killed_job, mark_interrupted
from .worker_deaths import CHILD_DEATHS, Death, first_dead, is_job_fault, reported_exit_codes

log = logging.getLogger("sae_sweep")

Pack = list[int]
"""A launched job: the batch indices of the grid points it trains (one, or a pack's)."""


def recover(fault: BaseException, mark: int, packs: list[Pack], batch: list[list[str]],
            member_dirs: Callable[[Pack], list[Path]], launch_id: str,
            relaunch: Callable[[list[Pack]], list[JobReturn]],
            stopping: Callable[[], bool]) -> list[JobReturn]:  # fmt: skip
    """The outcomes of the batch's `packs` after `fault` (raised by their launch, whose child
    deaths are watched from `mark` on). `member_dirs` gives a pack's job folders, `relaunch`
    launches packs again (raising as a launch does), `stopping` says whether the launcher was
    told to stop (a fault then ends the sweep as any stop does)."""
    results: list[JobReturn] = []
    pending: list[Pack] = list(packs)
    requeued: set[int] = set()  # packs recorded interrupted by us and not launched since
    alone: set[int] = set()  # packs to launch one at a time (which died first is unknown)
    while pending:
        if fault is not None:
            pending, ambiguous = _sort_out(fault, CHILD_DEATHS.since(mark), pending, batch,
                                           member_dirs, launch_id, results,
                                           requeued)  # fmt: skip
            alone |= ambiguous
            fault = None
            continue
        now = ([p for p in pending if p[0] in alone][:1]
               or [p for p in pending if p[0] not in alone])  # fmt: skip
        requeued -= {p[0] for p in now}
        log.warning("launching %d job(s) of the batch again", len(now))
        mark = CHILD_DEATHS.watch()
        try:
            results += relaunch(now)
        except BaseException as exc:
            if stopping() or not is_job_fault(exc):
                raise
            fault = exc
            continue
        alone -= {p[0] for p in now}
        pending = [p for p in pending if p not in now]
    return results


def _sort_out(fault: BaseException, deaths: list[Death], pending: list[Pack],
              batch: list[list[str]], member_dirs: Callable[[Pack], list[Path]],
              launch_id: str, results: list[JobReturn],
              requeued: set[int]) -> tuple[list[Pack], set[int]]:  # fmt: skip
    """Settle the packs the fault ended (appending their outcomes to `results`); returns
    the packs to launch again, and those of them to launch one at a time."""
    left, suspects = [], []
    for members in pending:
        dirs = member_dirs(members)
        records = [layout.read_json(d / layout.JOB) or {} for d in dirs]
        ours = all(r.get("launch_id") == launch_id for r in records)
        if members[0] in requeued or not ours:  # not (re)started since: launch it
            left.append(members)
        elif all(r.get("outcome") != "running" for r in records):
            results.append(job_return(batch[members[0]], records))
        elif any((layout.read_summary(d) or {}).get("status") == "interrupted" for d in dirs):
            # a signal to the job itself (SIGTERM, SIGINT): it recorded `interrupted`
            records = [mark_interrupted(d, "interrupted by a signal to the job") for d in dirs]
            results.append(job_return(batch[members[0]], records))
        else:
            suspects.append((members, dirs, records))
    culprit, ambiguous = None, set()
    if isinstance(fault, BrokenProcessPool) and suspects:
        culprit = first_dead(suspects, deaths, reported_exit_codes(fault))
        if culprit is None and len(suspects) == 1:
            culprit = (suspects[0][0], None)
        elif culprit is None:
            ambiguous = {members[0] for members, _, _ in suspects}
    for members, dirs, _ in suspects:
        if culprit is not None and members is culprit[0]:
            how = culprit[1].describe() if culprit[1] else "killed"
            log.error("%s: its worker process was %s; the other jobs go on",
                      ", ".join(str(d) for d in dirs), how)  # fmt: skip
            records = [fail_killed_job(d, culprit[1]) for d in dirs]
            results.append(job_return(batch[members[0]], records))
        else:
            for d in dirs:
                mark_interrupted(d, "its worker was stopped when another job's worker died; "
                                 "launched again")  # fmt: skip
            requeued.add(members[0])
            left.append(members)
    return left, ambiguous


def job_return(overrides: list[str], records: list[dict[str, Any]]) -> JobReturn:
    """A launched pack's outcome as the launcher would have returned it (the member records)."""
    return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=records)
