"""Interrupted sweeps: a killed sweep resumes on re-run (finished jobs skipped, the
interrupted job continues from its checkpoint to the same weights as an uninterrupted run),
and SLURM's preemption path (submitit's checkpoint/requeue protocol) is exercised with
submitit's local executor, which implements the same protocol."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from sae_sweep.config.schema import Config, SyntheticDataConfig
from sae_sweep.job import run_job
from sae_sweep.models import architecture
from sae_sweep.sweep.bookkeeping.status import sweep_status
from sae_sweep.sweep.running.policy import checkpoint_step
from tests.sweep_fixtures import env, jobs, summary, sweep_cmd

# Long enough to be caught mid-training: checkpoints every 10 steps of 200.
SLOW = ["variant=gated_dn_trainable_live", "train.steps=200", "train.checkpoint_every=10",
        "train.log_every=10"]  # fmt: skip


def _wait_for_checkpoint(job_dir: Path, proc: subprocess.Popen, timeout=240) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        step = checkpoint_step(job_dir)
        if step is not None and step < 200 and not (job_dir / "summary.json").exists():
            return step
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint in {job_dir}")


def _uninterrupted_weights(job_dir: Path, tmp_path: Path) -> dict:
    """The same job, run start to end in this process."""
    recorded = OmegaConf.load(job_dir / "config.yaml")
    sae = architecture(recorded.sae.kind).config()  # each architecture has its own schema
    schema = OmegaConf.structured(Config(sae=sae, data=SyntheticDataConfig()))
    cfg = OmegaConf.to_object(OmegaConf.merge(schema, recorded))
    run_job(cfg, tmp_path / "uninterrupted")
    return load_file(str(tmp_path / "uninterrupted" / "sae.safetensors"))


def _assert_same_weights(a: dict, job_dir: Path):
    b = load_file(str(job_dir / "sae.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.slow
def test_killed_sweep_resumes(tmp_path):
    d = tmp_path / "sweep"
    cmd = sweep_cmd(d, *SLOW, "lambda_multiplier=1,2,4")
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    second = d / "gated_dn_trainable_live" / "lam2.0_seed0"
    _wait_for_checkpoint(second, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole sweep dies, mid-job, no clean-up at all
    proc.wait()
    assert summary(d / "gated_dn_trainable_live" / "lam1.0_seed0")["status"] == "done"
    assert not (d / "gated_dn_trainable_live" / "lam4.0_seed0").exists()
    status = sweep_status(d)  # killed: the launcher holds sweep.lock no more
    assert status["launcher"] == "stopped"
    states = {r["dir"].split("/")[1]: r["state"] for r in status["jobs"]}
    assert states == {"lam1.0_seed0": "done", "lam2.0_seed0": "stopped"}
    assert status["counts"]["not started"] == 1

    r = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    actions = {k.split("/")[1]: v["action"] for k, v in jobs(d).items()}
    assert actions == {"lam1.0_seed0": "skip_done", "lam2.0_seed0": "resume",
                       "lam4.0_seed0": "new"}  # fmt: skip
    # The finished job is settled by the sweeper, not launched only to skip itself (on SLURM
    # that would be a queued job), and the end table still lists it.
    assert "Launching 2 jobs locally" in r.stdout + r.stderr, r.stdout + r.stderr
    assert jobs(d)["gated_dn_trainable_live/lam1.0_seed0"]["outcome"] == "skipped"
    resumed = summary(second)
    assert resumed["status"] == "done" and resumed["resumed_from_step"] > 0
    lines = [json.loads(x) for x in (second / "metrics.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in lines if "train/loss" in x]
    assert len(steps) == len(set(steps)), "metrics logged twice across the resume"
    assert sweep_status(d)["counts"]["done"] == 3
    _assert_same_weights(_uninterrupted_weights(second, tmp_path), second)


@pytest.mark.slow
def test_preempted_job_checkpoints_requeues_and_resumes(tmp_path):
    """SIGUSR2 is what SLURM (and submitit's local executor, at its time limit) sends before
    preemption/timeout: submitit asks the launcher to checkpoint (a resubmission of the same
    job), exits with the requeue code, and the executor runs the job again."""
    d = tmp_path / "sweep"
    cmd = sweep_cmd(d, *SLOW, "lambda_multiplier=1", launcher="submitit_local")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    job_dir = d / "gated_dn_trainable_live" / "lam1.0_seed0"
    _wait_for_checkpoint(job_dir, proc)
    pid = jobs(d)["gated_dn_trainable_live/lam1.0_seed0"]["pid"]
    os.kill(pid, signal.SIGUSR2)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    record = jobs(d)["gated_dn_trainable_live/lam1.0_seed0"]
    assert record["action"] == "resume" and record["pid"] != pid  # a new process resumed it
    assert summary(job_dir)["resumed_from_step"] > 0
    logs = "".join(p.read_text() for p in (d / ".submitit").rglob("*_log.*"))
    assert "this job is preempted" in logs and "Requeued job" in logs, logs[-2000:]
    _assert_same_weights(_uninterrupted_weights(job_dir, tmp_path), job_dir)
