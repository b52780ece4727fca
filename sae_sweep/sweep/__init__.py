"""Sweep-level machinery around the one-job entry point (docs/design.md, "Sweeps").

One concept per file:
    sweep_files.py  `sweeps/*.yaml` as the `sweep` config group (`sae-sweep +sweep=NAME`)
    resolvers.py    ${mul:...} and ${step_at:...} used by variant presets and sweep files
    policy.py       skip finished jobs, resume interrupted ones, re-run failed ones on request
    threads.py      each job's share of the cores (the thread budget)
    packing.py      pack=K: grid points sharing their data trained as one job
    gpus.py         one GPU per job on a multi-GPU machine, claimed through a per-GPU lock
    task.py         one sweep job (or pack): policy, threads, GPU, train, contain failures, job.json
    manifest.py     sweep.json: grid, git commit, versions, start/end of every launch
    table.py        the end-of-sweep table of done / failed / skipped jobs
    callback.py     the Hydra callback tying start and end together (+ the fallback)
Job folders are named in `sweeps/_base.yaml` (`hydra.sweep.subdir`: variant/lambda/seed).
The sweeper classes are in hydra_plugins/ (Hydra loads plugins only from there):
sae_sweep_packing/ (grid, packing, thread budget) and sae_sweep_targets/ (target-L0 rounds).
"""

from .callback import SweepCallback, finish_pending_sweep, sweep_exit_code
from .resolvers import register_resolvers
from .sweep_files import available_sweeps, register_sweeps
from .task import run_sweep_job

__all__ = [
    "SweepCallback",
    "available_sweeps",
    "finish_pending_sweep",
    "register_resolvers",
    "register_sweeps",
    "run_sweep_job",
    "sweep_exit_code",
]
