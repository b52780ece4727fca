"""On CUDA (skipped without it): the input pipeline feeding the device, and jobs claiming GPUs.

The CPU halves of these behaviours are in test_data_prefetch.py and test_gpus.py."""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest
import torch

from sae_sweep.config.schema import ActivationsDataConfig, SyntheticDataConfig
from sae_sweep.data import SyntheticData
from sae_sweep.data.prefetch import THREAD_NAME
from sae_sweep.data.reader import Rows, Shard, ShuffledActivations
from sae_sweep.job import run_job
from tests.conftest import small_config
from tests.sweep_fixtures import jobs, run_sweep, summary

pytestmark = pytest.mark.gpu
CPU = torch.device("cpu")


def _shards(folder, dtype: str) -> list[Shard]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(3):
        x = torch.from_numpy(rng.standard_normal((700, 32), dtype=np.float32))
        data = x.bfloat16().view(torch.int16).numpy() if dtype == "bfloat16" else x.numpy()
        np.save(folder / f"shard_{i}.npy", data)
        out.append(Shard(folder / f"shard_{i}.npy", bfloat16=dtype == "bfloat16"))
    return out


def _reader(shards, device, pin_memory=True) -> ShuffledActivations:
    return ShuffledActivations(Rows(shards, 0, 1900), Rows(shards, 1900, 2100), run_seed=1,
                               device=device, buffer=256, pin_memory=pin_memory)  # fmt: skip


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("pin_memory", [True, False])
def test_the_reader_feeds_the_gpu_the_cpu_batches(tmp_path, monkeypatch, dtype, pin_memory):
    """Windows uploaded and shuffled on the device carry exactly the CPU reader's rows."""
    shards = _shards(tmp_path, dtype)
    with contextlib.closing(_reader(shards, CPU)) as on_cpu:
        expected = [on_cpu.train_batch(step, 64) for step in range(40)]
        expected_eval = torch.cat(list(on_cpu.eval_batches(64)))
    staged: list[tuple[str, bool]] = []
    real = Rows.read_into

    def spy(self, out, start, stop):
        staged.append((threading.current_thread().name, out.is_pinned()))
        real(self, out, start, stop)

    monkeypatch.setattr(Rows, "read_into", spy)
    gpu = torch.device("cuda", torch.cuda.current_device())
    with contextlib.closing(_reader(shards, gpu, pin_memory)) as on_gpu:
        for step in range(40):  # 64-row batches over windows of 256 and epochs of 1900
            x = on_gpu.train_batch(step, 64)
            assert x.device == gpu and x.dtype == getattr(torch, dtype)
            assert torch.equal(x.cpu(), expected[step]), step
        assert torch.equal(torch.cat([x.cpu() for x in on_gpu.eval_batches(64)]), expected_eval)
    background = [pinned for name, pinned in staged if name.startswith(THREAD_NAME)]
    assert background and all(p == pin_memory for p in background)
    assert not [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


def test_synthetic_batches_are_drawn_on_the_gpu_per_step():
    cfg = SyntheticDataConfig(d=32, n_features=128, mean_active=4, n_eval=512)
    gpu = torch.device("cuda", torch.cuda.current_device())
    src, cpu = SyntheticData(cfg, 0, gpu), SyntheticData(cfg, 0, CPU)
    a, b = src.train_batch(7, 4096), src.train_batch(8, 4096)
    assert a.device == gpu and torch.equal(src.train_batch(7, 4096), a)  # resumable
    assert not torch.equal(a, b)
    # another draw than the CPU's, from the same distribution; the held-out split is the same
    ref = cpu.train_batch(7, 4096)
    assert a.norm(dim=1).mean().item() == pytest.approx(ref.norm(dim=1).mean().item(), rel=0.05)
    held_out = torch.cat(list(src.eval_batches(512)))
    assert held_out.device == gpu
    assert torch.equal(held_out.cpu(), torch.cat(list(cpu.eval_batches(512))))  # drawn on the CPU


def test_a_job_on_the_gpu_trains_from_the_background_reader(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "acts.npy", rng.standard_normal((6000, 16)).astype(np.float32))
    cfg = small_config(device="cuda")
    cfg.data = ActivationsDataConfig(path=str(tmp_path / "acts.npy"), n_eval=512,
                                     shuffle_buffer=1024)  # fmt: skip
    done = run_job(cfg, tmp_path / "run")
    assert done["status"] == "done" and done["device"] == f"cuda:{torch.cuda.current_device()}"
    assert done["peak_memory_mb"] > 0
    assert not [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_jobs_at_once_run_on_two_gpus(tmp_path):
    """Two joblib workers: each job claims its own GPU, trains there, and says which."""
    d = tmp_path / "sweep"
    r = run_sweep(d, "variant=gated_original", "lambda_multiplier=1,2", "device=auto",
                  "hydra.launcher.n_jobs=2", launcher="joblib", cwd=tmp_path,
                  extra_env={"SAE_SWEEP_GPU_LOCKS": str(tmp_path / "locks")})  # fmt: skip
    assert r.returncode == 0, r.stdout
    records = jobs(d)
    assert len(records) == 2
    gpus = {rec["gpu"]["gpu"] for rec in records.values()}
    assert len(gpus) == 2, records
    for folder, rec in records.items():
        s = summary(d / folder)
        assert s["status"] == "done" and s["device"] == rec["gpu"]["device"]
    # the locks are free again: a third claim gets a GPU at once
    from sae_sweep.sweep.running.gpus import claim

    held = claim(sorted(gpus), 0, tmp_path / "locks", wait_s=0)
    held.release()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_the_language_model_follows_the_jobs_gpu():
    from sae_sweep.data.hf_model import _device
    from sae_sweep.job import resolve_device

    before = torch.cuda.current_device()
    try:
        torch.cuda.set_device(1)
        assert _device("auto") == torch.device("cuda", 1) == resolve_device("auto")
        assert _device("cuda") == torch.device("cuda", 1)
    finally:
        torch.cuda.set_device(before)
