"""Matryoshka BatchTopK: every prefix reconstructs, the loss is SAELens's, gradients are exact,
its prefix knobs are checked, it trains at L0 = k, and it exports as SAELens exports it."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import small_config
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from sae_lens import SAE
from sae_lens.saes.matryoshka_batchtopk_sae import (
    MatryoshkaBatchTopKTrainingSAE,
    MatryoshkaBatchTopKTrainingSAEConfig,
)
from sae_lens.saes.sae import TrainStepInput
from safetensors.torch import load_file
from test_architectures import _coords, finite_difference_check, random_sae

from sae_sweep.config import ConfigError
from sae_sweep.config.schema import PenaltyConfig, PenaltyKind
from sae_sweep.export.saelens import write_saelens_folder
from sae_sweep.job import run_job
from sae_sweep.main import CONF_DIR
from sae_sweep.models import architecture, build_sae, validate
from sae_sweep.models.matryoshka import prefix_widths
from sae_sweep.penalties import make_penalty

KIND = "matryoshka_batchtopk"
NO_PENALTY = make_penalty(PenaltyConfig(kind=PenaltyKind.none, coefficient=0.0))


def matryoshka(d=6, M=16, k=3, sizes=(2, 4, 8, 16), dtype=torch.float64, **options):
    """A Matryoshka SAE with randomly perturbed weights, prefixes `sizes`."""
    return random_sae(KIND, d=d, M=M, dtype=dtype, k=k, prefix_sizes=list(sizes), **options)


def loss(sae, x):
    return sae.loss_terms(x, sae(x), NO_PENALTY, 0.0)


def test_loss_gradients_match_float64_finite_differences():
    sae = matryoshka()
    x = torch.randn(8, 6, dtype=torch.float64)
    names = [n for n, _ in sae.named_parameters()]
    finite_difference_check(sae, lambda: loss(sae, x).total, _coords(sae, names, n=8))


def test_auxk_gradients_on_dead_latents_match_finite_differences():
    sae = matryoshka(dead_tokens=10, k_aux=4)
    x = torch.randn(8, 6, dtype=torch.float64)
    selected = (sae(x).f != 0).any(0)
    sae.tokens_since_fired.masked_fill_(~selected, 100)  # the unselected latents are dead
    assert loss(sae, x).aux.item() > 0
    dead = (~selected).nonzero().squeeze(1)[:4].tolist()
    coords = [("W_enc", (i, j)) for i in dead for j in (0, 3)] + [("b_enc", (i,)) for i in dead]
    coords += [("W_dec", (j, i)) for i in dead for j in (1, 4)]
    finite_difference_check(sae, lambda: loss(sae, x).total, coords)


@pytest.mark.parametrize("group", [0, 1, 2, 3])
def test_each_prefix_reconstruction_enters_the_loss(group):
    """Three latents fire: one in the first group writes x, one in `group` writes +u and one
    in the next group writes -u. Every prefix then reconstructs x exactly except the one that
    ends with `group` (x + u): the loss is ||u||^2, that prefix's term and nothing else."""
    sizes = (2, 4, 8, 16)
    sae = matryoshka(d=4, M=16, k=3, sizes=sizes)
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0]], dtype=torch.float64)
    u = torch.tensor([0.0, 1.5, -1.0, 0.25], dtype=torch.float64)
    starts = (0, *sizes[:-1])
    writer, plus = 0, starts[group] + 1
    firing = {writer: x[0], plus: u}
    if group + 1 < len(sizes):
        firing[starts[group + 1] + 1] = -u
    with torch.no_grad():  # pre = b_enc: +1 on the firing latents, -1 elsewhere
        sae.W_enc.zero_(), sae.b_dec.zero_(), sae.W_dec.zero_()
        sae.b_enc.fill_(-1.0)
        for latent, column in firing.items():
            sae.b_enc[latent] = 1.0
            sae.W_dec[:, latent] = column
    if group + 1 == len(sizes):  # the last group has no successor: the 3rd latent writes 0
        with torch.no_grad():
            sae.b_enc[starts[1]] = 1.0
    terms = loss(sae, x)
    assert terms.aux.item() == 0
    torch.testing.assert_close(terms.total, u.pow(2).sum())
    whole = u.pow(2).sum() if group == len(sizes) - 1 else torch.zeros((), dtype=x.dtype)
    torch.testing.assert_close(terms.recon, whole)  # recon: the whole dictionary's only


def _saelens_twin(ours, sizes, threshold=0.0):
    cfg = MatryoshkaBatchTopKTrainingSAEConfig(
        d_in=ours.d_in, d_sae=ours.d_sae, k=ours.k, matryoshka_widths=list(sizes),
        rescale_acts_by_decoder_norm=False, dtype="float32", device="cpu",
    )  # fmt: skip
    theirs = MatryoshkaBatchTopKTrainingSAE(cfg)
    theirs.load_state_dict({
        "W_enc": ours.W_enc.detach().T.clone(), "b_enc": ours.b_enc.detach().clone(),
        "W_dec": ours.W_dec.detach().T.clone(), "b_dec": ours.b_dec.detach().clone(),
        "topk_threshold": torch.tensor(threshold, dtype=torch.double),
    })  # fmt: skip
    return theirs


@pytest.mark.parametrize("dead", [False, True], ids=["alive", "dead-latents"])
def test_loss_and_latents_equal_saelens_matryoshka_training_sae(dead):
    """SAELens sums the prefixes' squared errors (per input over d, mean over the batch), as
    the paper's equation does: its loss is ours, AuxK included under SAELens's weighting."""
    sizes = (4, 8, 16, 32)
    ours = matryoshka(d=8, M=32, k=3, sizes=sizes, dtype=torch.float32,
                      aux_weighting="saelens", aux_coefficient=1.0, dead_tokens=10)  # fmt: skip
    dead_mask = torch.zeros(32, dtype=torch.bool)
    if dead:
        dead_mask[1::3] = True
        ours.tokens_since_fired.masked_fill_(dead_mask, 100)
    theirs = _saelens_twin(ours, sizes)
    x = torch.randn(64, 8)
    step = TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead_mask,
                          n_training_steps=0, is_logging_step=False)  # fmt: skip
    out = theirs.training_forward_pass(step)
    assert {k for k in out.losses if k.startswith("inner_mse_loss")} == {
        f"inner_mse_loss_{w}" for w in sizes[:-1]
    }
    mine = ours(x)
    torch.testing.assert_close(mine.f, out.feature_acts)
    terms = loss(ours, x)
    assert (terms.aux.item() > 0) == dead
    # float32, the same sums in another order
    torch.testing.assert_close(terms.aux, out.losses["auxiliary_reconstruction_loss"], rtol=1e-4,
                               atol=1e-5)  # fmt: skip
    torch.testing.assert_close(terms.total, out.loss, rtol=1e-5, atol=1e-4)


def test_export_is_what_saelens_writes_for_its_own_matryoshka_sae(tmp_path):
    """SAELens saves a trained Matryoshka BatchTopK SAE as a JumpReLU with every threshold at
    the learned global one; ours writes the same tensors, and SAELens reads both the same."""
    sizes = (4, 8, 16, 32)
    ours = matryoshka(d=8, M=32, k=3, sizes=sizes, dtype=torch.float32)
    ours.threshold.fill_(0.25)
    theirs = _saelens_twin(ours, sizes, threshold=0.25)
    theirs.save_inference_model(tmp_path / "saelens")
    write_saelens_folder(tmp_path / "ours", ours.state_dict(), KIND, 1.0, {}, ours.options)

    for name in ("saelens", "ours"):
        assert json.loads((tmp_path / name / "cfg.json").read_text())["architecture"] == "jumprelu"
    want = load_file(str(tmp_path / "saelens" / "sae_weights.safetensors"))
    got = load_file(str(tmp_path / "ours" / "sae_weights.safetensors"))
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name].float(), msg=name)
    x = torch.randn(128, 8)
    a, b = SAE.load_from_disk(str(tmp_path / "saelens")), SAE.load_from_disk(str(tmp_path / "ours"))
    ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(b.encode(x), ours(x).f, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b(x), a(x))


def test_trains_on_synthetic_data_at_l0_k(tmp_path):
    cfg = small_config(train__steps=160, train__log_every=40, train__checkpoint_every=0)
    cfg.sae = architecture(KIND).config(expansion_factor=4, k=4)
    cfg.penalty = PenaltyConfig(kind=PenaltyKind.none, coefficient=0.0)
    summary = run_job(cfg, tmp_path)
    assert summary["status"] == "done" and summary["loss_paths"] == ["sparse"]
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if "train/l0" in r]
    assert [r["train/l0"] for r in train] == [4.0] * 4  # k x B of each batch: mean L0 = k
    assert train[-1]["train/loss"] > 2 * train[-1]["train/recon"]  # the 4 inner prefixes count
    assert train[-1]["train/fvu"] < 0.5 * train[0]["train/fvu"]
    assert 2 < summary["l0"] < 6 and summary["fvu"] < 0.4  # evaluation: the threshold's L0


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return OmegaConf.to_object(compose(config_name="config", overrides=list(overrides)))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["sae.prefix_fractions=[0.5,0.25,1.0]"], r"prefix_fractions=.* strictly increasing"),
        (["sae.prefix_fractions=[0.25,0.5]"], r"prefix_fractions=.* must end with 1\.0"),
        (["sae.prefix_fractions=[]"], r"prefix_fractions=\[\] is empty"),
        (["sae.prefix_fractions=[0,1.0]"], r"every fraction must lie in \(0, 1\]"),
        (["sae.prefix_sizes=[64,128]"], r"prefix_sizes=.* Fix: set sae\.d_sae=128"),
        (["sae.d_sae=256", "sae.prefix_sizes=[64,128]"], r"must end with .* d_sae=256"),
        (["sae.d_sae=256", "sae.prefix_sizes=[64,64,256]"], r"strictly increasing"),
    ],
)
def test_prefix_knobs_are_validated_naming_the_fix(overrides, message):
    cfg = _compose(f"sae={KIND}", *overrides)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_the_preset_and_its_default_prefixes_compose():
    cfg = _compose(f"variant={KIND}", "lambda_multiplier=2")
    validate(cfg)
    sae = build_sae(cfg.sae, d_in=64, seed=0)
    assert sae.prefix_sizes == (32, 64, 128, 256, 512) and 1 <= sae.k < 58
    assert _compose(f"sae={KIND}", "sae.d_sae=96", "sae.prefix_sizes=[8,32,96]").sae.d_sae == 96


def test_prefixes_that_round_together_fail_at_build_with_the_fix():
    with pytest.raises(ValueError, match=r"\[1, 1, 8\].*strictly increasing.*larger dictionary"):
        prefix_widths(8, [0.01, 0.05, 1.0])
    assert prefix_widths(512, [1 / 16, 1 / 8, 1.0]) == (32, 64, 512)
    assert prefix_widths(100, [0.1], sizes=[10, 30, 100]) == (10, 30, 100)
