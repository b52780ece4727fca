"""Target-L0 rounds per chain: each (variant, target) launches its next lambda as soon as its
own seeds finish, instead of waiting for every chain's round to end.

    pipeline = ChainPipeline(plan, launch, read_runs, targets, tolerance, max_rounds, slots,
                             stopped)
    returns, outcomes = pipeline.run(grid_runs)   # outcomes: {(variant, target): ChainOutcome}

Each open chain runs in a thread of its own: it places its target from the grid's runs of its
variant and the runs at the lambdas it proposed itself (`chains.place_chain`), and launches
every seed at its next proposal through the sweep's `launch`, until it is hit, given up, or
spent `l0_max_rounds`. A chain sees no other chain's rounds, so the lambdas it proposes do not
depend on which chain finished first: a resume into the same folder proposes the same lambdas
and trains nothing new. Two chains of one variant that propose the same lambda share its jobs:
the second waits for the first's runs instead of launching them again (they would share a
folder). At most `slots` chains have jobs in flight at once (the launcher's parallelism).

Only for launchers whose `launch` calls can run side by side from threads
(`PIPELINED_LAUNCHERS`, the submitit ones: each call submits its own jobs and waits on them).
The others keep rounds; docs/sweeps.md says why for each.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.utils import JobReturn

from .planning import chains
from .planning import targets as tg

log = logging.getLogger("sae_sweep")

PIPELINED_LAUNCHERS = (
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
)
"""The launchers whose `launch` may be called from several threads at once: each call builds
its own submitit executor, submits its jobs and waits on their own futures."""

JOB_NUMBER = "hydra.job.num"


def why_rounds(launcher_target: str, subdir: str | None) -> str | None:
    """Why a sweep with this launcher (its `_target_`) and job-folder pattern keeps rounds
    across chains; None when its chains may move on their own."""
    if launcher_target not in PIPELINED_LAUNCHERS:
        name = launcher_target.rsplit(".", 1)[-1] or "basic"
        return (f"the launcher {name} runs rounds: only submitit's launchers run chains on "
                "their own (docs/sweeps.md)")  # fmt: skip
    if subdir is not None and JOB_NUMBER in subdir:
        return ("the job folders are named by job number, which chains moving on their own "
                "do not keep from one launch to the next (a resume would train anew)")  # fmt: skip
    return None


@dataclass
class ChainOutcome:
    """Where one chain ended: its state, the lambdas it tried (rounds), the runs it saw."""

    state: tg.TargetState
    rounds: int
    runs: list[dict[str, Any]] = field(default_factory=list)


class ChainPipeline:
    """The chains of a target sweep after its grid, each moving on its own (module docstring).

    launch: the sweep's launch of one batch (thread-safe); read_runs: a batch's returns ->
    run records (`chains.match_runs`); targets: every variant at each, or the chains as
    (variant, target); stopped: whether the launch was told to stop (no chain
    launches again once it is)."""

    def __init__(
        self, plan: chains.TargetPlan, launch: Callable[[list[list[str]]], list[JobReturn]],
        read_runs: Callable[[list[JobReturn]], list[dict[str, Any]]],
        targets: Sequence[float] | Sequence[tuple[str, float]],
        tolerance: float, max_rounds: int, slots: int, stopped: Callable[[], bool],
    ) -> None:  # fmt: skip
        self.plan, self.launch, self.read_runs = plan, launch, read_runs
        self.chains = chains.chain_list(plan, targets)
        self.tolerance, self.max_rounds = tolerance, max_rounds
        self.stopped = stopped
        self._slots = threading.BoundedSemaphore(max(1, slots))
        self._cond = threading.Condition()
        self._done: dict[tuple[str, float], list[dict[str, Any]]] = {}  # (variant, lam) -> runs
        self._in_flight: set[tuple[str, float]] = set()
        self._returns: list[list[JobReturn]] = []
        self._outcomes: dict[tuple[str, float], ChainOutcome] = {}
        self._error: BaseException | None = None
        self._stop = False

    def run(
        self, grid_runs: list[dict[str, Any]]
    ) -> tuple[list[list[JobReturn]], dict[tuple[str, float], ChainOutcome]]:
        """Every chain to its end; the launcher's returns per launch, and each chain's outcome.
        A chain's failure (the launcher raising, a job interrupted) stops the others from
        launching again and is raised here once they are back."""
        threads = [
            threading.Thread(target=self._chain_guarded, args=(v, t, grid_runs), daemon=True,
                             name=f"chain {v} L0 {t:g}")
            for v, t in self.chains
        ]  # fmt: skip
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():  # a timeout, so a stop signal reaches this thread
                    thread.join(timeout=0.5)
        finally:  # a stop signal here: no chain launches again (their threads are daemons)
            with self._cond:
                self._stop = True
                self._cond.notify_all()
        if self._error is not None:
            raise self._error
        return self._returns, self._outcomes

    def _chain_guarded(self, variant: str, target: float, grid_runs: list[dict]) -> None:
        try:
            self._chain(variant, target, grid_runs)
        except _StoppedError:
            return
        except BaseException as exc:  # noqa: BLE001 -- raised again by `run`
            with self._cond:
                self._error = self._error or exc
                self._stop = True
                self._cond.notify_all()

    def _chain(self, variant: str, target: float, grid_runs: list[dict]) -> None:
        own = [r for r in grid_runs if r["variant"] == variant]
        rounds = 0
        while True:
            state = chains.place_chain(self.plan, own, variant, target, self.tolerance)
            if state.status != tg.TargetStatus.PENDING or rounds >= self.max_rounds:
                break
            key = (variant, tg.rounded(state.lam))
            with self._cond:
                while key in self._in_flight and not self._stop:
                    self._cond.wait()  # another chain of the variant runs this lambda
                if self._stop:
                    return
                runs = self._done.get(key)
                if runs is None:
                    self._in_flight.add(key)
            rounds += 1
            if runs is None:
                runs = self._launch(key, state, rounds)
            own += runs
        state = chains.close_chain(self.plan, own, state, rounds)
        with self._cond:
            self._outcomes[variant, target] = ChainOutcome(state, rounds, own)

    def _launch(self, key: tuple[str, float], state: tg.TargetState, rounds: int) -> list[dict]:
        runs: list[dict[str, Any]] = []
        try:
            with self._slots:
                if self._stop or self.stopped():
                    raise _StoppedError
                batch = chains.next_jobs(self.plan, [state])
                log.info("target-L0 chain %s at L0 %g: round %d, %d jobs", state.variant,
                         state.target, rounds, len(batch))  # fmt: skip
                results = self.launch(batch)
            runs = self.read_runs(results)
            with self._cond:
                self._returns.append(results)
                self._done[key] = runs
        finally:
            with self._cond:
                self._in_flight.discard(key)
                self._cond.notify_all()
        return runs


class _StoppedError(Exception):
    """A chain about to launch found the pipeline stopped (another chain failed, or a stop
    signal): it ends without launching; `run` raises the first chain's failure."""
