"""The Llama path on a tiny random Llama made by the tests (conftest's `tiny_llama`): its hook
names, the activation cache built from it, the splice (an identity SAE recovers exactly all
the loss) and a whole `data=hf` job. The trained TinyStories Llama, where present, adds a
check on a real model (test_data_tinystories.py); these hold without it."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sae_sweep.config.schema import HFDataConfig  # noqa: E402
from sae_sweep.data import DataError, build_source  # noqa: E402
from sae_sweep.data.cache import open_cache  # noqa: E402
from sae_sweep.data.hf_model import find_site, load_model, site_activations  # noqa: E402
from sae_sweep.evaluation.lm import evaluate_lm  # noqa: E402
from tests.data_fixtures import FixedSAE  # noqa: E402

SITE = "model.layers.1"
CPU = torch.device("cpu")


def llama_cfg(tiny_llama, cache_dir, **overrides) -> HFDataConfig:
    model, stories = tiny_llama
    cfg = HFDataConfig(
        model=str(model),
        site=SITE,
        dataset=str(stories),
        context_length=32,
        n_tokens=4000,
        eval_sequences=6,
        lm_batch_size=4,
        lm_device="cpu",
        shard_rows=1500,
        shuffle_buffer=1024,
        cache_dir=str(cache_dir),
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def cache(tiny_llama, tmp_path_factory):
    """The activation cache of the Llama's block 1, built once for this module."""
    return open_cache(llama_cfg(tiny_llama, tmp_path_factory.mktemp("llama_cache")))


@pytest.fixture(scope="module")
def lm(tiny_llama):
    return load_model(str(tiny_llama[0]), "cpu", "float32")


def test_a_block_is_the_residual_stream_after_it(lm):
    """`model.layers.N` is the residual stream after block N: the model's own hidden state
    N + 1 (the last one is after the final norm, so blocks 0 and 1 of 3 are checked)."""
    assert type(lm.model).__name__ == "LlamaForCausalLM" and lm.causal_lm
    ids = torch.tensor([[1, *lm.tokenizer("the cat sat on a mat", add_special_tokens=False)
                         ["input_ids"]]])  # fmt: skip
    hidden = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
    for n in (0, 1):
        h = site_activations(lm.model, find_site(lm.model, f"model.layers.{n}"), ids)
        assert torch.equal(h, hidden[n + 1])
    assert site_activations(lm.model, find_site(lm.model, "model.layers.1.mlp"), ids).shape == (
        1, ids.shape[1], 32)  # fmt: skip


def test_a_wrong_site_names_the_llama_blocks(lm):
    with pytest.raises(DataError) as err:
        find_site(lm.model, "layers.1")
    msg = str(err.value)
    assert "'model.layers.0', 'model.layers.1', 'model.layers.2'" in msg
    assert "model.layers.0.self_attn" in msg and "model.layers.0.mlp" in msg


def test_the_cache_holds_the_site_activations_of_its_tokens(cache, lm):
    m = cache.manifest
    assert m["model_class"] == "LlamaForCausalLM" and m["causal_lm"] is True
    assert m["d"] == 32 and m["n_train"] == 4000
    assert [s["rows"] for s in m["train"]["shards"]] == [1500, 1500, 1000]
    # Llama's specials (<unk> 0, BOS 1, EOS 2) are left out; each sequence starts with BOS
    assert m["special_ids_excluded"] == [0, 1, 2]
    tokens = torch.from_numpy(np.load(cache.folder / "eval_tokens.npy")).long()
    assert tokens.shape == (6, 32) and (tokens[:, 0] == 1).all()
    assert m["n_eval"] == int((tokens > 2).sum())
    # the held-out shards are the site's activations at exactly those positions, in order
    cached = np.concatenate([np.load(cache.folder / s["file"]) for s in m["eval"]["shards"]])
    direct = site_activations(lm.model, find_site(lm.model, SITE), tokens)[tokens > 2]
    np.testing.assert_allclose(cached, direct.numpy(), rtol=1e-5, atol=1e-6)
    assert m["norm_scale"] * m["mean_norm"] == pytest.approx(math.sqrt(32))


def test_identity_splice_recovers_exactly_all_the_loss(tiny_llama, cache):
    """Through the job's own path (the LM evaluation of the source's held-out sequences
    from the cache): the identity changes no logit, so loss recovered is exactly 1 and the delta
    LM loss exactly 0; zero in its place recovers exactly nothing. A power-of-two
    normalisation scalar keeps x * s / s exact."""
    src = build_source(llama_cfg(tiny_llama, cache.folder.parent), run_seed=0, device=CPU)
    try:
        identity = evaluate_lm(src.held_out_lm, FixedSAE(identity=True), 4.0)
        zero = evaluate_lm(src.held_out_lm, FixedSAE(identity=False), 4.0)
    finally:
        src.close()
    assert identity["ce_zero"] - identity["ce_clean"] > 0.05  # zero ablation matters here
    assert identity["loss_recovered"] == 1.0 and identity["delta_lm_loss"] == 0.0
    assert identity["ce_sae"] == identity["ce_clean"] and identity["kl_div"] == 0.0
    assert identity["kl_score"] == 1.0 and identity["loss_recovered_mean"] == 1.0
    assert zero["loss_recovered"] == 0.0 and zero["ce_sae"] == zero["ce_zero"]
    assert zero["kl_score"] == 0.0


def test_llama_job_end_to_end(tiny_llama, cache, tmp_path, monkeypatch, capfd):
    """`sae-sweep data=hf` on the local Llama folder: a sparse SAE trained at block 1
    recovers nearly all the loss (the stories' next word needs only the current one, a few
    directions of the residual stream), and its export names the layer as SAELens and
    SAEBench do."""
    from sae_sweep.export.run import export_run
    from tests.sweep_fixtures import run_cli_in_process

    model, stories = tiny_llama
    run = tmp_path / "run"
    code, out = run_cli_in_process(
        monkeypatch, capfd, f"hydra.run.dir={run}", "data=hf", f"data.model={model}",
        f"data.site={SITE}", f"data.dataset={stories}", "data.context_length=32",
        "data.n_tokens=4000", "data.eval_sequences=6", "data.lm_batch_size=4",
        "data.shard_rows=1500", "data.shuffle_buffer=1024", "data.lm_device=cpu",
        f"data.cache_dir={cache.folder.parent}", "sae=standard", "sae.expansion_factor=4",
        "penalty=l1", "penalty.coefficient=0.3", "train.steps=200", "train.batch_size=128",
        "train.log_every=100", "train.checkpoint_every=0", "device=cpu", "logger=disabled",
    )  # fmt: skip
    assert code == 0, out[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "done" and summary["d_in"] == 32
    assert summary["norm_scale"] == pytest.approx(cache.manifest["norm_scale"])
    assert summary["ce_clean"] < summary["ce_sae"] < summary["ce_zero"]
    assert summary["l0"] < 16  # sparse: 128 latents, a handful active
    assert 0.9 < summary["loss_recovered"] < 1.0 and summary["ce_clean"] < summary["ce_mean"]
    assert 0 < summary["kl_div"] < summary["kl_zero"]
    meta = json.loads((export_run(run, tmp_path / "export") / "cfg.json").read_text())["metadata"]
    assert meta["hook_name"] == "blocks.1.hook_resid_post" and meta["hook_layer"] == 1
    assert meta["hf_hook_name"] == SITE and meta["context_size"] == 32
