"""Fault injection: no fault ends as a `done` record, a silent drop, or an error that names
neither the cause nor the fix.

One section per class of fault: non-finite data and results, unreadable activation files,
damaged checkpoints, kills, read-only and full disks, W&B that cannot be reached, and the
sweep's exit status. Jobs are tiny (d=16, tens of steps); a subprocess is used only where
a real process must die or the command line itself is under test. A whole sweep killed
with SIGKILL mid-job, then resumed, is tested in test_sweep_resume.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import killed_after_checkpoint, small_config
from safetensors.torch import save_file

from sae_sweep.config.schema import ActivationsDataConfig, LoggerFallback, LoggerMode
from sae_sweep.config.validation import ConfigError
from sae_sweep.data import DataError, SyntheticData, build_source
from sae_sweep.evaluation import NonFiniteMetricsError
from sae_sweep.job import run_job
from sae_sweep.models import validate
from sae_sweep.record.run_logger import WandbStartError
from sae_sweep.sweep.running.task import run_sweep_job
from sae_sweep.training.checkpoint import DAMAGED_SUFFIX, CheckpointError
from sae_sweep.training.divergence import TrainingDivergedError

try:
    from data_fixtures import save_tiny_gpt2, write_text
    from sweep_fixtures import TINY, env
except ImportError:  # run from the repository root as a package
    from tests.data_fixtures import save_tiny_gpt2, write_text
    from tests.sweep_fixtures import TINY, env

REPO = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def summary(job_dir: Path) -> dict:
    return json.loads((Path(job_dir) / "summary.json").read_text())


def assert_failed_record(job_dir: Path, *needles: str) -> dict:
    """A failed summary whose error names every needle; never a `done` one."""
    s = summary(job_dir)
    assert s["status"] == "failed", s
    for needle in needles:
        assert needle in s["error"], (needle, s["error"])
    assert "Traceback" in s["traceback"]
    return s


def activations_config(path: Path, **train):
    cfg = small_config(train__steps=20, train__log_every=10, train__checkpoint_every=0, **train)
    cfg.data = ActivationsDataConfig(path=str(path), n_eval=256, shuffle_buffer=256)
    return cfg


def gaussian(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)).numpy()


# -- non-finite data and results ---------------------------------------------------------


def test_inf_in_held_out_file_is_a_data_error_naming_file_and_row(tmp_path):
    x = gaussian(2000)
    x[2000 - 256 + 7, 3] = np.inf  # the held-out split is the last n_eval rows
    np.save(tmp_path / "acts.npy", x)
    with pytest.raises(DataError, match=r"row 1751 of .*acts\.npy"):
        run_job(activations_config(tmp_path / "acts.npy"), tmp_path / "run")
    assert_failed_record(tmp_path / "run", "DataError", "held-out", "acts.npy")
    assert not (tmp_path / "run" / "sae.safetensors").exists()


def test_nan_in_training_file_fails_before_or_during_training(tmp_path):
    x = gaussian(2000)
    x[5, 0] = np.nan
    np.save(tmp_path / "acts.npy", x)
    with pytest.raises(DataError, match="non-finite"):
        run_job(activations_config(tmp_path / "acts.npy"), tmp_path / "run")
    assert_failed_record(tmp_path / "run", "DataError")


def test_inf_in_held_out_data_of_any_source_is_a_data_error(tmp_path, monkeypatch):
    real = SyntheticData.eval_batches

    def poisoned(self, batch_size):
        for i, x in enumerate(real(self, batch_size)):
            yield torch.where(torch.arange(len(x))[:, None] == 3, torch.inf, x) if i == 1 else x

    monkeypatch.setattr(SyntheticData, "eval_batches", poisoned)
    with pytest.raises(DataError, match="held-out activations of SyntheticData"):
        run_job(small_config(train__eval_batch_size=512), tmp_path)
    assert_failed_record(tmp_path, "DataError", "hold 16 non-finite")


def _poison_weights_after(monkeypatch, n_steps: int) -> None:
    """Make the weights NaN right after the optimiser step number `n_steps` (1-based)."""
    import sae_sweep.training.loop as loop

    class Poisoning(loop.Stepper):
        calls = 0

        def step(self, x, lr, coefficient):
            out = super().step(x, lr, coefficient)
            Poisoning.calls += 1
            if Poisoning.calls == n_steps:
                with torch.no_grad():
                    self.sae.W_dec[0, 0] = torch.nan
            return out

    monkeypatch.setattr(loop, "Stepper", Poisoning)


def test_weights_non_finite_after_the_last_step_fail_the_job(tmp_path, monkeypatch):
    """The loss of the last step is finite (computed before the update) but the weights the
    update leaves are not: the job fails, and no checkpoint holds them."""
    _poison_weights_after(monkeypatch, 60)
    with pytest.raises(TrainingDivergedError, match=r"weights became non-finite.*W_dec"):
        run_job(small_config(), tmp_path)
    assert_failed_record(tmp_path, "TrainingDivergedError", "step 60")
    meta = json.loads((tmp_path / "checkpoint" / "meta.json").read_text())
    assert meta["step"] == 30  # the last finite checkpoint, not a NaN one


def test_non_finite_metrics_fail_the_job(tmp_path, monkeypatch):
    """Held-out data with no variance: FVU is not defined, so there is no result."""
    monkeypatch.setattr(SyntheticData, "eval_batches", lambda self, bs: iter([torch.ones(300, 16)]))
    with pytest.raises(NonFiniteMetricsError, match="fvu="):
        run_job(small_config(), tmp_path)
    assert_failed_record(tmp_path, "NonFiniteMetricsError", "fvu=")


def test_divergence_message_suggests_only_what_is_not_set(tmp_path, monkeypatch):
    _poison_weights_after(monkeypatch, 5)
    with pytest.raises(TrainingDivergedError) as info:
        run_job(small_config(train__grad_clip=1.0), tmp_path / "clipped")
    assert "set train.grad_clip" not in str(info.value)
    assert "tighten train.grad_clip (now 1.0)" in str(info.value)
    _poison_weights_after(monkeypatch, 5)
    with pytest.raises(TrainingDivergedError, match="set train.grad_clip"):
        run_job(small_config(train__grad_clip=None), tmp_path / "unclipped")


def test_number_outside_float32_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"penalty\.coefficient=1e\+39 is outside the float32"):
        validate(small_config(penalty__coefficient=1e39))
    with pytest.raises(ConfigError, match=r"train\.lr=inf"):
        validate(small_config(train__lr=float("inf")))


# -- unreadable activation files ---------------------------------------------------------


def _valid_bytes(fmt: str, folder: Path) -> bytes:
    x = torch.from_numpy(gaussian(64))
    path = folder / f"valid.{fmt}"
    if fmt == "npy":
        np.save(path, x.numpy())
    elif fmt == "safetensors":
        save_file({"acts": x}, str(path))
    else:
        torch.save({"acts": x}, path)
    return path.read_bytes()


@pytest.mark.parametrize("fmt", ["npy", "safetensors", "pt"])
@pytest.mark.parametrize("damage", ["empty", "4 bytes", "truncated", "garbage"])
def test_unreadable_shard_is_a_data_error_naming_the_file(tmp_path, fmt, damage):
    good = _valid_bytes(fmt, tmp_path)
    content = {
        "empty": b"",
        "4 bytes": good[:4],
        "truncated": good[: len(good) // 2],
        "garbage": b"\x93NUMPY" + os.urandom(200) if fmt == "npy" else os.urandom(200),
    }[damage]
    bad = tmp_path / "acts" / f"shard.{fmt}"
    bad.parent.mkdir()
    bad.write_bytes(content)
    cfg = ActivationsDataConfig(path=str(bad), key="acts", n_eval=8)
    with pytest.raises(DataError, match=rf"activation shard .*shard\.{fmt} cannot be read"):
        build_source(cfg, 0, CPU)


# -- damaged checkpoints -----------------------------------------------------------------


def _interrupted_job(job_dir: Path, monkeypatch) -> None:
    """A sweep job killed right after its checkpoint at step 30 (of 60)."""
    killed_after_checkpoint(
        monkeypatch, lambda: run_sweep_job(small_config(), job_dir, job_num=0, subdir="job")
    )


@pytest.mark.parametrize("damaged", ["state.safetensors", "meta.json"])
def test_damaged_checkpoint_is_named_kept_aside_and_rerun_starts_afresh(
    tmp_path, monkeypatch, damaged
):
    job = tmp_path / "job"
    _interrupted_job(job, monkeypatch)
    target = job / "checkpoint" / damaged
    if damaged == "meta.json":
        target.write_text('{"step": 30, "train_wall')  # cut mid-write by a bad disk
    else:
        target.write_bytes(target.read_bytes()[:100])

    first = run_sweep_job(small_config(), job, job_num=0, subdir="job")  # the resume
    assert first["outcome"] == "failed"
    s = assert_failed_record(job, "CheckpointError", str(job / "checkpoint"), "rerun_failed=true")
    kept = list(job.glob(f"checkpoint{DAMAGED_SUFFIX}*"))
    assert len(kept) == 1 and (kept[0] / damaged).is_file(), "damaged checkpoint not kept"
    assert str(kept[0]) in s["error"]

    skipped = run_sweep_job(small_config(), job, job_num=0, subdir="job")
    assert skipped["outcome"] == "skipped"  # a failed job waits for rerun_failed=true
    rerun = run_sweep_job(small_config(rerun_failed=True), job, job_num=0, subdir="job")
    assert rerun["outcome"] == "done" and summary(job)["resumed_from_step"] == 0
    steps = [json.loads(x)["step"] for x in (job / "metrics.jsonl").read_text().splitlines()]
    assert steps == [20, 30, 40, 60, 60], "metrics of the damaged run were not dropped"


def test_checkpoint_error_outside_a_sweep(tmp_path, monkeypatch):
    """run_job alone: the error names the file; running the job again recovers."""
    import sae_sweep.training.loop as loop

    real_save = loop.save_checkpoint

    def save_then_die(directory, *, step, **kw):
        real_save(directory, step=step, **kw)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_job(small_config(), tmp_path)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    (tmp_path / "checkpoint" / "state.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="state.safetensors|cannot be read"):
        run_job(small_config(), tmp_path)
    assert run_job(small_config(), tmp_path)["resumed_from_step"] == 0


# -- kills ------------------------------------------------------------------------------


def test_killed_after_evaluation_resumes_without_a_duplicate_eval_line(tmp_path, monkeypatch):
    """Killed between logging eval/ and writing the summary: the resume evaluates again and
    metrics.jsonl keeps one eval/ line."""
    import sae_sweep.job as job_module

    def die(*a, **k):
        raise KeyboardInterrupt("killed")

    real = job_module.save_sae
    monkeypatch.setattr(job_module, "save_sae", die)
    with pytest.raises(KeyboardInterrupt):
        run_sweep_job(small_config(), tmp_path, job_num=0, subdir="job")
    assert summary(tmp_path)["status"] == "interrupted"
    monkeypatch.setattr(job_module, "save_sae", real)
    record = run_sweep_job(small_config(), tmp_path, job_num=0, subdir="job")
    assert record["outcome"] == "done" and record["resumed_from_step"] == 60
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum("eval/fvu" in x for x in lines) == 1
    assert [x["step"] for x in lines] == [20, 30, 40, 60, 60]


# The cache build of a subprocess pauses after its first shard, for the test to kill it.
_SLOW_BUILD = """
import sys, time
from pathlib import Path
from sae_sweep.config.schema import HFDataConfig
from sae_sweep.data import cache
real = cache.ShardWriter._flush
def flush_then_wait(self, n):
    real(self, n)
    Path(sys.argv[3]).touch()
    time.sleep(600)
cache.ShardWriter._flush = flush_then_wait
cfg = HFDataConfig(model=sys.argv[1], site="transformer.h.0", dataset=sys.argv[2],
                   context_length=32, n_tokens=1500, eval_sequences=4, shard_rows=300,
                   cache_dir=sys.argv[4])
cache.open_cache(cfg)
"""


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    return save_tiny_gpt2(root / "gpt2"), write_text(root / "stories.txt")


def _hf_cfg(model, text, cache_dir):
    from sae_sweep.config.schema import HFDataConfig

    return HFDataConfig(model=str(model), site="transformer.h.0", dataset=str(text),
                        context_length=32, n_tokens=1500, eval_sequences=4, shard_rows=300,
                        cache_dir=str(cache_dir))  # fmt: skip


def test_killed_cache_build_leaves_no_cache_and_the_next_build_cleans_up(tmp_path, tiny_lm):
    from sae_sweep.data.cache import open_cache

    model, text = tiny_lm
    marker, cache_dir = tmp_path / "first-shard-written", tmp_path / "cache"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_BUILD, str(model), str(text), str(marker), str(cache_dir)],
        env={**env(), "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        t0 = time.time()
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.time() - t0 < 120, "the build never wrote a shard"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stale = list(cache_dir.glob("*.tmp-*"))
    assert stale and not [p for p in cache_dir.iterdir() if p.is_dir() and p not in stale]

    cache = open_cache(_hf_cfg(model, text, cache_dir))  # the lock died with the process
    assert cache.built and cache.manifest["n_train"] == 1500
    assert not list(cache_dir.glob("*.tmp-*")), "the killed build's folder was left behind"


@pytest.mark.parametrize("verify_hashes", [True, False])
def test_truncated_cache_shard_or_manifest_is_named_with_the_fix(tmp_path, tiny_lm, verify_hashes):
    from sae_sweep.data.cache import open_cache

    cfg = _hf_cfg(*tiny_lm, tmp_path / "cache")
    cfg.verify_hashes = verify_hashes
    folder = open_cache(cfg).folder
    shard = folder / "train" / "shard_00001.npy"
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(DataError, match=r"shard_00001\.npy (is corrupt|cannot be read)"):
        build_source(cfg, 0, CPU)
    (folder / "manifest.json").write_text("{")
    with pytest.raises(DataError, match=r"manifest\.json.*Fix: delete the folder"):
        open_cache(cfg)


# -- read-only and full disks ------------------------------------------------------------


def _mount_tmpfs(folder: Path, size: str) -> bool:
    """Mount a small tmpfs on `folder` (root with mount rights only); False if not possible."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True)  # fmt: skip
    return done.returncode == 0


def _umount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def read_only_cache(tmp_path, tiny_lm, monkeypatch, request):
    """A built cache on read-only storage: a read-only tmpfs where mounting works (root
    cannot be denied writes by permissions), else writes of the lock file refused."""
    from sae_sweep.data.cache import open_cache

    model, text = tiny_lm
    cache_dir = tmp_path / "ro"
    mounted = _mount_tmpfs(cache_dir, "16m")
    open_cache(_hf_cfg(model, text, cache_dir))
    if mounted:
        subprocess.run(["mount", "-o", "remount,ro", str(cache_dir)], check=True)
        request.addfinalizer(lambda: _umount(cache_dir))
    else:
        import filelock

        def refuse(self, *a, **k):
            raise PermissionError(13, "Permission denied", self.lock_file)

        monkeypatch.setattr(filelock.FileLock, "acquire", refuse)
        monkeypatch.setattr(filelock.FileLock, "__enter__", refuse)
    return model, text, cache_dir


def test_finished_cache_on_read_only_storage_is_read(read_only_cache):
    from sae_sweep.data.cache import open_cache

    model, text, cache_dir = read_only_cache
    cfg = _hf_cfg(model, text, cache_dir)
    cache = open_cache(cfg)
    assert not cache.built and cache.manifest["n_train"] == 1500
    cfg.n_tokens = 1000  # another cache, which would have to be built there
    with pytest.raises(DataError, match=r"cannot be written.*Fix: data\.cache_dir="):
        open_cache(cfg)


def test_cache_dir_that_cannot_be_created_says_so(tmp_path, tiny_lm):
    from sae_sweep.data.cache import open_cache

    (tmp_path / "a_file").write_text("")
    with pytest.raises(DataError, match=r"data\.cache_dir=.*a_file/cache cannot be written"):
        open_cache(_hf_cfg(*tiny_lm, tmp_path / "a_file" / "cache"))


def test_full_disk_during_a_checkpoint_fails_the_job_with_the_cause(tmp_path, monkeypatch):
    import sae_sweep.training.checkpoint as checkpoint

    def no_space(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", no_space)
    with pytest.raises(OSError, match="No space left"):
        run_job(small_config(), tmp_path)
    assert_failed_record(tmp_path, "No space left on device")
    leftovers = [p.name for p in (tmp_path / "checkpoint").iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, "a partial file was left"


def test_full_disk_for_real_leaves_no_done_record(tmp_path):
    """On a tiny tmpfs (where it can be mounted) the job cannot write its weights."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "200k"):
        pytest.skip("no tmpfs here (needs root with mount rights); the patched test covers it")
    try:
        cfg = small_config(sae__expansion_factor=64, data__d=64, train__checkpoint_every=0)
        with pytest.raises(Exception, match="No space left"):  # OSError, or safetensors'
            run_job(cfg, disk / "run")
        s = json.loads((disk / "run" / "summary.json").read_text() or "{}")
        assert s.get("status") != "done"
    finally:
        _umount(disk)


def test_unwritable_output_folder_is_named_with_the_fix(tmp_path):
    (tmp_path / "a_file").write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "sae_sweep", f"hydra.run.dir={tmp_path / 'a_file' / 'run'}",
         "logger=disabled", "train.steps=5"],
        cwd=tmp_path, env=env(PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "hydra.run.dir=" in last and "a_file" in last and "Fix:" in last, proc.stderr


# -- W&B unreachable ---------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wandb_env(tmp_path: Path, key: bool) -> dict[str, str]:
    """Online W&B towards a port where nothing listens; a dummy key, or none at all."""
    e = env(PYTHONPATH=str(REPO), HOME=str(tmp_path / "home"),
            WANDB_BASE_URL=f"http://127.0.0.1:{_closed_port()}")  # fmt: skip
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_SILENT"):
        e.pop(name, None)
    if key:
        e["WANDB_API_KEY"] = "0" * 40
    return e


@pytest.mark.parametrize("key", [True, False], ids=["no_network", "no_key"])
def test_wandb_unreachable_fails_the_job_quickly_with_the_hint(tmp_path, key):
    run = tmp_path / "run"
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "sae_sweep", f"hydra.run.dir={run}", "logger=online",
         "logger.init_timeout_s=3", *TINY[:8]],
        cwd=tmp_path, env=_wandb_env(tmp_path, key), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert time.time() - t0 < 60, "W&B's init timeout was not applied"
    assert_failed_record(run, "WandbStartError", "logger=offline", "logger.fallback=offline")
    assert "logger=offline" in proc.stderr


def test_wandb_fallback_offline_finishes_the_job(tmp_path, monkeypatch):
    wandb_env = _wandb_env(tmp_path, key=True)
    for name in ("HOME", "WANDB_BASE_URL", "WANDB_API_KEY"):
        monkeypatch.setenv(name, wandb_env[name])
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = small_config(train__steps=20, train__log_every=10, train__checkpoint_every=0)
    cfg.logger.mode, cfg.logger.init_timeout_s = LoggerMode.online, 3.0
    with pytest.raises(WandbStartError):
        run_job(cfg, tmp_path / "strict")
    cfg.logger.fallback = LoggerFallback.offline
    assert run_job(cfg, tmp_path / "fallback")["status"] == "done"
    assert list((tmp_path / "fallback" / "wandb").glob("offline-run-*"))


# -- the sweep ---------------------------------------------------------------------------


def test_sweep_with_a_failed_job_runs_them_all_and_exits_nonzero(tmp_path):
    """One job diverges (its weights overflow), the other trains: both run, the table and the
    analysis list the failure, the exit status is 1 and the last line says why."""
    from analysis.load import load_runs

    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "sae_sweep", "--multirun", f"hydra.sweep.dir={sweep_dir}",
         *TINY[:8], "logger=disabled", "train.steps=20", "train.grad_clip=null",
         "train.lr=1e-3,1e30", "penalty.coefficient=1e30", "device=cpu",
         "hydra.sweeper.analysis=false"],
        cwd=tmp_path, env=env(PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("sweep incomplete (1 failed of 2 jobs; exit status 1)"), last
    assert summary(sweep_dir / "0")["status"] == "done"
    assert summary(sweep_dir / "1")["status"] == "failed"
    assert sorted(load_runs(sweep_dir)["status"]) == ["done", "failed"]  # listed, not dropped
