"""The thread budget: each job's share of the cores, from the launcher's parallelism."""

from sae_sweep.sweep.running.threads import (
    ENV_JOBS_AT_ONCE,
    jobs_at_once,
    machine_cores,
    thread_count,
)

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def test_jobs_at_once_follows_each_launcher():
    assert jobs_at_once({"_target_": BASIC}, 16, cores=8) == 1
    assert jobs_at_once({"_target_": JOBLIB, "n_jobs": -1}, 16, cores=8) == 8  # joblib: all
    assert jobs_at_once({"_target_": JOBLIB, "n_jobs": -2}, 16, cores=8) == 7
    assert jobs_at_once({"_target_": JOBLIB, "n_jobs": 10}, 4, cores=2) == 4  # only 4 to run
    assert jobs_at_once({"_target_": JOBLIB, "n_jobs": 2}, 16, cores=2) == 2
    assert jobs_at_once({"_target_": LOCAL}, 3, cores=2) == 3  # submitit_local starts all
    assert jobs_at_once({"_target_": SLURM, "array_parallelism": 32}, 100, cores=2) == 1


def test_a_job_gets_its_share_of_the_cores_never_more():
    cores = machine_cores()
    assert thread_count(0, {}) == cores
    assert thread_count(0, {ENV_JOBS_AT_ONCE: "2"}) == max(cores // 2, 1)
    assert thread_count(0, {ENV_JOBS_AT_ONCE: str(4 * cores)}) == 1
    assert thread_count(1, {ENV_JOBS_AT_ONCE: "1"}) == 1  # threads=N
    assert thread_count(10 * cores, {}) == cores
    assert thread_count(0, {"SLURM_CPUS_PER_TASK": "1"}) == 1  # the allocation, not the node
