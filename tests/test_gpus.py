"""GPU claiming (sweep/running/gpus.py) on a CPU machine: lock files over fake GPU ids, and
torch.cuda stood in for where a job sets its device. tests/test_gpu_jobs.py has the real thing."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch

from sae_sweep.sweep.running import gpus


@pytest.fixture
def fake_cuda(monkeypatch, tmp_path):
    """A machine whose CUDA has not been touched yet; records the devices made current."""
    current: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    for name in ("SLURM_JOB_ID", "SUBMITIT_EXECUTOR", gpus.ENV_WAIT):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # what submitit_local would set
    monkeypatch.setenv(gpus.ENV_LOCKS, str(tmp_path))
    return current


def test_two_concurrent_claimers_get_different_gpus(tmp_path):
    start = threading.Barrier(2)
    claims: list[gpus.GpuClaim] = []

    def claimer():
        start.wait()  # both search from GPU 0 at the same moment
        claims.append(gpus.claim(["4", "5", "6"], 0, tmp_path))

    threads = [threading.Thread(target=claimer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c.gpu for c in claims) == ["4", "5"]
    third = gpus.claim(["4", "5", "6"], 0, tmp_path)
    assert third.gpu == "6"
    with pytest.raises(gpus.GpusBusyError, match=r"every GPU \(4, 5, 6\).*GPU 4: job 0 \(pid"):
        gpus.claim(["4", "5", "6"], 1, tmp_path, wait_s=0)
    claims[0].release()
    assert gpus.claim(["4", "5", "6"], 1, tmp_path).gpu == claims[0].gpu
    # with GPUs free, job i starts its search at GPU i mod N: the first jobs spread at once
    for c in (claims[1], third):
        c.release()
    assert gpus.claim(["4", "5", "6"], 5, tmp_path).index == 2


def test_a_dead_holders_gpu_is_claimed_again(tmp_path):
    """The lock belongs to the holder's process: killed, it can no longer keep the GPU."""
    hold = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(tmp_path / 'gpu-0.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(gpus.GpusBusyError):
            gpus.claim(["0"], 0, tmp_path, wait_s=0)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert gpus.claim(["0"], 0, tmp_path, wait_s=0).gpu == "0"


def test_with_every_gpu_held_a_job_waits_and_says_for_whom(tmp_path, caplog):
    held = [gpus.claim(["0", "1"], job, tmp_path) for job in (7, 8)]  # GPUs 1 and 0
    got: list[gpus.GpuClaim] = []
    with caplog.at_level(logging.WARNING, logger=gpus.log.name):
        waiter = threading.Thread(target=lambda: got.append(
            gpus.claim(["0", "1"], 9, tmp_path, poll_s=0.01)))  # fmt: skip
        waiter.start()
        waiter.join(timeout=0.3)
        assert waiter.is_alive() and not got  # waits, without a time limit by default
        held[1].release()
        waiter.join(timeout=10)
    assert got[0].gpu == "0"
    message = caplog.text
    assert "job 9 waits for a GPU: all 2 are held" in message
    assert "GPU 1: job 7 (pid" in message and "no time limit" in message


def test_a_job_claims_a_gpu_makes_it_current_and_frees_it_at_the_end(fake_cuda, monkeypatch,
                                                                        tmp_path):  # fmt: skip
    monkeypatch.setenv(gpus.ENV_GPUS, "10,11")  # physical ids need not start at 0
    with gpus.claim_gpu(0, "auto") as a, gpus.claim_gpu(0, "cuda") as b:
        assert (a["gpu"], a["device"], b["gpu"], b["device"]) == ("10", "cuda:0", "11", "cuda:1")
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "10,11"  # the whole list, again
        assert fake_cuda == [0, 1]
    with gpus.claim_gpu(1, "auto") as c:  # both released when their jobs ended
        assert c["gpu"] == "11"
    with pytest.raises(RuntimeError, match="boom"), gpus.claim_gpu(0, "auto"):
        raise RuntimeError("boom")  # a failing job releases its GPU too
    with gpus.claim_gpu(0, "auto") as d:
        assert d["gpu"] == "10"


def test_jobs_left_on_their_device(fake_cuda, monkeypatch, tmp_path):
    monkeypatch.setenv(gpus.ENV_GPUS, "0,1")
    for device in ("cpu", "cuda:1"):  # the user chose
        with gpus.claim_gpu(0, device) as got:
            assert got is None
    monkeypatch.setenv("SLURM_JOB_ID", "123")  # the scheduler chose
    with gpus.claim_gpu(0, "auto") as got:
        assert got is None
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv(gpus.ENV_GPUS, "")  # claiming switched off
    with gpus.claim_gpu(0, "auto") as got:
        assert got is None
    monkeypatch.setenv(gpus.ENV_GPUS, "3")  # one GPU for the sweep: every job takes it
    with gpus.claim_gpu(0, "auto") as a, gpus.claim_gpu(1, "auto") as b:
        assert a["gpu"] == b["gpu"] == "3" and a["device"] == "cuda:0"
    assert not list(tmp_path.glob("gpu-*.lock")) and fake_cuda == [0, 0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # GPUs listed, no CUDA
    monkeypatch.setenv(gpus.ENV_GPUS, "0,1")
    with gpus.claim_gpu(0, "auto") as got:
        assert got is None


def test_no_gpus_published_on_slurm(monkeypatch):
    monkeypatch.delenv(gpus.ENV_GPUS, raising=False)
    gpus.publish_machine_gpus(on_slurm=True)
    assert gpus.ENV_GPUS not in os.environ
