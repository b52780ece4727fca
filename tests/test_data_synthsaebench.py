"""data=synthsaebench: a SAELens SyntheticModel's samples through the activation cache.

Every test uses a tiny model (256 features in d = 16, with the 16k model's hierarchy,
correlations and magnitudes) built in a temp folder: a second or two each.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

pytest.importorskip("sae_lens.synthetic")

from sae_sweep.config.schema import SynthSAEBenchDataConfig  # noqa: E402
from sae_sweep.config_store import register_configs  # noqa: E402
from sae_sweep.data import DataError, build_source  # noqa: E402
from sae_sweep.data.synthsaebench import model_config, open_synth_cache  # noqa: E402
from sae_sweep.main import CONF_DIR  # noqa: E402

CPU = torch.device("cpu")


def tiny_model(**overrides) -> dict:
    """A SyntheticModelConfig (SAELens's dict form) of the 16k model's structure at 256
    features, d = 16."""
    model = {
        "num_features": 256,
        "hidden_dim": 16,
        "firing_probability": {"generator_name": "zipfian", "exponent": 0.5, "max_prob": 0.4,
                               "min_prob": 0.0005},
        "hierarchy": {"total_root_nodes": 4, "branching_factor": 4, "max_depth": 2,
                      "mutually_exclusive_portion": 1.0, "compensate_probabilities": True,
                      "scale_children_by_parent": True},
        "correlation": {"rank": 4, "correlation_scale": 0.1},
        "mean_firing_magnitudes": {"generator_name": "linear", "start": 5.0, "end": 4.0},
        "std_firing_magnitudes": {"generator_name": "folded_normal", "mean": 0.5, "std": 0.5},
        "bias": 0.5,
        "seed": 42,
    }  # fmt: skip
    return {**model, **overrides}


def tiny_cfg(cache_dir, **overrides) -> SynthSAEBenchDataConfig:
    fields = dict(model=tiny_model(), n_train=3000, n_eval=1000, sample_batch_size=512,
                  shard_rows=1024, shuffle_buffer=1024, cache_dir=str(cache_dir))  # fmt: skip
    return SynthSAEBenchDataConfig(**{**fields, **overrides})


def folders(root, prefix):
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix))


def test_cache_is_built_once_then_reused(tmp_path):
    cfg = tiny_cfg(tmp_path)
    first = open_synth_cache(cfg, CPU)
    again = open_synth_cache(cfg, CPU)
    assert first.built and not again.built
    assert first.folder == again.folder and first.model_folder == again.model_folder
    assert len(folders(tmp_path, "synthetic_model--")) == 1
    assert len(folders(tmp_path, "synthsaebench--")) == 1
    m = first.manifest
    assert (m["n_train"], m["n_eval"], m["d"], m["n_features"]) == (3000, 1000, 16, 256)
    assert len(m["train"]["shards"]) == 3  # 1024 rows a shard
    assert 1 < m["true_l0"] < 20
    # every file the manifest lists is checked when a job opens the cache
    (first.folder / m["eval_features"]["values"]["file"]).write_bytes(b"truncated")
    with pytest.raises(DataError, match="corrupt"):
        open_synth_cache(cfg, CPU)


def test_keys_follow_the_config(tmp_path):
    """The model is rebuilt when its config changes, and only then; the samples whenever
    what they are (model, seed, counts) changes. Defaults SAELens fills in change nothing."""
    base = open_synth_cache(tiny_cfg(tmp_path), CPU)
    more = open_synth_cache(tiny_cfg(tmp_path, n_train=2000), CPU)
    other_seed = open_synth_cache(tiny_cfg(tmp_path, seed=1), CPU)
    assert more.model_folder == base.model_folder == other_seed.model_folder
    assert len({base.folder, more.folder, other_seed.folder}) == 3
    for changed in (tiny_model(seed=7), tiny_model(hidden_dim=24)):
        cache = open_synth_cache(tiny_cfg(tmp_path, model=changed), CPU)
        assert cache.model_folder != base.model_folder and cache.built
    spelled_out = tiny_model(dtype="float32", orthogonalization=None)  # SAELens's defaults
    assert open_synth_cache(tiny_cfg(tmp_path, model=spelled_out), CPU).folder == base.folder
    assert len(folders(tmp_path, "synthetic_model--")) == 3


def test_samples_are_a_function_of_the_key(tmp_path):
    a = open_synth_cache(tiny_cfg(tmp_path / "a"), CPU)
    b = open_synth_cache(tiny_cfg(tmp_path / "b"), CPU)
    for part in ("train", "eval"):
        for sa, sb in zip(a.manifest[part]["shards"], b.manifest[part]["shards"], strict=True):
            assert sa["sha256"] == sb["sha256"]


def test_ground_truth_and_true_feature_activations(tmp_path):
    """The held-out rows come with the feature activations that made them: x = f V + b, V the
    unit-norm true directions the source exposes as ground_truth."""
    from safetensors.torch import load_file

    source = build_source(tiny_cfg(tmp_path), run_seed=0, device=CPU)
    weights = load_file(str(source.cache.model_folder / "synthetic_model.safetensors"))
    assert source.ground_truth.shape == (256, 16)
    torch.testing.assert_close(source.ground_truth.norm(dim=1), torch.ones(256))
    torch.testing.assert_close(source.ground_truth, weights["feature_vectors"])
    rows, active = 0, 0
    for (x, f), plain in zip(source.eval_batches_with_truth(300), source.eval_batches(300),
                             strict=True):  # fmt: skip
        assert f.shape == (len(x), 256) and torch.equal(x, plain)
        torch.testing.assert_close(x, f @ source.ground_truth + weights["bias"], rtol=1e-5,
                                   atol=1e-4)  # fmt: skip
        rows, active = rows + len(x), active + int((f > 0).sum())
    assert rows == 1000
    assert active / rows == pytest.approx(source.true_l0)
    # the training rows are the model's too, and scaled like every cache: E||s x|| = sqrt(d)
    x = torch.cat([source.train_batch(s, 1000) for s in range(3)])
    assert (x * source.norm_scale).norm(dim=1).mean().item() == pytest.approx(4.0, rel=1e-4)
    source.close()


def test_every_ground_truth_metric_is_evaluated_on_it(tmp_path):
    from sae_sweep.evaluation import evaluate
    from sae_sweep.evaluation.catalogue import names
    from sae_sweep.models.standard import StandardSAE

    source = build_source(tiny_cfg(tmp_path), run_seed=0, device=CPU)
    sae = StandardSAE(16, 64, decoder_init_norm=1.0, encoder_init_transpose=True,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    metrics = evaluate(sae, source, source.norm_scale, batch_size=300)
    source.close()
    for name in names(source="ground_truth"):
        assert metrics[name] is not None, name
    assert metrics["true_l0"] == pytest.approx(source.true_l0)
    assert 0.0 < metrics["f1"] < 1.0 and 0.0 < metrics["mcc"] < 1.0


def test_a_saved_model_folder_instead_of_a_config(tmp_path):
    from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig

    saved = tmp_path / "published"
    SyntheticModel(SyntheticModelConfig.from_dict(tiny_model(seed=3))).save(saved)
    cfg = tiny_cfg(tmp_path / "cache", model={}, model_path=str(saved))
    source = build_source(cfg, run_seed=0, device=CPU)
    assert source.cache.model_folder == saved.resolve()
    assert not folders(tmp_path / "cache", "synthetic_model--")  # nothing built: it was given
    reloaded = SyntheticModel.load_from_disk(saved)
    torch.testing.assert_close(source.ground_truth, reloaded.feature_dict.feature_vectors)
    source.close()
    with pytest.raises(DataError, match="not a saved SyntheticModel"):
        open_synth_cache(tiny_cfg(tmp_path, model_path=str(tmp_path)), CPU)


def test_live_batches_are_drawn_per_step(tmp_path):
    source = build_source(tiny_cfg(tmp_path, live=True), run_seed=0, device=CPU)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = source.train_batch(5, 64), source.train_batch(6, 64)
    assert torch.equal(a, source.train_batch(5, 64)) and not torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)  # the job's own RNG is left alone
    other_run = build_source(tiny_cfg(tmp_path, live=True), run_seed=1, device=CPU)
    assert not torch.equal(a, other_run.train_batch(5, 64))
    source.close()
    other_run.close()


def test_bad_model_config_and_missing_extra(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="data.model is not a valid SAELens SyntheticModelConfig"):
        open_synth_cache(tiny_cfg(tmp_path, model=tiny_model(firing_probability={"p": 1})), CPU)
    with pytest.raises(DataError, match="needs data.model"):
        open_synth_cache(tiny_cfg(tmp_path, model={}), CPU)
    monkeypatch.setitem(sys.modules, "sae_lens", None)  # as if SAELens were not installed
    with pytest.raises(DataError, match=r"SAELens is not installed.*\.\[saelens\]"):
        open_synth_cache(tiny_cfg(tmp_path), CPU)


def compose_data(name: str):
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return OmegaConf.to_object(compose(config_name="config", overrides=[f"data={name}"])).data


def test_16k_preset_is_the_published_model():
    """conf/data/synthsaebench_16k.yaml builds exactly SAELens's SynthSAEBench-16k config
    (its creation script and docs); the CPU preset shares its structure."""
    import sae_lens.synthetic as s

    published = s.SyntheticModelConfig(
        num_features=16384,
        hidden_dim=768,
        firing_probability=s.ZipfianFiringProbabilityConfig(
            max_prob=0.4, min_prob=5e-4, exponent=0.5
        ),  # fmt: skip
        hierarchy=s.HierarchyConfig(
            total_root_nodes=128,
            branching_factor=4,
            max_depth=3,
            mutually_exclusive_portion=1.0,
            mutually_exclusive_min_depth=0,
            compensate_probabilities=True,
            scale_children_by_parent=True,
        ),  # fmt: skip
        mean_firing_magnitudes=s.LinearMagnitudeConfig(start=5.0, end=4.0),
        std_firing_magnitudes=s.FoldedNormalMagnitudeConfig(mean=0.5, std=0.5),
        correlation=s.LowRankCorrelationConfig(correlation_scale=0.1, rank=25),
        orthogonalization=s.OrthogonalizationConfig(num_steps=100, lr=3e-4),
        bias=0.5,
        seed=42,
    )
    big = compose_data("synthsaebench_16k")
    assert model_config(big.model, s) == published.to_dict()
    cpu = model_config(compose_data("synthsaebench").model, s)
    sizes = ("num_features", "hidden_dim", "hierarchy")
    assert {k: v for k, v in cpu.items() if k not in sizes} == {
        k: v for k, v in published.to_dict().items() if k not in sizes
    }
    assert {**cpu["hierarchy"], "total_root_nodes": 128} == published.to_dict()["hierarchy"]


def test_a_job_trains_on_it_end_to_end(tmp_path):
    """One job through the job runner: trains, evaluates against the true directions and
    feature activations, records them; a second job of the sweep reads the same cache."""
    from sae_sweep.job import run_job
    from tests.conftest import small_config

    data = tiny_cfg(tmp_path / "cache")
    summaries = []
    for seed in (0, 1):
        cfg = small_config(data=data, seed=seed)
        summaries.append(run_job(cfg, tmp_path / f"job{seed}"))
    manifest = json.loads((next((tmp_path / "cache").glob("synthsaebench--*")) / "manifest.json")
                          .read_text())  # fmt: skip
    for i, summary in enumerate(summaries):
        assert summary["status"] == "done"
        assert summary["d_in"] == 16
        assert summary["norm_scale"] == pytest.approx(manifest["norm_scale"])
        assert 0 < summary["mmcs"] <= 1 and np.isfinite(summary["explained_variance"])
        # the SynthSAEBench metrics, from the cached true feature activations
        assert summary["true_l0"] == pytest.approx(manifest["true_l0"])
        for name in ("mcc", "f1", "precision", "recall", "uniqueness"):
            assert 0 < summary[name] <= 1, name
        assert (tmp_path / f"job{i}" / "ground_truth.safetensors").exists()
    assert len(folders(tmp_path / "cache", "synthsaebench--")) == 1


def test_cache_built_ahead_of_the_sweep_from_the_command_line(tmp_path, capsys):
    """`python -m sae_sweep.data.build_cache data=synthsaebench ...` builds what the jobs
    (same overrides) then find ready."""
    from sae_sweep.data.build_cache import main

    small = ["data.model.num_features=256", "data.model.hidden_dim=16",
             "data.model.hierarchy.total_root_nodes=4", "data.model.hierarchy.max_depth=2",
             "data.model.orthogonalization=null", "data.n_train=2000", "data.n_eval=500",
             f"data.cache_dir={tmp_path}"]  # fmt: skip
    main(["data=synthsaebench", *small])
    assert "2,000 train + 500 eval activations, d=16" in capsys.readouterr().out
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        composed = compose(config_name="config", overrides=["data=synthsaebench", *small])
    assert open_synth_cache(OmegaConf.to_object(composed).data, CPU).built is False
    main(["data=synthsaebench", *small, "--verify"])  # re-hashes the shards and true features
    assert "verified: every file matches its sha256" in capsys.readouterr().out


def test_sweep_targets_are_checked_against_the_models_width():
    """A sweep's l0_targets must stay below the dense limit of d = data.model.hidden_dim (64
    for the CPU preset); a saved model's width is known only once it loads."""
    from sae_sweep.launch_checks import launch_problems

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        too_high = compose(config_name="config",
                           overrides=["data=synthsaebench", "+l0_targets=[7,40]"])  # fmt: skip
        saved = compose(config_name="config", overrides=[
            "data=synthsaebench", "+l0_targets=[7,40]", "data.model_path=some/folder"])  # fmt: skip
    (problem,) = launch_problems(too_high, sweep=True)
    assert "40" in problem and "29.09" in problem
    assert launch_problems(saved, sweep=True) == []


@pytest.mark.parametrize("overrides", [[], ["data=synthsaebench_16k", "sae.d_sae=4096",
                                            "train.lr=3e-4", "train.steps=195313"]])  # fmt: skip
def test_every_variant_of_the_synthsaebench_sweep_is_a_valid_job(overrides):
    """sweeps/synthsaebench.yaml: all seven variants, on the CPU preset (width 256, 2M samples
    in one pass) or the 16k model by override (width 4096, 200M samples)."""
    from sae_sweep.config.schema import job_config
    from sae_sweep.models import validate

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        grid = compose(config_name="config", overrides=["+sweep=synthsaebench"],
                       return_hydra_config=True).hydra.sweeper.params  # fmt: skip
        variants = grid.variant.split(",")
        assert len(variants) == 7 and str(grid.seed) == "0,1,2"
        for variant in variants:
            composed = compose(config_name="config",
                               overrides=["+sweep=synthsaebench", f"variant={variant}",
                                          "lambda_multiplier=5.5", *overrides])  # fmt: skip
            cfg = job_config(OmegaConf.to_object(composed))
            validate(cfg)
            assert cfg.data.kind == "synthsaebench" and cfg.sweep == "synthsaebench"
            samples = cfg.train.steps * cfg.train.batch_size
            if overrides:
                assert cfg.sae.d_sae == 4096 and cfg.data.live and samples >= 200_000_000
            else:
                assert cfg.sae.d_sae == 256 and samples == cfg.data.n_train == 2_048_000
