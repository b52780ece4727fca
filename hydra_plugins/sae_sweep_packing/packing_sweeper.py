"""The sweeper of every multirun: Hydra's basic grid, plus packing and the thread budget.

Per batch of grid jobs: compose the jobs' configs before launching any (a bad override fails
at once), tell the jobs how many of them run at once (sae_sweep/sweep/threads.py), and with
`pack=K` launch one job per pack (sae_sweep/sweep/packing.py). Here and in the launched jobs,
configs are composed by `CachingConfigLoader` (sae_sweep/sweep/compose.py). The sweeper of
conf/config.yaml (`hydra/sweeper: sae_sweep`) is its subclass with target-L0 rounds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import HydraContext, JobReturn, JobStatus
from hydra.types import TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from sae_sweep.config.schema import job_config
from sae_sweep.sweep.compose import caching_context
from sae_sweep.sweep.manifest import read_manifest
from sae_sweep.sweep.packing import member_config, pack_file, pack_jobs, write_pack
from sae_sweep.sweep.task import ENV_LAUNCH_ID, settle_without_training
from sae_sweep.sweep.threads import ENV_JOBS_AT_ONCE, jobs_at_once, machine_cores


class PackingSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None):
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.grid_jobs = 0  # grid jobs handed out so far (the members' job numbers)
        self.grid_overrides: dict[int, list[str]] = {}  # grid job number -> its overrides
        self.launched = 0  # jobs launched so far (Hydra's job numbers)
        self.settled_returns: list[JobReturn] = []  # the last batch's jobs not launched
        self._resume: bool | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:  # fmt: skip
        # The launcher and every job it runs compose with the caching loader too.
        super().setup(hydra_context=caching_context(hydra_context), task_function=task_function,
                      config=config)  # fmt: skip
        self.launcher = _WithSettledJobs(self.launcher, self)

    def get_job_batch(self) -> list[list[str]]:
        return self.pack_batch([list(o) for o in super().get_job_batch()])

    def pack_batch(self, batch: list[list[str]]) -> list[list[str]]:
        """The jobs to launch for a batch of grid jobs: one per pack (each member's config
        written to the pack's file), every job told how many run at once. Grid job numbers
        continue across batches, so later batches (e.g. target-L0 rounds) pack the same way.

        Every job is composed here, before any is launched, so a bad override fails the sweep
        at once; unpacked, only the jobs that cover every override value (`covering_jobs`),
        since each launched job composes its own config again. On a resume every job is
        composed, and those that need no training are settled here, not launched."""
        first = self._compose(batch[0], self.grid_jobs) if batch else None
        k = max(int(first["pack"] or 1), 1) if first else 1
        settled: dict[int, dict[str, Any]] = {}  # batch index -> outcome of a job not launched
        if k > 1 or self._resuming():  # packing and settling need every resolved config
            configs = [first] + [
                self._compose(overrides, self.grid_jobs + i)
                for i, overrides in enumerate(batch) if i > 0
            ]  # fmt: skip
            if self._resuming():
                settled = self._settle(configs)
            todo = [i for i in range(len(batch)) if i not in settled]
            packs = [[todo[j] for j in pack]
                     for pack in pack_jobs([configs[i]["task"] for i in todo], k)]  # fmt: skip
        else:
            for i in covering_jobs(batch)[1:]:
                self._compose(batch[i], self.grid_jobs + i)
            packs = [[i] for i in range(len(batch))]
        # Through a pack file (a pack of one too) a launched job's record carries its grid
        # number, which differs from its launch number once jobs are packed or settled.
        through_files = k > 1 or bool(settled)
        launched = []
        for n, members in enumerate(packs, start=self.launched):
            launched.append(batch[members[0]])
            if through_files:
                path = pack_file(self._sweep_dir(), os.environ.get(ENV_LAUNCH_ID, "launch"), n)
                write_pack(path, [configs[i]["member"] for i in members])
        self.settled_returns = [
            JobReturn(overrides=batch[i], status=JobStatus.COMPLETED, _return_value=outcome)
            for i, outcome in settled.items()
        ]
        launcher = OmegaConf.to_container(self.config.hydra.launcher, resolve=True)
        at_once = jobs_at_once(launcher, len(launched), machine_cores())
        os.environ[ENV_JOBS_AT_ONCE] = str(at_once)  # inherited by every launcher's jobs
        for i, overrides in enumerate(batch):
            self.grid_overrides[self.grid_jobs + i] = overrides
        self.grid_jobs += len(batch)
        self.launched += len(launched)
        return launched

    def _resuming(self) -> bool:
        """Whether an earlier launch went into this sweep folder (its jobs may be finished)."""
        if self._resume is None:
            self._resume = len(read_manifest(self._sweep_dir()).get("launches", [])) > 1
        return self._resume

    def _settle(self, configs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
        """Batch index -> outcome, for the jobs that need no training (`settle_without_training`);
        their folders say so, so they are not launched."""
        settled = {}
        for i, config in enumerate(configs):
            member, task = config["member"], config["task"]
            outcome = settle_without_training(
                job_config(member_config(task)), Path(member["dir"]), member["job"],
                member["subdir"], bool(task.get("rerun_failed")),
            )  # fmt: skip
            if outcome is not None:
                settled[i] = outcome
        return settled

    def validate_batch_is_legal(self, batch) -> None:
        """Already done by get_job_batch (composing each job twice cost the launching process
        about as much again)."""

    def _compose(self, overrides: list[str], job_num: int) -> dict[str, Any]:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg):
            cfg.hydra.job.num = job_num
        subdir = str(cfg.hydra.sweep.subdir)
        task = OmegaConf.to_container(cfg, resolve=False)
        task.pop("hydra")
        task = OmegaConf.to_container(OmegaConf.create(task), resolve=True)
        member = {"job": job_num, "subdir": subdir,
                  "dir": str((self._sweep_dir() / subdir).absolute()), "config": task}  # fmt: skip
        return {"task": task, "member": member, "pack": task.get("pack")}

    def _sweep_dir(self) -> Path:
        return Path(str(self.config.hydra.sweep.dir))


def covering_jobs(batch: list[list[str]]) -> list[int]:
    """Indices of jobs (the first always) that together hold every kind of override value of
    the batch: each non-numeric override, and per key one integer and one real number.

    Composing these catches what composing all would: an unknown key, a group option that does
    not exist, a value of the wrong type, a key the chosen group lacks (every job holds every
    swept key, so each group option is composed with all of them). Numbers of one kind for one
    key compose alike, so they count once: a target-L0 round's jobs each carry a lambda of
    their own, and composing all of them kept both workers idle about 2 s a round. Composing a
    job took 0.3 s; a quick sweep's 84 jobs kept both workers idle for 24 s, a 1000-job grid
    for 5 min.
    """
    seen: set[str] = set()
    chosen = []
    for i, overrides in enumerate(batch):
        kinds = {_value_kind(o) for o in overrides}
        if i == 0 or not seen.issuperset(kinds):
            chosen.append(i)
            seen.update(kinds)
    return chosen


def _value_kind(override: str) -> str:
    """`key=<int>` or `key=<real>` for a numeric value, else the override itself."""
    key, sep, value = override.partition("=")
    for kind, parse in (("int", int), ("real", float)):
        try:
            parse(value)
        except ValueError:
            continue
        return f"{key}=<{kind}>" if sep else override
    return override


class _WithSettledJobs:
    """The configured launcher, returning with each batch's launched jobs the outcomes of the
    jobs the sweeper settled without launching them (finished in an earlier launch), so the
    sweep (and its target-L0 rounds) sees every job of the batch."""

    def __init__(self, launcher, sweeper: PackingSweeper):
        self.launcher, self.sweeper = launcher, sweeper

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        settled, self.sweeper.settled_returns = self.sweeper.settled_returns, []
        if not job_overrides:
            return settled
        return [*self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx), *settled]

    def __getattr__(self, name: str) -> Any:  # anything else is the launcher's
        return getattr(self.launcher, name)
