"""A real end-to-end job on the trained TinyStories Llama (skipped when it is absent).

The model is data, not part of the project: it lives beside the repository in
`../shared/data/tinystories-260k/` and is never committed. This is an extra check on a real
model: the Llama path, its hook names, the cache and the splice are tested on every machine
on a tiny Llama the tests make (test_data_llama.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sae_sweep.config.schema import (  # noqa: E402
    Config,
    HFDataConfig,
    LoggerConfig,
    LoggerMode,
    PenaltyConfig,
    PenaltyKind,
    SAEConfig,
    TrainConfig,
)
from sae_sweep.job import run_job  # noqa: E402

TINYSTORIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinystories-260k"


@pytest.mark.slow
@pytest.mark.skipif(not TINYSTORIES.is_dir(), reason="tinystories-260k is not present")
def test_real_model_end_to_end(tmp_path):
    """The trained TinyStories Llama: the SAE at a middle layer recovers most of the loss."""
    cfg = Config(
        sae=SAEConfig(kind="standard", expansion_factor=4),
        penalty=PenaltyConfig(kind=PenaltyKind.l1, coefficient=3e-3),
        data=HFDataConfig(
            model=str(TINYSTORIES),
            site="model.layers.2",
            dataset=str(TINYSTORIES / "stories_train.jsonl"),
            context_length=128,
            n_tokens=20_000,
            eval_sequences=8,
            lm_batch_size=32,
            cache_dir=str(tmp_path / "cache"),
        ),
        logger=LoggerConfig(mode=LoggerMode.disabled),
        train=TrainConfig(steps=200, batch_size=256, log_every=100, checkpoint_every=0),
        device="cpu",
    )
    summary = run_job(cfg, tmp_path / "run")
    assert summary["d_in"] == 64
    assert summary["ce_clean"] < summary["ce_sae"] < summary["ce_zero"]
    assert 0.3 < summary["loss_recovered"] <= 1.0
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["loss_recovered"] == pytest.approx(summary["loss_recovered"])
    # mean ablation is the stricter baseline: it keeps far more of the loss than zero does
    assert summary["ce_clean"] < summary["ce_mean"] < summary["ce_zero"]
    assert summary["loss_recovered_mean"] < summary["loss_recovered"]
    assert 0 < summary["kl_div"] < summary["kl_mean"] < summary["kl_zero"]
    # the record names its exact inputs: the model's files and the stories, by sha256
    assert written["inputs"] == summary["inputs"]
    assert {"model/model.safetensors", "model/config.json",
            "dataset/stories_train.jsonl"} <= set(summary["inputs"])  # fmt: skip
    from analysis.load import load_runs

    row = load_runs(tmp_path).iloc[0]
    assert row["inputs.model/model.safetensors"] == summary["inputs"]["model/model.safetensors"]

    # the exported SAE names the layer the way SAELens / SAEBench do
    from sae_sweep.export.run import export_run

    cfg_json = json.loads((export_run(tmp_path / "run", tmp_path / "e") / "cfg.json").read_text())
    assert cfg_json["metadata"]["hook_name"] == "blocks.2.hook_resid_post"
    assert cfg_json["metadata"]["hf_hook_name"] == "model.layers.2"
    assert cfg_json["metadata"]["context_size"] == 128
