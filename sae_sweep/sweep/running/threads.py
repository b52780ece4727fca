"""The thread budget: each job's torch gets its share of the cores, never more.

Two jobs that each use every core of a 2-core machine run far slower than two jobs of one
thread each (measured: 30x, from thread contention). So the launching process works out how
many jobs its launcher runs at once on one machine, and each job divides the cores by that:

    launcher        jobs at once on a machine              cores of a job
    basic           1                                      the machine's
    joblib          n_jobs (-1 = cores, -2 = cores - 1, ...), at most the jobs launched
    submitit_local  the jobs launched (it starts them all)
    submitit_slurm  1 (SLURM places jobs)                  SLURM_CPUS_PER_TASK

`threads=N` overrides the share (at most the cores); the count a job ran with is in its
summary (`threads`).
"""

from __future__ import annotations

import os

import torch

ENV_JOBS_AT_ONCE = "SAE_SWEEP_JOBS_AT_ONCE"  # set by the launching process, read by each job


def machine_cores() -> int:
    """Cores this process may run on (its CPU affinity: honours taskset and cgroup cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def jobs_at_once(launcher: dict, n_launched: int, cores: int) -> int:
    """How many of `n_launched` jobs the launcher (its Hydra config) runs at once on a machine."""
    target = str(launcher.get("_target_", ""))
    if "Joblib" in target:
        n_jobs = int(launcher.get("n_jobs") or 1)
        parallel = n_jobs if n_jobs > 0 else max(cores + 1 + n_jobs, 1)  # joblib's convention
        return max(min(parallel, n_launched), 1)
    if "submitit" in target and "LocalLauncher" in target:
        return max(n_launched, 1)
    return 1  # the basic launcher runs jobs one after another; SLURM gives each its own cores


def thread_count(requested: int, env: dict[str, str] | None = None) -> int:
    """Threads for this job: `requested` (threads=N) if set, else its share of the cores."""
    env = os.environ if env is None else env
    cores = machine_cores()
    slurm = env.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit():
        cores = min(int(slurm), cores)  # the allocation, not the node
    if requested > 0:
        return min(requested, cores)
    at_once = env.get(ENV_JOBS_AT_ONCE, "1")
    at_once = int(at_once) if at_once.isdigit() and int(at_once) > 0 else 1
    return max(cores // at_once, 1)


def apply_thread_budget(requested: int) -> int:
    """Set torch's (and OpenMP's, for libraries started later) thread count; returns it."""
    n = thread_count(requested)
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    return n
