"""A sweep's lifecycle, owned by one object: start, grid, target-L0 rounds, end.

    sweep = Sweep(config, launcher, config_loader, params, max_batch_size, **end_options)
    sweep.run(arguments)

`run` checks the grid's jobs compose and takes the sweep folder's lock (one launch at a time,
bookkeeping/lock.py) before it writes anything, so a refused launch changes nothing; then it
starts the sweep (sweep.json, the launch id and GPU list every job inherits), launches the
grid in batches (with `tune`, every variant at every tuned value: planning/tuning.py), then,
when the sweep sets `l0_targets`, refinement rounds until no target is open (targets.json;
a tuned sweep's in two stages, the reference L0 first: tuned_stages.py):
under submitit's launchers each (variant, target) chain launches its next lambda as soon as
its own seeds finish (chain_pipeline.py; `launch` is then called from several threads, and
takes one batch at a time up to the launcher's call), with the others a round waits for
every chain; and ends it whatever happened in between: a job or the launcher
raising, Ctrl-C, SIGTERM (signals.py: the jobs are told first, so they record
`interrupted`). A variant placed by control (`l0_placement: control`) has no grid and no
rounds: its jobs, one per target and seed, go out with the grid's first batch, each steering
its own lambda (planning/chains.py `one_round_jobs`). The end writes jobs.md / jobs.json and
the launch's end in sweep.json, runs the analysis (not after a stop), and says whether every
job has a result (`take_exit_code`).

Every batch, grid or round, goes through `launch`: its jobs are composed before any is
launched (a bad override fails the sweep at once), jobs finished in an earlier launch into
the same folder are settled without launching (a resume), the rest are packed (`pack=K`),
and each job is told how many run at once (its thread budget). When a job's worker process
on this machine dies (SIGKILL, the out-of-memory killer) or is interrupted on its own, joblib
takes the batch's other jobs down with it: `launch` then fails the job whose worker died first
(worker_deaths.py), records the others as interrupted, and launches again those without a
result, which resume from their checkpoints.

Hydra reaches it through the sweeper plugin (hydra_plugins/sae_sweep_sweeper/), which only
builds it from its config and the launcher Hydra configured. Hydra returns nothing from a
multirun to the entry point, so the outcome of the sweep a process ran is kept here for
`sae_sweep.main` to turn into its exit status (`take_exit_code`).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from ..config.schema import job_config
from ..config.validation import ConfigError
from ..record import layout
from ..record.atomic import atomic_write_json
from ..record.targets_file import lambda_per_of
from ..tuning import TuneSpec
from . import fault_recovery, tuned_stages
from .bookkeeping import manifest, table
from .bookkeeping.lock import LaunchLock
from .chain_pipeline import ChainPipeline, why_rounds
from .planning import chains, grid, targets, tuning
from .planning.packing import member_config, pack_file, pack_jobs, write_pack
from .running.gpus import publish_machine_gpus
from .running.task import ENV_LAUNCH_ID, mark_interrupted, settle_without_training
from .running.threads import ENV_JOBS_AT_ONCE, jobs_at_once, machine_cores
from .signals import StopSignals, signal_processes
from .worker_deaths import CHILD_DEATHS, is_job_fault

log = logging.getLogger("sae_sweep")

_outcome: list[str] | None = None
"""What went wrong in the last sweep this process ran ([] = nothing; None = no sweep)."""


def take_exit_code() -> int:
    """1 when the last sweep this process ran left a job without a result, else 0; the
    outcome is then forgotten (a process that runs another command starts clean)."""
    global _outcome
    problems, _outcome = _outcome, None
    return 1 if problems else 0


class Sweep:
    """One launch of a sweep into its folder (see the module docstring)."""

    def __init__(
        self, config: DictConfig, launcher, config_loader, *, params: dict | None = None,
        max_batch_size: int | None = None, analysis: bool = True,
        analysis_options: dict[str, Any] | None = None, wait_for_lock: bool = False,
        pipeline_rounds: bool = True,
    ) -> None:  # fmt: skip
        self.config = config
        self.launcher = launcher
        self.loader = config_loader
        self.params = params or {}
        self.max_batch_size = max_batch_size
        self.analysis = analysis
        self.analysis_options = analysis_options or {}
        self.wait_for_lock = wait_for_lock
        self.pipeline_rounds = pipeline_rounds  # chains move on their own where the launcher can
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self.launch_id = f"{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
        self.n_jobs = 0  # the grid's jobs (the manifest's count)
        self.grid_overrides: dict[int, list[str]] = {}  # grid job number -> its overrides
        self.launched = 0  # jobs launched so far (Hydra's job numbers)
        self.resuming = False  # an earlier launch went into this folder
        self.problems: list[str] | None = None  # set by `end`
        self._precomposed: dict[tuple, dict[str, Any]] = {}  # composed before the start
        self.signals = StopSignals(self._tell_jobs)
        # chains moving on their own launch from threads: numbering and composing take turns
        self._launch_lock = threading.RLock()
        self._jobs_at_once: int | None = None  # fixed for the whole chain pipeline
        self.l0_lambda_per = "seed"  # how target rounds place seeds (`lambda_per`)
        self.tune_spec: TuneSpec | None = None  # the sweep's tuning (`run`)
        # joblib's loky workers are children of this process: their deaths can be told apart
        self.local_workers = type(launcher).__module__.startswith("hydra_plugins.hydra_joblib")

    # -- the lifecycle --------------------------------------------------------------------

    def run(self, arguments: list[str]) -> list[list[JobReturn]]:
        """Start, the grid, the target rounds, the end; the launcher's returns per batch.
        A sweep that cannot run (bad targets, a grid its rounds cannot refine, an override
        that does not compose, another launch into the folder) fails before it writes."""
        global _outcome
        axes = grid.grid_axes(grid.param_lines(self.params, arguments), self.loader)
        spec = self.tune_spec = tuning.plan(self.config, axes)
        if spec is not None:  # every variant at every tuned value, each in a folder of its own
            axes = tuning.expand(axes, spec)
            self._tuned_folders(spec)
        jobs = grid.grid_jobs(axes)
        plan = self.plan_rounds(jobs) if self.config.get("l0_targets") else None
        if plan is not None and plan.one_round:  # no grid for them: one job per target, seed
            jobs = [j for j in jobs if plan.variant_of(j) not in plan.one_round]
            jobs += chains.one_round_jobs(plan, sorted({float(t) for t in self.config.l0_targets}))
        for i in grid.covering_jobs(jobs):  # a bad override refuses the launch before it writes
            self._precomposed[tuple(jobs[i]), i] = self.compose(jobs[i], i)  # grid number i
        lock = LaunchLock(self.sweep_dir, self.launch_id)
        lock.acquire(wait=self.wait_for_lock)
        try:
            with self.signals:
                self.start(axes, len(jobs))
                try:
                    batches = grid.batches(jobs, self.max_batch_size)
                    returns = [self.launch(batch) for batch in batches]
                    if plan is not None:
                        returns += self.refine(plan, returns)
                    return returns
                finally:
                    _outcome = self.end()
        finally:
            lock.release()

    def _tuned_folders(self, spec: tuning.TuneSpec) -> None:
        """Name the tuned values in the job folders (`tuning.folder_pattern`): as a Hydra
        override of the sweep's own, so every job any launcher composes from this config,
        grid and target rounds, and a resume, lands in the same folder."""
        pattern = _raw_subdir(self.config)
        tuned = tuning.folder_pattern(pattern, spec)
        if tuned == pattern:
            return
        with read_write(self.config.hydra), open_dict(self.config.hydra):
            self.config.hydra.sweep.subdir = tuned
            self.config.hydra.overrides.hydra.append(f"hydra.sweep.subdir='{tuned}'")

    def start(self, axes: dict[str, list[str]], n_jobs: int) -> None:
        """Record the launch in sweep.json; publish the launch id and the machine's GPUs to
        every job (each launcher's job processes inherit this process's environment)."""
        hc = self.config.hydra
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / layout.HYDRA_MULTIRUN)  # as Hydra's sweepers
        os.environ[ENV_LAUNCH_ID] = self.launch_id
        m = manifest.start_launch(self.sweep_dir, self.config.get("sweep"), axes,
                                  list(hc.overrides.task), self.launch_id, n_jobs)  # fmt: skip
        self.n_jobs = m["n_jobs"]
        self.resuming = len(m["launches"]) > 1
        publish_machine_gpus(on_slurm="Slurm" in str(hc.launcher.get("_target_", "")))
        log.info("sweep %s: %d jobs -> %s", m["name"], m["n_jobs"], self.sweep_dir)

    def plan_rounds(self, jobs: list[list[str]]) -> chains.TargetPlan:
        """The plan of the target-L0 rounds (planning/chains.py), checked before the grid runs."""
        cfg = self.config
        targets.validate_targets(cfg.l0_targets, float(cfg.l0_tolerance), int(cfg.l0_max_rounds))
        self.l0_lambda_per = self.lambda_per()
        per_seed = self.l0_lambda_per == "seed"
        return chains.plan_targets(jobs, _raw_subdir(cfg), self._l0_knob, self._placement,
                                   per_seed)  # fmt: skip

    def lambda_per(self) -> str:
        """`l0_lambda_per`, except that a resumed sweep keeps the placement its targets.json
        was made with unless the command line sets it: a folder placed by variant (every
        sweep before the knob existed) would otherwise train new round jobs for every seed."""
        cfg = self.config
        configured = "variant" if cfg.get("l0_lambda_per", "seed") == "variant" else "seed"
        earlier = layout.read_json(self.sweep_dir / layout.TARGETS)
        asked = any(str(o).lstrip("+").split("=", 1)[0] == "l0_lambda_per"
                    for o in OmegaConf.select(cfg, "hydra.overrides.task", default=[]))  # fmt: skip
        if not isinstance(earlier, dict) or asked:
            return configured
        recorded = lambda_per_of(earlier)
        if recorded != configured:
            log.info("resuming with l0_lambda_per=%s, as this sweep's targets were placed; "
                     "l0_lambda_per=%s on the command line places them anew",
                     recorded, configured)  # fmt: skip
        return recorded

    def refine(
        self, plan: chains.TargetPlan, returns: list[list[JobReturn]]
    ) -> list[list[JobReturn]]:
        """Target-L0 rounds after the grid, until no (variant, target) is open or each spent
        `l0_max_rounds`; then targets.json (each target with its rounds) and a summary line
        per target. Where the launcher allows (`chain_pipeline.why_rounds`), each chain
        launches its next lambda as soon as its own seeds finish (`refine_per_chain`); else
        each round launches every seed at the lambda (or k) proposed for each open chain."""
        cfg = self.config
        tolerance, max_rounds = float(cfg.l0_tolerance), int(cfg.l0_max_rounds)
        l0_targets = targets.validate_targets(cfg.l0_targets, tolerance, max_rounds)
        runs = chains.match_runs(_pairs(returns), plan, self.grid_overrides)
        reason = why_rounds(str(cfg.hydra.launcher.get("_target_", "")), _raw_subdir(cfg))
        if not self.pipeline_rounds:
            reason = "hydra.sweeper.pipeline_rounds=false"
        every = [(v, t) for v in plan.variants for t in l0_targets]
        tuned: dict[str, Any] = {}
        if tuned_stages.staged(self.tune_spec, l0_targets):
            more, states, rounds_of, tuned = self.refine_tuned(plan, runs, every, reason)
        else:
            more, states, rounds_of, _ = self.refine_chains(plan, runs, every, reason)
        rounds = max(rounds_of.values(), default=0)
        atomic_write_json(self.sweep_dir / layout.TARGETS, {
            "l0_targets": l0_targets, "l0_tolerance": tolerance, "max_rounds": max_rounds,
            "rounds": rounds, "per_chain": reason is None, "l0_lambda_per": self.l0_lambda_per,
            "targets": [{**s.as_dict(), "rounds": rounds_of[s.variant, s.target]}
                        for s in states],
            **({"tuned": tuned} if tuned else {}),
        })  # fmt: skip
        how = "per chain, at most" if reason is None else "after"
        print(f"\ntarget L0s {how} {rounds} refinement rounds ({layout.TARGETS}):", flush=True)
        print("\n".join(targets.summary_lines(states)), flush=True)
        return more

    def refine_chains(
        self,
        plan: chains.TargetPlan,
        runs: list[dict[str, Any]],
        which: list[tuple[str, float]],
        reason: str | None,
    ) -> tuple[list[list[JobReturn]], list[targets.TargetState], dict[tuple, int], list[dict]]:
        """The rounds of the chains `which`: each on its own where `reason` is None, else in
        rounds across them. Returns the launcher's returns, each chain's state and rounds, and
        every run record seen (the given ones, then the new ones)."""
        if reason is None:
            return self.refine_per_chain(plan, runs, which)
        return self.refine_by_rounds(plan, runs, which)

    def refine_tuned(
        self,
        plan: chains.TargetPlan,
        runs: list[dict[str, Any]],
        every: list[tuple[str, float]],
        reason: str | None,
    ) -> tuple[list[list[JobReturn]], list[targets.TargetState], dict[tuple, int], dict]:
        """A tuned sweep's rounds in two stages (tuned_stages.py): the reference target at every
        value, then the other targets at each variant's chosen value and the shared one. The
        last item says what was chosen, for targets.json."""
        spec = self.tune_spec
        first = tuned_stages.reference_stage(
            every, spec, plan, tuned_stages.choose(self.sweep_dir, spec, runs)
        )
        more, states, rounds_of, seen = self.refine_chains(plan, runs, first, reason)
        choice = tuned_stages.choose(self.sweep_dir, spec, seen)
        second = tuned_stages.band_stage(every, first, choice)
        left_out = len(every) - len(first) - len(second)
        chosen = ", ".join(f"{label} {text}" for label, text in choice.texts.items())
        log.info("tuning at L0 %g chose: %s; %d chains go on to the other targets, %d left out "
                 "(a value neither chosen nor shared)", spec.at_l0, chosen or "nothing",
                 len(second), left_out)  # fmt: skip
        if choice.edges:
            edges = "; ".join(f"{v} ({', '.join(e)})" for v, e in choice.edges.items())
            log.warning("tuning: at the edge of the range tried: %s; the best value may lie "
                        "beyond: add values past the end to `tune` and run the sweep again",
                        edges)  # fmt: skip
        more2, states2, rounds2, _ = self.refine_chains(plan, seen, second, reason)
        by_chain = {(s.variant, s.target): s for s in states + states2}
        order = [c for c in every if c in by_chain]
        tuned = {"at_l0": spec.at_l0, "other_targets": spec.other_targets,
                 "chosen": choice.texts, "at_edge": choice.edges,
                 "chains_left_out": left_out}  # fmt: skip
        return more + more2, [by_chain[c] for c in order], {**rounds_of, **rounds2}, tuned

    def refine_by_rounds(
        self, plan: chains.TargetPlan, runs: list[dict[str, Any]], which: list[tuple[str, float]]
    ) -> tuple[list[list[JobReturn]], list[targets.TargetState], dict[tuple, int], list[dict]]:
        """Rounds across chains: each launches every open chain's proposal and waits for all.
        Returns the launcher's returns per round, every chain's state and its rounds, and the
        run records (those given, then the rounds')."""
        tolerance, max_rounds = float(self.config.l0_tolerance), int(self.config.l0_max_rounds)
        rounds, more, runs = 0, [], list(runs)
        rounds_of = {c: 0 for c in which}
        while True:
            states = chains.place_targets(plan, runs, which, tolerance)
            batch = chains.next_jobs(plan, states)
            if not batch or rounds >= max_rounds:
                break
            rounds += 1
            for s in states:
                if s.status == targets.TargetStatus.PENDING:
                    rounds_of[s.variant, s.target] += 1
            log.info("target-L0 round %d: %d jobs", rounds, len(batch))
            results = self.launch(batch)
            more.append(results)
            runs += chains.match_runs(_pairs([results]), plan, self.grid_overrides)
        states = [chains.close_chain(plan, runs, s, rounds_of[s.variant, s.target]) for s in states]
        return more, states, rounds_of, runs

    def refine_per_chain(
        self, plan: chains.TargetPlan, runs: list[dict[str, Any]], which: list[tuple[str, float]]
    ) -> tuple[list[list[JobReturn]], list[targets.TargetState], dict[tuple, int], list[dict]]:
        """Each chain on its own (chain_pipeline.py), as many in flight as the launcher runs
        at once; the jobs' thread budget is set once for them all (the environment is this
        process's, shared by every chain's launch)."""
        launcher_cfg = OmegaConf.to_container(self.config.hydra.launcher, resolve=True)
        per_chain = max((plan.n_seeds_of(v) for v in plan.variants), default=1)  # a proposal's jobs
        slots = max(1, len(which))  # submitit_local starts every job it gets
        if launcher_cfg.get("array_parallelism"):  # SLURM's cap on an array's running jobs
            slots = min(slots, max(1, int(launcher_cfg["array_parallelism"]) // per_chain))
        self._jobs_at_once = jobs_at_once(launcher_cfg, slots * per_chain, machine_cores())
        os.environ[ENV_JOBS_AT_ONCE] = str(self._jobs_at_once)
        log.info("target-L0 chains move on their own, at most %d in flight", slots)
        pipeline = ChainPipeline(
            plan, self.launch,
            lambda results: chains.match_runs(_pairs([results]), plan, self.grid_overrides),
            which, float(self.config.l0_tolerance), int(self.config.l0_max_rounds),
            slots, lambda: self.signals.signum is not None,
        )  # fmt: skip
        try:
            more, outcomes = pipeline.run(runs)
        finally:
            self._jobs_at_once = None
        seen = tuned_stages.merge_runs(runs, *(outcomes[c].runs for c in which))
        return (more, [outcomes[c].state for c in which], {c: outcomes[c].rounds for c in which},
                seen)  # fmt: skip

    def end(self) -> list[str]:
        """Table, manifest, analysis; returns the launch's problems (see `table.problems`).
        The last line printed says whether every job has a result: a script or a scheduler
        reading the exit status (non-zero on any problem) finds the reason beside it. A stop
        signal waits until the table and sweep.json are written."""
        with self.signals.held():
            if self.signals.signum is not None:
                self._record_stopped_jobs()
            rows = table.collect(self.sweep_dir, self.launch_id)
            text = table.write_table(self.sweep_dir, rows, expected=self.n_jobs)
            manifest.end_launch(self.sweep_dir, self.launch_id, table.counts(rows))
            print(f"\nsweep {self.sweep_dir}\n{text}", flush=True)
            self.problems = table.problems(rows, expected=self.n_jobs)
            if self.signals.signum is not None:
                self.problems.append(f"stopped by {self.signals.name}")
                print(f"sweep stopped by {self.signals.name}: the analysis is left out; re-run "
                      f"the same command with hydra.sweep.dir={self.sweep_dir} to resume",
                      flush=True)  # fmt: skip
                return self.problems
        if self.analysis:
            run_analysis_safely(self.sweep_dir, **self.analysis_options)
        if self.problems:
            print(
                f"sweep incomplete ({', '.join(self.problems)} of {max(self.n_jobs, len(rows))} "
                f"jobs; exit status 1): see jobs.md and each job's summary.json. Re-run the "
                f"same command with hydra.sweep.dir={self.sweep_dir} to resume (add "
                f"rerun_failed=true to retry failures)",
                flush=True,
            )
        else:
            print(f"sweep complete: all {len(rows)} jobs have a result", flush=True)
        return self.problems

    # -- one batch ------------------------------------------------------------------------

    def launch(self, batch: list[list[str]]) -> list[JobReturn]:
        """Launch a batch of grid jobs (grid or round) and return every job's outcome: the
        launched jobs' (a pack's members' as a list), then those settled without launching.

        Every job is composed here, before any is launched, so a bad override fails the sweep
        at once; unpacked, only the jobs that cover every override value (`covering_jobs`),
        since each launched job composes its own config again. On a resume every job is
        composed, and those that need no training are settled here, not launched. Grid job
        numbers continue across batches, so rounds pack the same way as the grid."""
        with self._launch_lock:  # numbers, compose, pack files: one batch at a time
            base = self.n_grid  # the batch's first grid number
            configs = {0: self.compose(batch[0], base)} if batch else {}
            k = max(int(configs[0]["task"].get("pack") or 1), 1) if batch else 1
            settled: dict[int, dict[str, Any]] = {}  # batch index -> outcome of a job not launched
            if k > 1 or self.resuming:  # packing and settling need every resolved config
                configs.update((i, self.compose(batch[i], base + i)) for i in range(1, len(batch)))
                if self.resuming:
                    settled = self._settle(configs)
                todo = [i for i in range(len(batch)) if i not in settled]
                packs = [[todo[j] for j in pack]
                         for pack in pack_jobs([configs[i]["task"] for i in todo], k)]  # fmt: skip
            else:
                for i in grid.covering_jobs(batch)[1:]:
                    self.compose(batch[i], base + i)
                packs = [[i] for i in range(len(batch))]
            self.grid_overrides.update((base + i, list(o)) for i, o in enumerate(batch))
            # Through a pack file (a pack of one too) a launched job's record carries its grid
            # number, which differs from its launch number once jobs are packed or settled.
            # After a relaunch (a worker that died) launch numbers run ahead of grid numbers.
            through_files = k > 1 or bool(settled) or self.launched != base
            to_launch, first_launched = self._number(batch, packs, configs, through_files)
            if self._jobs_at_once is None:  # else the chain pipeline set it for all
                launcher_cfg = OmegaConf.to_container(self.config.hydra.launcher, resolve=True)
                at_once = jobs_at_once(launcher_cfg, len(to_launch), machine_cores())
                os.environ[ENV_JOBS_AT_ONCE] = str(at_once)  # inherited by every job
        mark = CHILD_DEATHS.watch() if self.local_workers else None
        try:
            results = list(self.launcher.launch(to_launch, initial_job_idx=first_launched)
                           if to_launch else [])  # fmt: skip
        except BaseException as exc:
            if mark is None or self.signals.signum is not None or not is_job_fault(exc):
                raise
            results = self._after_fault(exc, batch, packs, configs, base, mark)
        for r in results:
            _ = r.return_value  # re-raises what stopped a job (an interruption): the sweep stops
        return results + [
            JobReturn(overrides=batch[i], status=JobStatus.COMPLETED, _return_value=outcome)
            for i, outcome in settled.items()
        ]

    def _number(self, batch: list[list[str]], packs: list[list[int]],
                configs: dict[int, dict[str, Any]], through_files: bool
                ) -> tuple[list[list[str]], int]:  # fmt: skip
        """Give `packs` (batch indices) the next launch numbers: the overrides to launch, one
        per pack, and the first number. `through_files`: each pack's members are written to
        its pack file, which the launched job reads (its grid numbers and member configs)."""
        with self._launch_lock:
            to_launch = []
            for n, members in enumerate(packs, start=self.launched):
                to_launch.append(batch[members[0]])
                if through_files:
                    write_pack(pack_file(self.sweep_dir, self.launch_id, n),
                               [configs[i]["member"] for i in members])  # fmt: skip
            first, self.launched = self.launched, self.launched + len(packs)
        return to_launch, first

    # -- a job's fault that took the batch down --------------------------------------------

    def _after_fault(self, fault: BaseException, batch: list[list[str]], packs: list[list[int]],
                     configs: dict[int, dict[str, Any]], base: int, mark: int
                     ) -> list[JobReturn]:  # fmt: skip
        """The batch's outcomes after a job's worker died or a job was interrupted on its own
        (fault_recovery.py): the faulty pack fails, those it took down are launched again."""
        for i in range(len(batch)):  # the relaunch goes through pack files: every member
            if i not in configs:
                configs[i] = self.compose(batch[i], base + i)

        def relaunch(now: list[list[int]]) -> list[JobReturn]:
            to_launch, first = self._number(batch, now, configs, through_files=True)
            return self.launcher.launch(to_launch, initial_job_idx=first)

        return fault_recovery.recover(
            fault, mark, packs, batch,
            member_dirs=lambda members: [Path(configs[i]["member"]["dir"]) for i in members],
            launch_id=self.launch_id, relaunch=relaunch,
            stopping=lambda: self.signals.signum is not None,
        )  # fmt: skip

    def _record_stopped_jobs(self) -> None:
        """After a stop signal: this launch's jobs that ran in this process or its workers
        (all stopped now) and wrote no end of their own are `interrupted`; the next launch
        resumes them. (A SLURM job goes on without its launcher: it is left alone.)"""
        for row in table.collect(self.sweep_dir, self.launch_id):
            if row.get("outcome") == "running" and (self.local_workers
                                                    or row.get("pid") == os.getpid()):  # fmt: skip
                mark_interrupted(self.sweep_dir / str(row.get("dir")),
                                 f"stopped by {self.signals.name} to the launcher")  # fmt: skip

    def _tell_jobs(self, signum: int) -> None:
        """Pass SIGTERM on to this launch's running jobs in other processes of this machine,
        and give them a moment to record `interrupted`. (SIGINT is not passed on: Ctrl-C
        reaches every process of the terminal's group at once, and a second one would cut a
        job's record short.)"""
        if not self.local_workers:
            return
        running = {r.get("pid"): r.get("dir") for r in table.collect(self.sweep_dir, self.launch_id)
                   if r.get("outcome") == "running" and isinstance(r.get("pid"), int)
                   and r.get("pid") != os.getpid()}  # fmt: skip

        def ended(pid: int) -> bool:
            summary = layout.read_summary(self.sweep_dir / str(running[pid])) or {}
            return summary.get("status") is not None

        signal_processes(list(running), signum if signum == signal.SIGTERM else None,
                         wait_s=STOP_WAIT_S, done=ended)  # fmt: skip

    @functools.cache  # noqa: B019 -- one Sweep per launch; a template composes in 0.3 s
    def _template_task(self, template: tuple[str, ...]) -> dict[str, Any]:
        return self.compose(list(template))["task"]

    def _l0_knob(self, template: tuple[str, ...]) -> str | None:
        """The knob that sets a variant's L0 directly (TopK's `sae.k`), from its config."""
        return targets.direct_l0_knob(self._template_task(template).get("sae") or {})

    def _placement(self, template: tuple[str, ...]) -> str:
        """A variant's `l0_placement` (its preset's, unless the sweep or command line sets it)."""
        placement = self._template_task(template).get("l0_placement") or chains.ROUNDS
        return str(getattr(placement, "value", placement))  # the schema's enum, composed

    @property
    def n_grid(self) -> int:
        """Grid jobs handed out so far: the next one's grid number."""
        return len(self.grid_overrides)

    def compose(self, overrides: list[str], job_num: int = 0) -> dict[str, Any]:
        """A job's config: {"task": resolved, launch options included; "member": what a pack
        file holds for it}."""
        if (tuple(overrides), job_num) in self._precomposed:
            return self._precomposed.pop((tuple(overrides), job_num))
        cfg = self.loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.num = job_num
        subdir = str(cfg.hydra.sweep.subdir)
        check_folder_name(self.sweep_dir, subdir, overrides)
        task = OmegaConf.to_container(cfg, resolve=False)
        task.pop("hydra")
        task = OmegaConf.to_container(OmegaConf.create(task), resolve=True)
        member = {"job": job_num, "subdir": subdir,
                  "dir": str((self.sweep_dir / subdir).absolute()), "config": task}  # fmt: skip
        return {"task": task, "member": member}

    def _settle(self, configs: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
        """Batch index -> outcome, for the jobs that need no training (`settle_without_training`);
        their folders say so, so they are not launched."""
        settled = {}
        for i, config in configs.items():
            member, task = config["member"], config["task"]
            outcome = settle_without_training(
                job_config(member_config(task)), Path(member["dir"]), member["job"],
                member["subdir"], bool(task.get("rerun_failed")),
            )  # fmt: skip
            if outcome is not None:
                settled[i] = outcome
        return settled


def check_folder_name(sweep_dir: Path, subdir: str, overrides: list[str]) -> None:
    """A job folder whose name has a part longer than the file system allows (255 bytes on
    most) would fail the job with a bare OSError when it starts: refuse it when the config
    is composed, naming the overrides whose values make the part long."""
    limit = _name_max(sweep_dir)
    for part in Path(subdir).parts:
        if len(part.encode()) <= limit:
            continue
        named = [o for o in overrides if "=" in o and o.split("=", 1)[1] and
                 o.split("=", 1)[1] in part] or overrides  # fmt: skip
        shown = ", ".join(o if len(o) <= 60 else f"{o[:57]}..." for o in named)
        raise ConfigError(
            f"the job folder name {part[:40]!r}... is {len(part.encode())} bytes long; the file "
            f"system allows {limit}. It holds the value of {shown}. Fix: a shorter value, or "
            "a hydra.sweep.subdir that leaves that key out (e.g. "
            "hydra.sweep.subdir=job${hydra.job.num})"
        )


def _name_max(folder: Path) -> int:
    """The longest file name the file system of `folder` (or its nearest existing parent)
    allows."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            try:
                return int(os.pathconf(candidate, "PC_NAME_MAX"))
            except (OSError, ValueError):
                break
    return 255


def run_analysis_safely(sweep_dir: Path, **options: Any) -> None:
    """The analysis report of the sweep; a failure here is logged, never raised."""
    try:
        from analysis import run_analysis

        paths = run_analysis([sweep_dir], **options)
        if paths.verdicts:  # the report's first lines: the verdicts per matched L0
            lines = "\n".join(paths.verdicts)
            print(f"\nverdicts (the report's first lines):\n{lines}", flush=True)
        log.info("analysis report: %s (also %s)", paths.report_md, paths.report_html.name)
        for plot in paths.plots:
            if plot.suffix == ".png":
                log.info("plot: %s", plot)
        if paths.benchmark:  # ground-truth metrics: the table in the benchmark's form, last
            lines = "\n".join(paths.benchmark)
            print(f"\nground-truth table (SynthSAEBench form; report.md has it too):\n{lines}",
                  flush=True)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 -- the sweep's records are complete without it
        log.error(
            "the analysis failed (%s: %s); the records are complete, run it again with "
            "`sae-analysis %s`",
            type(exc).__name__,
            exc,
            sweep_dir,
        )


STOP_WAIT_S = 20.0
"""How long a stopped launch waits for its jobs to record `interrupted` before joblib kills
their workers (SLURM sends SIGKILL 30 s after its SIGTERM)."""


def _pairs(returns: list[list[JobReturn]]) -> list[tuple[list[str], Any]]:
    """(launched overrides, return value) of every job of the batches."""
    return [(list(r.overrides or []), r.return_value) for batch in returns for r in batch]


def _raw_subdir(cfg: DictConfig) -> str | None:
    """The sweep's job-folder pattern, interpolations unresolved."""
    return OmegaConf.to_container(cfg.hydra.sweep, resolve=False).get("subdir")
