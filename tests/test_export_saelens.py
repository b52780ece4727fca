"""SAELens export and import: trained SAEs opened by SAELens itself agree with sae-sweep's."""

from __future__ import annotations

import json

import pytest
import sae_lens  # a test dependency (the dev extra): these tests never skip
import torch
from conftest import small_config
from safetensors.torch import load_file

from sae_sweep.config.schema import NormGrad, PenaltyConfig, PenaltyKind
from sae_sweep.export.run import export_run, transformer_lens_hook
from sae_sweep.export.saelens import (
    MAPPINGS,
    ExportError,
    read_saelens_folder,
    write_saelens_folder,
)
from sae_sweep.job import run_job
from sae_sweep.models import ARCHITECTURES, architecture, build_sae
from sae_sweep.record.weights import load_sae

KINDS = list(ARCHITECTURES)
PENALTIES = {  # each architecture's own penalty
    "standard": PenaltyConfig(PenaltyKind.decoder_norm, 3.0, decoder_norm_grad=NormGrad.live),
    "gated": PenaltyConfig(PenaltyKind.decoder_norm, 3.0, decoder_norm_grad=NormGrad.live),
    "topk": PenaltyConfig(PenaltyKind.none, 0.0),
    "batchtopk": PenaltyConfig(PenaltyKind.none, 0.0),
    "matryoshka_batchtopk": PenaltyConfig(PenaltyKind.none, 0.0),
    "jumprelu": PenaltyConfig(PenaltyKind.l0, 0.5),
}


def _sae_config(kind: str):
    options = {"k": 6} if architecture(kind).l0_knob == "sae.k" else {}
    return architecture(kind).config(expansion_factor=4, **options)


def _config(kind: str, normalize: bool):
    return small_config(sae=_sae_config(kind), penalty=PENALTIES[kind],
                        train__normalize_input=normalize, train__steps=40)  # fmt: skip


def _imported_kind(kind: str) -> str:
    """What a SAELens folder of `kind` loads back as (BatchTopK: a JumpReLU, same outputs)."""
    arch = MAPPINGS[kind].architecture
    return next(k for k, m in MAPPINGS.items() if m.architecture == arch)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """{(kind, normalize): job folder} of finished jobs, one per architecture and norm choice."""
    jobs = {}
    for kind in KINDS:
        for normalize in (True, False):
            out = tmp_path_factory.mktemp(f"{kind}-{normalize}")
            run_job(_config(kind, normalize), out)
            jobs[kind, normalize] = out
    return jobs


def _held_out(d: int, scale: float) -> torch.Tensor:
    return torch.randn(256, d, generator=torch.Generator().manual_seed(123)) * scale


@pytest.mark.parametrize("normalize", [True, False], ids=["normalised", "raw"])
@pytest.mark.parametrize("kind", KINDS)
def test_saelens_opens_the_export_and_agrees_to_1e5(trained, tmp_path, kind, normalize):
    job = trained[kind, normalize]
    ours, config = load_sae(job)
    s = config["norm_scale"]
    assert (s != 1.0) == normalize
    folder = export_run(job, tmp_path / "export")

    theirs = sae_lens.SAE.load_from_disk(str(folder))
    assert theirs.cfg.architecture() == MAPPINGS[kind].architecture
    x = _held_out(ours.d_in, 1.0 / s)  # raw units: the SAE saw them times s
    with torch.no_grad():
        out = ours(x * s)
        f_theirs = theirs.encode(x)
        torch.testing.assert_close(f_theirs, out.f, atol=1e-5, rtol=1e-5)
        assert (out.f != 0).float().mean() > 0.01, "no latent fired: the comparison is empty"
        torch.testing.assert_close(theirs.decode(out.f), out.x_hat / s, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(theirs(x), out.x_hat / s, atol=1e-5, rtol=1e-5)

    # and back: load_sae opens the SAELens folder, scalar folded (norm_scale 1)
    back, back_config = load_sae(folder)
    assert back_config["kind"] == _imported_kind(kind) and back_config["norm_scale"] == 1.0
    assert back_config["config"]["sae.kind"] == kind
    with torch.no_grad():
        torch.testing.assert_close(back(x).f, out.f, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(back(x).x_hat, out.x_hat / s, atol=1e-5, rtol=1e-5)


def test_cfg_json_holds_what_saelens_and_saebench_read(trained, tmp_path):
    folder = export_run(trained["gated", True], tmp_path / "e")
    cfg = json.loads((folder / "cfg.json").read_text())
    for key in ("architecture", "d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input",
                "normalize_activations", "metadata"):  # fmt: skip
        assert key in cfg, key
    assert cfg["normalize_activations"] == "none" and cfg["apply_b_dec_to_input"] is True
    meta = cfg["metadata"]
    for key in ("sae_lens_version", "model_name", "hook_name", "context_size", "prepend_bos",
                "dataset_path"):  # fmt: skip
        assert key in meta, key
    assert meta["sae_sweep"]["knobs"]["penalty.coefficient"] == 3.0
    tensors = load_file(str(folder / "sae_weights.safetensors"))
    assert set(tensors) == {"W_enc", "W_dec", "b_dec", "b_gate", "b_mag", "r_mag"}
    assert tensors["W_enc"].shape == (cfg["d_in"], cfg["d_sae"])
    assert tensors["W_dec"].shape == (cfg["d_sae"], cfg["d_in"])
    # the job recorded its latents' firing: exported as SAELens's log10 sparsity
    sparsity = load_file(str(folder / "sparsity.safetensors"))["sparsity"]
    assert sparsity.shape == (cfg["d_sae"],) and (sparsity <= 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_import_folds_b_dec_when_saelens_does_not_subtract_it(tmp_path, kind):
    """A SAELens SAE with apply_b_dec_to_input=false loads with the same outputs."""
    sae = build_sae(_sae_config(kind), d_in=8, seed=1)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.3 * torch.randn_like(p))
    sae.eval()  # BatchTopK: inference by its threshold
    if kind in ("batchtopk", "matryoshka_batchtopk"):
        sae.threshold.fill_(0.2)
    if kind == "jumprelu":  # thresholds are >= 0, as training keeps them
        sae.threshold.data.abs_()
    folder = write_saelens_folder(tmp_path, sae.state_dict(), kind, 1.0, {}, sae.options)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["apply_b_dec_to_input"] = False
    (folder / "cfg.json").write_text(json.dumps(cfg))
    theirs = sae_lens.SAE.load_from_disk(str(folder))
    ours, _ = load_sae(folder)
    x = torch.randn(64, 8)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).f, theirs.encode(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours(x).x_hat, theirs(x), atol=1e-5, rtol=1e-5)


def test_unsupported_saelens_folders_are_refused_with_the_fix(tmp_path):
    sae = build_sae(_sae_config("standard"), d_in=4, seed=0)
    folder = write_saelens_folder(tmp_path, sae.state_dict(), "standard", 1.0, {})
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "normalize_activations": "layer_norm"}))
    with pytest.raises(ExportError, match="fold"):
        read_saelens_folder(folder)
    (folder / "cfg.json").write_text(json.dumps({**cfg, "architecture": "matching_pursuit"}))
    with pytest.raises(ExportError, match="no sae-sweep counterpart"):
        read_saelens_folder(folder)
    with pytest.raises(ExportError, match="holds no trained SAE"):
        export_run(tmp_path / "nothing", tmp_path / "out")


def test_hf_sites_map_to_transformer_lens_hooks():
    assert transformer_lens_hook("transformer.h.3") == "blocks.3.hook_resid_post"
    assert transformer_lens_hook("model.layers.0") == "blocks.0.hook_resid_post"
    assert transformer_lens_hook("model.layers.2.mlp") == "blocks.2.hook_mlp_out"
    assert transformer_lens_hook("transformer.h.1.attn") == "blocks.1.hook_attn_out"
    assert transformer_lens_hook("encoder.embeddings") is None
