"""data=activations: a user's .npy / .safetensors / .pt shards through the shuffling reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sae_sweep.config.schema import (
    ActivationsDataConfig,
    Config,
    LoggerConfig,
    LoggerMode,
    PenaltyConfig,
    PenaltyKind,
    SAEConfig,
    TrainConfig,
)
from sae_sweep.data import DataError, build_source
from sae_sweep.job import run_job

CPU = torch.device("cpu")


def rows(n: int, d: int = 8, start: int = 0) -> torch.Tensor:
    """Row i holds the value start + i in every column, so a read row names itself."""
    return torch.arange(start, start + n, dtype=torch.float32)[:, None].expand(n, d).contiguous()


def write_mixed_shards(folder: Path) -> Path:
    folder.mkdir()
    np.save(folder / "a.npy", rows(300).numpy())
    save_file({"acts": rows(250, start=300)}, str(folder / "b.safetensors"))
    torch.save({"acts": rows(450, start=550)}, folder / "c.pt")
    return folder


def test_mixed_formats_read_as_one_dataset(tmp_path):
    cfg = ActivationsDataConfig(
        path=str(write_mixed_shards(tmp_path / "acts")), key="acts", n_eval=100, shuffle_buffer=128
    )
    src = build_source(cfg, run_seed=0, device=CPU)
    assert src.d == 8 and src.train.n == 900 and src.eval.n == 100
    held_out = torch.cat(list(src.eval_batches(64)))[:, 0]
    assert torch.equal(held_out, torch.arange(900, 1000, dtype=torch.float32))
    seen = torch.cat([src.train_batch(s, 100) for s in range(9)])[:, 0]  # one epoch
    assert sorted(seen.long().tolist()) == list(range(900))  # each training row exactly once


def test_bfloat16_safetensors_and_a_torch_tensor_file(tmp_path):
    folder = tmp_path / "acts"
    folder.mkdir()
    save_file({"x": rows(64).bfloat16()}, str(folder / "a.safetensors"))
    torch.save(rows(64, start=64).half(), folder / "b.pt")
    src = build_source(ActivationsDataConfig(path=str(folder), n_eval=16), 0, CPU)
    x = src.train_batch(0, 112)
    assert sorted(x[:, 0].float().long().tolist()) == list(range(112))


def test_user_file_errors(tmp_path):
    folder = write_mixed_shards(tmp_path / "acts")
    with pytest.raises(DataError, match=r"b.safetensors has no tensor 'x' \(it has \['acts'\]\)"):
        build_source(ActivationsDataConfig(path=str(folder), key="x", n_eval=1), 0, CPU)
    with pytest.raises(DataError, match="data.d=16 but"):
        build_source(ActivationsDataConfig(path=str(folder), key="acts", d=16), 0, CPU)
    with pytest.raises(DataError, match="not more than data.n_eval"):
        build_source(ActivationsDataConfig(path=str(folder), key="acts", n_eval=5000), 0, CPU)
    with pytest.raises(DataError, match="names no .npy"):
        build_source(ActivationsDataConfig(path=str(tmp_path / "nothing")), 0, CPU)
    np.save(tmp_path / "acts" / "d.npy", np.zeros((10, 4), np.float32))
    with pytest.raises(DataError, match="disagree on d"):
        build_source(ActivationsDataConfig(path=str(folder / "*.npy")), 0, CPU)


class NotATensor:
    pass


def test_torch_files_are_never_unpickled(tmp_path):
    torch.save({"acts": rows(10), "evil": NotATensor()}, tmp_path / "x.pt")
    with pytest.raises(DataError, match="cannot be read"):
        build_source(ActivationsDataConfig(path=str(tmp_path / "x.pt"), n_eval=1), 0, CPU)


def test_job_trains_on_user_activations(tmp_path):
    gen = torch.Generator().manual_seed(0)
    np.save(tmp_path / "x.npy", torch.randn(3000, 16, generator=gen).numpy())
    cfg = Config(
        sae=SAEConfig(kind="standard", expansion_factor=2),
        penalty=PenaltyConfig(kind=PenaltyKind.l1, coefficient=1e-3),
        data=ActivationsDataConfig(path=str(tmp_path / "x.npy"), n_eval=500, shuffle_buffer=256),
        logger=LoggerConfig(mode=LoggerMode.disabled),
        train=TrainConfig(steps=30, batch_size=128, log_every=10, checkpoint_every=0),
        device="cpu",
    )
    summary = run_job(cfg, tmp_path / "run")
    assert summary["status"] == "done" and summary["fvu"] < 1.0
    assert summary["loss_recovered"] is None  # no language model behind these activations
