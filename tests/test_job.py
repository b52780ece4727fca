"""One job end to end: the Hydra entry point, the record, failures that say why."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import killed_after_checkpoint, small_config
from omegaconf import OmegaConf
from safetensors.torch import load_file

from sae_sweep.config.schema import SyntheticDataConfig
from sae_sweep.data import DataError, SyntheticData
from sae_sweep.evaluation.metrics import fvu, l0
from sae_sweep.job import run_job
from sae_sweep.record.weights import load_sae
from sae_sweep.training.divergence import TrainingDivergedError
from tests.sweep_fixtures import run_cli_in_process

TINY = [
    "data.d=16", "data.n_features=32", "data.mean_active=3", "data.n_eval=2048",
    "sae.expansion_factor=4", "train.steps=60", "train.batch_size=128", "train.log_every=20",
    "penalty.coefficient=3",
]  # fmt: skip


def _cli(tmp_path, *overrides, env=None):
    return subprocess.run(
        [sys.executable, "-m", "sae_sweep", f"hydra.run.dir={tmp_path / 'run'}", *overrides],
        cwd=tmp_path,  # any working directory
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_entry_point_writes_the_whole_record(tmp_path):
    proc = _cli(tmp_path, *TINY, "logger=offline", env={"WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    record = ("config.yaml", "metrics.jsonl", "summary.json", "sae.safetensors",
              "sae_config.json", "ground_truth.safetensors", "checkpoint/meta.json")  # fmt: skip
    for name in record:
        assert (run / name).is_file(), name
    assert list((run / "wandb").glob("offline-run-*")), "no offline W&B run"
    assert "record:" in proc.stderr + proc.stdout and "fvu=" in proc.stderr + proc.stdout

    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "done" and summary["steps"] == 60
    for key in ("l0", "mse", "fvu", "explained_variance", "dead_fraction", "shrinkage", "mmcs",
                "frac_recovered", "wall_s", "activations_per_s", "norm_scale"):  # fmt: skip
        assert isinstance(summary[key], float), key
    assert summary["knobs"]["penalty.coefficient"] == 3.0
    assert summary["knobs"]["sae.kind"] == "gated"
    assert summary["knobs"]["train.matmul_dtype"] == "tf32"  # the default: TF32 on CUDA ...
    assert summary["matmul_precision"] == "float32"  # ... and float32 on a CPU, which has none
    # the libraries that trained it, for reproducing it (the wheel's "+cpu"/"+cu121" aside)
    assert summary["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert summary["versions"]["python"] == platform.python_version()

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "train/loss" in x] == [20, 40, 60]
    assert "eval/fvu" in lines[-1] and "train/l0" in lines[0]

    # The summary's metrics are those of the saved weights on the held-out data.
    sae, meta = load_sae(run)
    cfg = OmegaConf.load(run / "config.yaml")
    data = SyntheticData(SyntheticDataConfig(**cfg.data), run_seed=cfg.seed, device="cpu")
    x = torch.cat(list(data.eval_batches(4096))) * meta["norm_scale"]
    with torch.no_grad():
        out = sae(x)
    assert l0(out.f).item() == pytest.approx(summary["l0"], rel=1e-4)
    assert fvu(x, out.x_hat).item() == pytest.approx(summary["fvu"], rel=1e-4)
    gt = load_file(str(run / "ground_truth.safetensors"))["directions"]
    torch.testing.assert_close(gt, data.ground_truth)


def test_default_job_learns_the_ground_truth(tmp_path):
    """The README's promise: FVU well below 1 and MMCS far above a random dictionary."""
    cfg = small_config(train__steps=400, penalty__coefficient=8.0, train__lr=1e-2)
    summary = run_job(cfg, tmp_path)
    assert summary["fvu"] < 0.3
    assert summary["mmcs"] > 0.9 and summary["mmcs"] > summary["mmcs_random"] + 0.3
    assert summary["frac_recovered"] > 0.5
    assert 1 < summary["l0"] < 8  # about the 3 true features active per sample


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_resumed_run_ends_with_the_same_weights(tmp_path, monkeypatch, device):
    """On CUDA too: fused Adam reads its step counter on the device after the resume."""
    cfg = small_config(resample__enabled=True, resample__at_steps=[20, 40],
                       resample__dead_window_steps=5, device=device)  # fmt: skip
    run_job(cfg, tmp_path / "full")

    # The same run killed right after its checkpoint at step 30, then started again.
    killed_after_checkpoint(monkeypatch, lambda: run_job(cfg, tmp_path / "resumed"))
    summary = run_job(cfg, tmp_path / "resumed")
    assert summary["resumed_from_step"] == 30
    a = load_file(str(tmp_path / "full" / "sae.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "sae.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_nan_in_the_data_fails_clearly_and_records_the_failure(tmp_path, monkeypatch):
    real = SyntheticData.train_batch

    def poisoned(self, step, batch_size):
        x = real(self, step, batch_size)
        if step == 45:
            x[3, 2] = float("nan")
        return x

    monkeypatch.setattr(SyntheticData, "train_batch", poisoned)
    with pytest.raises(DataError, match="non-finite"):
        run_job(small_config(), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "DataError" in summary["error"] and "steps 40..59" in summary["error"]
    assert "Traceback" in summary["traceback"]
    assert not (tmp_path / "sae.safetensors").exists()


def test_nan_in_the_first_batches_is_caught_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(SyntheticData, "train_batch", lambda *a: torch.full((128, 16), torch.nan))
    with pytest.raises(DataError, match="training batch 0"):
        run_job(small_config(), tmp_path)


def test_diverging_run_fails_clearly(tmp_path):
    cfg = small_config(train__lr=1e30, train__grad_clip=None, penalty__coefficient=1e30)
    with pytest.raises(TrainingDivergedError, match="train.lr"):
        run_job(cfg, tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"
    assert not (tmp_path / "checkpoint" / "meta.json").exists()  # no NaN checkpoint either


def test_unknown_key_exits_nonzero_naming_it(tmp_path, monkeypatch, capfd):
    code, out = run_cli_in_process(monkeypatch, capfd, f"hydra.run.dir={tmp_path / 'run'}",
                                   "train.stepz=5", "logger=disabled")  # fmt: skip
    assert code != 0
    assert "stepz" in out
    assert not (tmp_path / "run" / "summary.json").exists()


def test_bad_combination_exits_nonzero_with_the_fix_and_writes_nothing(
    tmp_path, monkeypatch, capfd
):
    code, out = run_cli_in_process(monkeypatch, capfd, f"hydra.run.dir={tmp_path / 'run'}",
                                   *TINY, "penalty=l1", "penalty.decoder_norm_grad=live",
                                   "logger=disabled")  # fmt: skip
    assert code != 0
    assert "penalty.decoder_norm_grad" in out and "Fix:" in out
    run = tmp_path / "run"
    assert not any((run / f).exists() for f in ("summary.json", "metrics.jsonl", "config.yaml"))


def test_record_files_load_without_pickle(tmp_path):
    run_job(small_config(), tmp_path)
    files = {p.name for p in Path(tmp_path).rglob("*") if p.is_file()}
    assert not {f for f in files if f.endswith((".pt", ".pkl", ".pickle", ".bin"))}
