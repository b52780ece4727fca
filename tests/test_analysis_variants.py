"""Variants and like-with-like detection on hand-made configs."""

from pathlib import Path

try:
    from analysis_fixtures import config, summary, write_job
except ImportError:  # tests/ imported as a package
    from tests.analysis_fixtures import config, summary, write_job

from analysis.load import load_runs
from analysis.variants import assign_variants, is_bookkeeping, varying_knobs


def _sweep(root: Path, variants: list[dict], lams=(0.1, 1.0), seeds=(0, 1)) -> Path:
    i = 0
    for over in variants:
        for lam in lams:
            for seed in seeds:
                cfg = config(
                    seed=seed,
                    **over,
                    **{"penalty.coefficient": lam, "logger.name": f"job{i}", "device": f"cuda:{i}"},
                )
                write_job(root / str(i), cfg, summary(cfg, l0=10 / lam, fvu=0.1 * lam))
                i += 1
    return root


def test_variant_is_the_varying_knobs_except_lambda_seed_and_bookkeeping(tmp_path):
    runs = load_runs(
        _sweep(
            tmp_path,
            [
                {"sae.aux_decoder": "frozen", "penalty.decoder_norm_grad": "live"},
                {"sae.aux_decoder": "trainable", "penalty.decoder_norm_grad": "live"},
                {"sae.aux_decoder": "frozen", "penalty.decoder_norm_grad": "detached"},
            ],
        )
    )
    knobs, aliases = varying_knobs(runs)
    # lambda, seed, logger.name and device vary too, but are not variant knobs.
    assert knobs == ["sae.aux_decoder", "penalty.decoder_norm_grad"]
    assert aliases == {}
    labelled, v = assign_variants(runs)
    assert len(v.order) == 3
    assert labelled.groupby("variant_label").size().tolist() == [4, 4, 4]
    assert "aux_decoder=frozen, decoder_norm_grad=live" in v.order


def test_differing_knobs_and_not_like_with_like(tmp_path):
    runs = load_runs(
        _sweep(
            tmp_path,
            [
                # the original gated recipe
                {"penalty.kind": "l1", "train.unit_norm_decoder": True, "resample.enabled": True},
                # the new penalty alone: like with like against the recipe below
                {
                    "penalty.kind": "decoder_norm",
                    "train.unit_norm_decoder": True,
                    "resample.enabled": True,
                },
                # the new penalty without constraint and resampling
                {
                    "penalty.kind": "decoder_norm",
                    "train.unit_norm_decoder": False,
                    "resample.enabled": False,
                },
            ],  # fmt: skip
        )
    )
    _, v = assign_variants(runs)
    orig, new, vanilla = v.order
    assert v.differing(orig, new) == {"penalty.kind": ("l1", "decoder_norm")}
    assert v.like_with_like(orig, new)
    assert set(v.differing(orig, vanilla)) == {
        "penalty.kind",
        "train.unit_norm_decoder",
        "resample.enabled",
    }
    assert not v.like_with_like(orig, vanilla)
    assert set(v.differing(new, vanilla)) == {"train.unit_norm_decoder", "resample.enabled"}


def test_alias_knobs_are_folded(tmp_path):
    runs = load_runs(
        _sweep(
            tmp_path,
            [
                {"sae.expansion_factor": 4, "sae.d_sae": 64},
                {"sae.expansion_factor": 8, "sae.d_sae": 128},
            ],
        )
    )
    labelled, v = assign_variants(runs)
    assert v.knobs == ["sae.expansion_factor"]
    assert v.aliases == {"sae.d_sae": "sae.expansion_factor"}
    assert v.like_with_like(*v.order)
    assert set(labelled["variant_label"]) == {"expansion_factor=4", "expansion_factor=8"}


def _data_seed_sweep(root: Path, data_seed) -> Path:
    """Two variants x 3 seeds; data.seed = data_seed(seed)."""
    for i, (aux, seed) in enumerate((a, s) for a in ("frozen", "trainable") for s in range(3)):
        cfg = config(seed=seed, **{"sae.aux_decoder": aux, "data.seed": data_seed(seed)})
        write_job(root / str(i), cfg, summary(cfg, l0=10.0, fvu=0.1))
    return root


def test_a_data_seed_that_follows_the_seed_is_part_of_the_replicate(tmp_path):
    # data.seed=${seed}: each seed draws its own data; runs of one seed stay paired across
    # variants, so the data seed must not split a variant into one per seed.
    labelled, v = assign_variants(load_runs(_data_seed_sweep(tmp_path, lambda s: 100 + s)))
    assert v.knobs == ["sae.aux_decoder"]
    assert labelled.groupby("variant_label").size().tolist() == [3, 3]


def test_a_data_seed_crossed_with_the_seed_is_a_knob(tmp_path):
    # Two seeds on one data seed: different data is a different variant, not a replicate.
    labelled, v = assign_variants(load_runs(_data_seed_sweep(tmp_path, lambda s: s // 2)))
    assert v.knobs == ["sae.aux_decoder", "data.seed"]


def _upgraded_sweep(root: Path, commits: tuple[str, str]) -> Path:
    """Two variants x 2 seeds x 2 lambdas; the first lambda's runs written by a version that
    recorded `train.tf32`, the second's by one that records `train.matmul_dtype` instead."""
    i = 0
    for aux in ("frozen", "trainable"):
        for lam, commit in zip((0.1, 1.0), commits, strict=True):
            for seed in (0, 1):
                cfg = config(seed=seed, **{"sae.aux_decoder": aux, "penalty.coefficient": lam})
                if lam == 0.1:
                    cfg["train"]["tf32"] = False
                else:
                    cfg["train"]["matmul_dtype"] = "tf32"
                summ = summary(cfg, l0=10 / lam, fvu=0.1 * lam)
                summ["versions"] = {"sae-sweep": "0.1.0", "git_commit": commit}
                write_job(root / str(i), cfg, summ)
                i += 1
    return root


def test_a_knob_renamed_between_code_versions_is_not_a_variant(tmp_path):
    # A sweep resumed after an upgrade: its old records hold train.tf32, its new ones
    # train.matmul_dtype. Each run still belongs to its recipe, and seeds stay paired.
    labelled, v = assign_variants(load_runs(_upgraded_sweep(tmp_path, ("c0ffee1", "c0ffee2"))))
    assert v.knobs == ["sae.aux_decoder"]
    assert labelled.groupby("variant_label").size().tolist() == [4, 4]


def test_one_version_setting_a_knob_for_some_runs_only_is_a_variant(tmp_path):
    # The same records written by one version: a knob set in some runs and null in others is
    # a setting of the sweep, so it still tells variants apart.
    _, v = assign_variants(load_runs(_upgraded_sweep(tmp_path, ("c0ffee1", "c0ffee1"))))
    assert set(v.knobs) == {"sae.aux_decoder", "train.tf32", "train.matmul_dtype"}


def test_named_variants_keep_their_names_and_knobs(tmp_path):
    variants = []
    for name, kind in (("paper", "l1"), ("anthropic", "decoder_norm")):
        for ef in (4, 8):  # a second grid axis the names do not determine
            variants.append(
                {"variant": name, "penalty.kind": kind, "sae.expansion_factor": ef,
                 "lambda_multiplier": 1.0}
            )  # fmt: skip
    runs = load_runs(_sweep(tmp_path, variants))
    labelled, v = assign_variants(runs)
    assert v.knobs[0] == "variant"
    assert set(v.order) == {
        "paper (expansion_factor=4)",
        "paper (expansion_factor=8)",
        "anthropic (expansion_factor=4)",
        "anthropic (expansion_factor=8)",
    }
    assert v.differing("paper (expansion_factor=4)", "anthropic (expansion_factor=4)") == {
        "penalty.kind": ("l1", "decoder_norm")
    }


def test_one_variant_when_nothing_varies(tmp_path):
    labelled, v = assign_variants(load_runs(_sweep(tmp_path, [{}])))
    assert v.order == ["all runs"]
    assert v.knobs == []


def test_bookkeeping_keys():
    for k in ("logger.project", "logger.name", "device", "train.checkpoint_dir", "train.log_every"):
        assert is_bookkeeping(k), k
    for k in ("sae.kind", "penalty.coefficient", "data.model_name", "data.path", "train.lr"):
        assert not is_bookkeeping(k), k


def test_not_applicable_knobs_do_not_count_against_like_with_like(tmp_path):
    runs = load_runs(
        _sweep(
            tmp_path,
            [
                {"penalty.kind": "l1", "penalty.decoder_norm_grad": None},
                {"penalty.kind": "decoder_norm", "penalty.decoder_norm_grad": "live"},
                {"penalty.kind": "decoder_norm", "penalty.decoder_norm_grad": "detached"},
            ],
        )
    )
    _, v = assign_variants(runs)
    l1, live, detached = v.order
    assert l1 == "penalty.kind=l1"  # the null knob is left out of the label
    assert live == "penalty.kind=decoder_norm, decoder_norm_grad=live"
    assert set(v.differing(l1, live)) == {"penalty.kind", "penalty.decoder_norm_grad"}
    assert v.counted(l1, live) == ["penalty.kind"]
    assert v.like_with_like(l1, live)
    assert v.counted(live, detached) == ["penalty.decoder_norm_grad"]


def test_lambda_calibration_is_not_a_recipe_difference():
    # Each variant carries its own lambda scale/exponent: they map the multiplier to the
    # coefficient and must not make two variants "differ in more than one knob".
    import pandas as pd

    from analysis.variants import varying_knobs

    df = pd.DataFrame(
        {
            "variant": ["a", "a", "b", "b"],
            "penalty.kind": ["l1", "l1", "decoder_norm", "decoder_norm"],
            "lambda_scale": [3.0, 3.0, 5.0, 5.0],
            "lambda_exponent": [1.0, 1.0, 0.8, 0.8],
            "lambda_multiplier": [1.0, 2.0, 1.0, 2.0],
            "penalty.coefficient": [3.0, 6.0, 5.0, 8.7],
            "rerun_failed": [False, False, True, True],
        }
    )
    knobs, _ = varying_knobs(df)
    assert set(knobs) == {"variant", "penalty.kind"}
