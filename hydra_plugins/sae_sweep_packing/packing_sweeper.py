"""The sweeper of every multirun: Hydra's basic grid, plus packing and the thread budget.

Per batch of grid jobs: compose each job's config (as the launcher will), tell the jobs how
many of them run at once (sae_sweep/sweep/threads.py), and with `pack=K` launch one job per pack
(sae_sweep/sweep/packing.py). Selected in conf/config.yaml (`hydra/sweeper: packing`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from omegaconf import OmegaConf, open_dict

from sae_sweep.sweep.packing import pack_file, pack_jobs, write_pack
from sae_sweep.sweep.task import ENV_LAUNCH_ID
from sae_sweep.sweep.threads import ENV_JOBS_AT_ONCE, jobs_at_once, machine_cores


class PackingSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None):
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.grid_jobs = 0  # grid jobs handed out so far (the members' job numbers)
        self.grid_overrides: dict[int, list[str]] = {}  # grid job number -> its overrides
        self.launched = 0  # jobs launched so far (Hydra's job numbers)

    def get_job_batch(self) -> list[list[str]]:
        return self.pack_batch([list(o) for o in super().get_job_batch()])

    def pack_batch(self, batch: list[list[str]]) -> list[list[str]]:
        """The jobs to launch for a batch of grid jobs: one per pack (each member's config
        written to the pack's file), every job told how many run at once. Grid job numbers
        continue across batches, so later batches (e.g. target-L0 rounds) pack the same way."""
        configs = [
            self._compose(overrides, self.grid_jobs + i) for i, overrides in enumerate(batch)
        ]
        k = max(int(configs[0].get("pack") or 1), 1) if configs else 1
        packs = pack_jobs([c["task"] for c in configs], k)
        launched = []
        for n, members in enumerate(packs, start=self.launched):
            launched.append(batch[members[0]])
            if k > 1:  # a pack of one too: its record then carries its grid number, as members'
                path = pack_file(self._sweep_dir(), os.environ.get(ENV_LAUNCH_ID, "launch"), n)
                write_pack(path, [configs[i]["member"] for i in members])
        launcher = OmegaConf.to_container(self.config.hydra.launcher, resolve=True)
        at_once = jobs_at_once(launcher, len(launched), machine_cores())
        os.environ[ENV_JOBS_AT_ONCE] = str(at_once)  # inherited by every launcher's jobs
        for i, overrides in enumerate(batch):
            self.grid_overrides[self.grid_jobs + i] = overrides
        self.grid_jobs += len(batch)
        self.launched += len(launched)
        return launched

    def validate_batch_is_legal(self, batch) -> None:
        """Already done: get_job_batch composed every job of the batch (composing each twice
        cost the launching process about as much again)."""

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
