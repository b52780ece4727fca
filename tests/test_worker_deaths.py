"""Telling which worker died first when loky breaks its pool: the watcher of child deaths and
`first_dead`, on real child processes (the sweep-level cases are in test_faults_sweep.py)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from sae_sweep.sweep.worker_deaths import ChildDeaths, Death, first_dead


def _deaths(watcher: ChildDeaths, mark: int, n: int) -> list[Death]:
    deadline = time.monotonic() + 10
    while len(watcher.since(mark)) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return watcher.since(mark)


def test_a_death_seen_with_another_child_already_ended_is_not_taken_as_the_first():
    """On a loaded machine the watcher can wake after loky killed the other workers; waitid
    then names any of the ended children, so which died first is unknown (the CI failure:
    the wrong job was failed as the one killed)."""
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    for p in procs:
        p.send_signal(signal.SIGKILL)
    time.sleep(0.2)  # both have ended before the watcher starts
    watcher = ChildDeaths()
    deaths = _deaths(watcher, watcher.watch(), 1)  # the next is seen once this one is reaped
    for p in procs:
        p.wait()
    assert deaths[0].pid in {p.pid for p in procs}
    assert not deaths[0].alone and deaths[0].signal == signal.SIGKILL
    suspects = [([i], [Path(f"job{i}")], [{"pid": p.pid}]) for i, p in enumerate(procs)]
    assert first_dead(suspects, deaths, {-signal.SIGKILL}) is None  # relaunched one at a time


def test_a_death_seen_alone_names_its_job():
    watcher = ChildDeaths()
    mark = watcher.watch()
    victim, other = (subprocess.Popen(["sleep", "60"]) for _ in range(2))
    victim.send_signal(signal.SIGKILL)
    first = _deaths(watcher, mark, 1)[0]
    victim.wait()  # reaped, as loky reaps its workers
    other.send_signal(signal.SIGKILL)
    deaths = _deaths(watcher, mark, 2)
    other.wait()
    assert first.pid == victim.pid and first.alone
    suspects = [([0], [Path("a")], [{"pid": victim.pid}]), ([1], [Path("b")], [{"pid": other.pid}])]
    culprit = first_dead(suspects, deaths, {-signal.SIGKILL})
    assert culprit is not None and culprit[0] == [0] and culprit[1].pid == victim.pid
    assert first_dead(suspects, deaths, {-signal.SIGTERM}) is None  # loky saw another end


def test_a_suspect_whose_death_was_not_seen_may_have_died_first():
    """The CI failure's second form: loky reaped the killed worker before the watcher looked,
    then killed the other, whose death the watcher saw alone. Which died first is unknown."""
    suspects = [([0], [Path("a")], [{"pid": 101}]), ([1], [Path("b")], [{"pid": 102}])]
    only_other = [Death(pid=102, signal=signal.SIGKILL, exit_code=None, seq=0)]
    assert first_dead(suspects, only_other, {-signal.SIGKILL}) is None
    both = [*only_other, Death(pid=101, signal=signal.SIGKILL, exit_code=None, seq=1)]
    culprit = first_dead(suspects, both, {-signal.SIGKILL})
    assert culprit is not None and culprit[0] == [1]
