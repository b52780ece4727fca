"""The activation cache and its reader, on a tiny random GPT-2 and a small local text file."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sae_sweep.config.schema import HFDataConfig  # noqa: E402
from sae_sweep.data import DataError, build_source  # noqa: E402
from sae_sweep.data.cache import open_cache  # noqa: E402

try:
    from data_fixtures import save_tiny_bert, save_tiny_gpt2, write_text
except ImportError:  # run from the repository root as a package
    from tests.data_fixtures import save_tiny_bert, save_tiny_gpt2, write_text

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model folder, text file, cache dir holding one built cache) shared by this module."""
    root = tmp_path_factory.mktemp("tiny")
    model = save_tiny_gpt2(root / "gpt2")
    text = write_text(root / "stories.txt")
    return model, text, root / "cache"


def hf_cfg(model, text, cache_dir, **overrides) -> HFDataConfig:
    cfg = HFDataConfig(
        model=str(model),
        site="transformer.h.0",
        dataset=str(text),
        context_length=32,
        n_tokens=3000,
        eval_sequences=8,
        shard_rows=700,  # several shards, the last one partial
        shuffle_buffer=512,
        cache_dir=str(cache_dir),
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def test_cache_manifest_describes_the_activations(tiny):
    model, text, cache_dir = tiny
    cache = open_cache(hf_cfg(model, text, cache_dir))
    m = cache.manifest
    assert m["d"] == 32 and m["n_train"] == 3000 and m["n_eval"] > 0
    assert m["fields"]["site"] == "transformer.h.0" and m["fields"]["context_length"] == 32
    assert [s["rows"] for s in m["train"]["shards"]] == [700, 700, 700, 700, 200]
    assert all(len(s["sha256"]) == 64 for s in m["train"]["shards"])
    assert m["causal_lm"] is True
    # the normalisation scalar makes the mean norm sqrt(d) over the whole training split
    x = np.concatenate([np.load(cache.folder / s["file"]) for s in m["train"]["shards"]])
    assert m["norm_scale"] * np.linalg.norm(x, axis=1).mean() == pytest.approx(32**0.5, rel=1e-5)
    # special tokens (the BOS that starts each sequence) are not among the activations
    tokens = np.load(cache.folder / "eval_tokens.npy")
    assert (tokens[:, 0] == 0).all() and m["n_eval"] == (tokens != 0).sum()
    # a second open finds the same cache instead of building another
    again = open_cache(hf_cfg(model, text, cache_dir))
    assert not again.built and again.folder == cache.folder
    assert [p.name for p in cache_dir.iterdir() if p.is_dir()] == [cache.folder.name]


def test_the_model_and_dataset_files_checksums_reach_the_source(tiny):
    """The cache names the exact files it came from, and every job's source carries them
    (a job's record then has them: analysis.load's `inputs.*` columns)."""
    import hashlib

    model, text, cache_dir = tiny
    cfg = hf_cfg(model, text, cache_dir)
    inputs = open_cache(cfg).manifest["inputs"]
    weights = sorted(p.name for p in model.iterdir() if p.is_file())
    assert sorted(inputs) == [f"dataset/{text.name}", *(f"model/{w}" for w in weights)]
    assert inputs[f"dataset/{text.name}"] == hashlib.sha256(text.read_bytes()).hexdigest()
    source = build_source(cfg, run_seed=0, device=CPU)
    try:
        assert source.inputs == inputs
    finally:
        source.close()


def test_every_cached_activation_is_read_once_per_epoch(tiny):
    model, text, cache_dir = tiny
    src = build_source(hf_cfg(model, text, cache_dir), run_seed=3, device=CPU)
    n, bs = src.train.n, 128  # 3000 rows: batches straddle windows and epochs
    steps = -(-2 * n // bs)
    rows = np.concatenate([src.train_rows(s, bs) for s in range(steps)])[: 2 * n]
    epoch0, epoch1 = rows[:n], rows[n:]
    assert sorted(epoch0) == list(range(n)) and sorted(epoch1) == list(range(n))
    assert not np.array_equal(epoch0, epoch1)  # a new order each epoch
    assert not np.array_equal(epoch0, np.arange(n))  # shuffled
    # the batch holds exactly those rows, and is a pure function of the step
    all_rows = src.train.read(0, n)
    for step in (0, 5, 23, steps - 1):
        expected = all_rows[torch.from_numpy(src.train_rows(step, bs))]
        assert torch.equal(src.train_batch(step, bs), expected)
    fresh = build_source(hf_cfg(model, text, cache_dir), run_seed=3, device=CPU)
    assert torch.equal(fresh.train_batch(17, bs), src.train_batch(17, bs))
    other_seed = build_source(hf_cfg(model, text, cache_dir), run_seed=4, device=CPU)
    assert not torch.equal(other_seed.train_batch(0, bs), src.train_batch(0, bs))
    # a window mixes rows from all over the data, not from one shard
    assert np.ptp(src.train_rows(0, bs)) > n / 2


def test_modified_shard_is_detected_and_named(tiny, tmp_path, capsys):
    """Opening checks sizes only; a same-size change needs the hashes (--verify or the knob)."""
    from sae_sweep.data.build_cache import main

    model, text, cache_dir = tiny
    folder = open_cache(hf_cfg(model, text, cache_dir)).folder
    copy = tmp_path / "cache" / folder.name
    shutil.copytree(folder, copy)
    cfg = hf_cfg(model, text, tmp_path / "cache")
    args = ["data=hf", f"data.model={model}", f"data.dataset={text}", "data.site=transformer.h.0",
            "data.context_length=32", "data.n_tokens=3000", "data.eval_sequences=8",
            "data.shard_rows=700", f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    main([*args, "--verify"])
    assert "verified: every file matches its sha256" in capsys.readouterr().out
    shard = copy / "train" / "shard_00002.npy"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte, same size
    shard.write_bytes(bytes(data))
    assert open_cache(cfg).folder == copy  # not read: a job opening the cache misses it
    with pytest.raises(SystemExit, match=r"train/shard_00002\.npy is corrupt.*sha256"):
        main([*args, "--verify"])
    cfg.verify_hashes = True
    with pytest.raises(DataError, match=r"train/shard_00002\.npy is corrupt.*sha256"):
        open_cache(cfg)
    cfg.verify_hashes = False
    shard.write_bytes(bytes(data[:-16]))  # a size change is caught on every open
    with pytest.raises(DataError, match=r"shard_00002\.npy is corrupt \(truncated.*Fix: delete"):
        open_cache(cfg)
    shard.unlink()
    with pytest.raises(DataError, match=r"shard_00002\.npy is missing"):
        open_cache(cfg)


def test_d_mismatch_between_cache_and_config(tiny):
    model, text, cache_dir = tiny
    with pytest.raises(DataError, match=r"data.d=768 but .* holds d=32"):
        open_cache(hf_cfg(model, text, cache_dir, d=768))


def test_bfloat16_cache_keeping_every_position(tiny, tmp_path):
    model, text, _ = tiny
    cfg = hf_cfg(
        model,
        text,
        tmp_path,
        cache_dtype="bfloat16",
        n_tokens=500,
        prepend_bos=False,
        exclude_special_tokens=False,
    )
    src = build_source(cfg, run_seed=0, device=CPU)
    x = src.train_batch(0, 64)
    assert x.dtype == torch.bfloat16 and torch.isfinite(x.float()).all()
    assert src.eval.n == 8 * 32  # every position of the held-out sequences, separators too
    assert src.held_out_lm.exclude_ids == []


def test_encoder_model_without_loss_recovered(tiny, tmp_path):
    _, text, _ = tiny
    bert = save_tiny_bert(tmp_path / "bert")
    cfg = hf_cfg(bert, text, tmp_path / "cache", site="encoder.layer.1", n_tokens=400)
    src = build_source(cfg, run_seed=0, device=CPU)
    assert src.d == 32 and src.held_out_lm is None
    tokens = np.load(open_cache(cfg).folder / "eval_tokens.npy")
    assert (tokens[:, 0] == 2).all()  # each sequence starts with [CLS], left out of the data
    assert src.eval.n == (tokens > 4).sum()


def test_bad_site_lists_valid_names_and_writes_nothing(tiny, tmp_path):
    model, text, _ = tiny
    with pytest.raises(DataError) as err:
        open_cache(hf_cfg(model, text, tmp_path, site="transformer.h.9"))
    message = str(err.value)
    assert "transformer.h.9" in message and "transformer.h.1" in message
    assert "transformer.h.0.mlp" in message and "transformer.h.0.attn" in message
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []  # no cache, no temp folder


def test_model_not_available_offline(tiny, tmp_path):
    _, text, _ = tiny
    with pytest.raises(DataError, match="cannot be loaded.*local folder"):
        open_cache(hf_cfg("no-such-org/no-such-model", text, tmp_path))


def test_dataset_errors(tiny, tmp_path):
    model, _, _ = tiny
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="yields only 0 packed sequences"):
        open_cache(hf_cfg(model, empty, tmp_path / "c"))
    assert not any(p.is_dir() for p in (tmp_path / "c").iterdir())
    with pytest.raises(DataError, match="no such file"):
        open_cache(hf_cfg(model, "./missing.jsonl", tmp_path / "c"))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"story": "the cat sat"}) + "\n")
    with pytest.raises(DataError, match=r"text_column='text' .* columns are \['story'\]"):
        open_cache(hf_cfg(model, rows, tmp_path / "c"))
    with pytest.raises(DataError, match="Hugging Face hub"):
        open_cache(hf_cfg(model, "no-such-org/no-such-dataset", tmp_path / "c"))


def test_two_job_sweep_builds_the_cache_once(tiny, tmp_path, monkeypatch, capfd):
    """A real two-job multirun (in this process): the first job builds the cache, the second
    reads it."""
    from tests.sweep_fixtures import run_cli_in_process

    model, text, _ = tiny
    sweep_dir = tmp_path / "sweep"
    monkeypatch.chdir(tmp_path)
    code, out = run_cli_in_process(
        monkeypatch, capfd, "--multirun",
        "data=hf", f"data.model={model}", "data.site=transformer.h.1", f"data.dataset={text}",
        "data.context_length=32", "data.n_tokens=2000", "data.eval_sequences=8",
        "data.cache_dir=shared_cache",  # relative: resolved against the launch directory
        "sae=standard", "penalty=l1", "penalty.coefficient=1e-3,3e-3",
        "train.steps=20", "train.batch_size=64", "train.log_every=10",
        "train.eval_batch_size=256", "device=cpu", "logger=disabled", "threads=1",
        f"hydra.sweep.dir={sweep_dir}",
    )  # fmt: skip
    assert code == 0, out[-3000:]
    caches = [p for p in (tmp_path / "shared_cache").iterdir() if p.is_dir()]
    assert len(caches) == 1
    logs = [next((sweep_dir / str(i)).glob("*.log")).read_text() for i in (0, 1)]
    assert sum("building activation cache" in log for log in logs) == 1
    assert sum("reusing activation cache" in log for log in logs) == 1
    for i in (0, 1):
        summary = json.loads((sweep_dir / str(i) / "summary.json").read_text())
        assert summary["status"] == "done"
        for key in ("loss_recovered", "delta_lm_loss", "ce_clean", "ce_sae", "ce_zero"):
            assert np.isfinite(summary[key]), key
        assert summary["norm_scale"] == pytest.approx(
            json.loads((caches[0] / "manifest.json").read_text())["norm_scale"]
        )


def test_cache_built_ahead_of_the_sweep_from_the_command_line(tiny, tmp_path, capsys):
    from sae_sweep.data.build_cache import main

    model, text, _ = tiny
    overrides = {"model": model, "dataset": text, "cache_dir": tmp_path, "site": "transformer.h.1"}
    main(["data=hf", "data.context_length=32", "data.n_tokens=500", "data.eval_sequences=4"]
         + [f"data.{k}={v}" for k, v in overrides.items()])  # fmt: skip
    assert "500 train" in capsys.readouterr().out
    cfg = hf_cfg(model, text, tmp_path, site="transformer.h.1", n_tokens=500, eval_sequences=4)
    assert open_cache(cfg).built is False  # the jobs find it ready
