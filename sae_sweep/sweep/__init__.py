"""Sweep-level machinery around the one-job entry point (docs/design.md, "Sweeps").

One owner of a sweep's lifecycle, and its parts grouped by what they do:
    lifecycle.py        `Sweep`: start, grid, target-L0 rounds, end (table, manifest, analysis),
                        every batch composed, settled on a resume, packed, thread-budgeted;
                        a job whose worker died fails alone, the others launched again
    chain_pipeline.py   target-L0 chains that launch their next lambda when their own seeds
                        finish (submitit's launchers), each placed from its own runs
    tuned_stages.py     a tuned target sweep: the reference L0 at every value first, then the
                        other targets at each variant's chosen value and the shared one
    signals.py          SIGTERM / SIGINT to the launcher: jobs told, workers stopped, records
    worker_deaths.py    which worker process died first, and of which signal
    fault_recovery.py   a batch after that: the faulty job fails, the others launched again
    planning/           what a sweep launches
        grid.py         the grid from the sweep file and the command line; batches
        packing.py      pack=K: grid points sharing their data trained as one job; pack files
        chains.py       target-L0 placement: one-round (L0 control) jobs, next round's jobs per
                        (variant, target), which job answers which
        targets.py      the fit: where to put lambda (or k) to land on a target L0
        tuning.py       `tune`: every variant at every tuned value in the grid, a folder per
                        value; its checks
    running/            one job, in the process that trains it
        task.py         one sweep job (or pack): policy, threads, GPU, train, contain failures
        policy.py       skip finished jobs, resume interrupted ones, re-run failed ones on request
        threads.py      each job's share of the cores (the thread budget)
        gpus.py         one GPU per job on a multi-GPU machine, claimed through a per-GPU lock
        compose.py      job configs composed from each distinct set of files once
    bookkeeping/        the sweep's records, read and written
        manifest.py     sweep.json: grid, git commit, versions, start/end of every launch
        table.py        jobs.md / jobs.json: the end-of-sweep table of done / failed / skipped
        lock.py         sweep.lock: one launch per sweep folder at a time
        status.py       `sae-sweep-status`: progress, failures and ETA of a running sweep
    sweep_files.py      `sweeps/*.yaml` as the `sweep` config group (`sae-sweep +sweep=NAME`)
    resolvers.py        ${lambda_of:...}, ${step_at:...}, ${k_of:...} of presets and sweep files
    calibrate.py        `python -m sae_sweep.sweep.calibrate`: lambda scales from a calibration
Job folders are named in `sweeps/_base.yaml` (`hydra.sweep.subdir`: variant/lambda/seed).
Hydra reaches the sweep through one adapter in hydra_plugins/sae_sweep_sweeper/ (Hydra loads
plugins only from there); the entry point (sae_sweep/main.py) reads its exit status back.
"""

from .lifecycle import Sweep, take_exit_code
from .resolvers import register_resolvers
from .running.task import run_sweep_job
from .sweep_files import available_sweeps, register_sweeps

__all__ = [
    "Sweep",
    "available_sweeps",
    "register_resolvers",
    "register_sweeps",
    "run_sweep_job",
    "take_exit_code",
]
