"""The SAELens folder format (v6): cfg.json + sae_weights.safetensors (+ sparsity.safetensors).

Each architecture's mapping is one `SAELensMapping` entry in `MAPPINGS`, keyed by the
sae-sweep architecture name. An entry converts tensors both ways; the shared parts (decoder
transpose, folding the normalisation scalar) live in the two functions that use the table.

Folding the input-normalisation scalar s. The sae-sweep SAE is trained on x' = s x and its
reconstruction is read back as x_hat = x_hat'(s x) / s. Every encoder of ours is affine in
(x' - b_dec) = s (x - b_dec / s), so with
    W_enc* = s W_enc,   b_dec* = b_dec / s,   W_dec* = W_dec / s
and every per-latent parameter (b_enc, b_gate, b_mag, r_mag, thresholds, k) unchanged:
    pre*(x)  = W_enc* (x - b_dec*) + b_enc = pre(s x)       the latents are identical,
    x_hat*   = W_dec* f + b_dec* = (W_dec f + b_dec) / s     the output is in raw units.
The exported SAE takes the model's raw activations, its latents equal sae-sweep's on s x,
and its reconstruction equals sae-sweep's divided by s. `normalize_activations` is "none".
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..models.jumprelu import threshold_from_log
from ..record.atomic import atomic_write_json, replace_atomically

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
FORMAT_VERSION = "6.0.0"
"""The SAELens major version whose layout this module writes (used when SAELens is absent)."""

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class SAELensMapping:
    """How one architecture's encoder parameters map to SAELens's (the decoder is shared).

    Both functions see encoder-side tensors only, in SAELens's layout (`W_enc` is (d_in, d_sae)),
    in the units of the SAE's input: the scalar folding happens outside.
    """

    architecture: str
    """SAELens `architecture` in cfg.json."""
    to_saelens: Callable[[Tensors], Tensors]
    """sae-sweep encoder tensors (W_enc already (d_in, d_sae)) -> SAELens tensors."""
    from_saelens: Callable[[Tensors, torch.Tensor | None], Tensors]
    """SAELens encoder tensors, and b_dec when SAELens does not subtract it from the input
    (apply_b_dec_to_input false; ours always does, so it is folded into the biases)."""
    encoder_name: str
    """The sae-sweep name of the (M, d) encoder matrix, stored transposed as W_enc."""
    extra_cfg: Callable[[dict[str, Any]], dict[str, Any]] = lambda options: {}
    """Architecture fields of cfg.json from the model's options (sae_config.json's `options`;
    TopK: {"k": options["k"]})."""
    options_from_cfg: Callable[[dict[str, Any]], dict[str, Any]] = lambda cfg: {}
    """The model's options from a SAELens cfg.json (the reverse of `extra_cfg`)."""


def _standard_from(t: Tensors, b_dec: torch.Tensor | None) -> Tensors:
    b_enc = t["b_enc"] if b_dec is None else t["b_enc"] + b_dec @ t["W_enc"]
    return {"b_enc": b_enc}


def _gated_from(t: Tensors, b_dec: torch.Tensor | None) -> Tensors:
    out = {"b_gate": t["b_gate"], "b_mag": t["b_mag"], "r_mag": t["r_mag"]}
    if b_dec is not None:  # pi = W (x - b_dec) + b  <=>  W x + (b - W b_dec); here the reverse
        shift = b_dec @ t["W_enc"]
        out["b_gate"] = t["b_gate"] + shift
        out["b_mag"] = t["b_mag"] + shift * t["r_mag"].exp()
    return out


def _topk_from(t: Tensors, b_dec: torch.Tensor | None) -> Tensors:
    # SAELens keeps no dead-latent counters (AuxK is training-only): start them at 0
    return {**_standard_from(t, b_dec), "tokens_since_fired": torch.zeros_like(t["b_enc"])}


def _jumprelu_from(t: Tensors, b_dec: torch.Tensor | None) -> Tensors:
    return {**_standard_from(t, b_dec), "threshold": t["threshold"]}


def _jumprelu_to(t: Tensors) -> Tensors:
    t = dict(t)
    threshold_from_log(t)  # records of earlier versions hold log_threshold
    return {"b_enc": t["b_enc"], "threshold": t["threshold"]}


def _batchtopk_to(t: Tensors) -> Tensors:
    """At inference BatchTopK is pre * 1[pre > theta] with one global theta (clamped at 0, as
    the model does): a JumpReLU whose every threshold is theta, as SAELens exports it too."""
    theta = t["threshold"].clamp_min(0.0).expand_as(t["b_enc"])
    return {"b_enc": t["b_enc"], "threshold": theta.contiguous()}


MAPPINGS: dict[str, SAELensMapping] = {
    "standard": SAELensMapping(
        "standard",
        to_saelens=lambda t: {"b_enc": t["b_enc"]},
        from_saelens=_standard_from,
        encoder_name="W_enc",
    ),
    "gated": SAELensMapping(
        "gated",
        to_saelens=lambda t: {"b_gate": t["b_gate"], "b_mag": t["b_mag"], "r_mag": t["r_mag"]},
        from_saelens=_gated_from,
        encoder_name="W_gate",
    ),
    "topk": SAELensMapping(
        "topk",
        to_saelens=lambda t: {"b_enc": t["b_enc"]},
        from_saelens=_topk_from,
        encoder_name="W_enc",
        # SAELens: top k of the pre-activations, then ReLU, as ours
        extra_cfg=lambda options: {"k": int(options["k"]), "rescale_acts_by_decoder_norm": False},
        options_from_cfg=lambda cfg: {"k": int(cfg["k"])},
    ),
    "jumprelu": SAELensMapping(
        "jumprelu",
        to_saelens=_jumprelu_to,
        from_saelens=_jumprelu_from,
        encoder_name="W_enc",
    ),
    # after jumprelu: a SAELens jumprelu folder imports as our JumpReLU (same outputs)
    "batchtopk": SAELensMapping(
        "jumprelu",
        to_saelens=_batchtopk_to,
        from_saelens=_jumprelu_from,
        encoder_name="W_enc",
    ),
    # the prefixes shape training only; at inference it is BatchTopK's global threshold, and
    # SAELens saves its own Matryoshka BatchTopK SAEs as this same JumpReLU
    "matryoshka_batchtopk": SAELensMapping(
        "jumprelu",
        to_saelens=_batchtopk_to,
        from_saelens=_jumprelu_from,
        encoder_name="W_enc",
    ),
}


class ExportError(ValueError):
    """A folder that cannot be written or read in the SAELens format; the message says why."""


def write_saelens_folder(
    out_dir: Path,
    state: Tensors,
    kind: str,
    norm_scale: float,
    metadata: dict[str, Any],
    options: dict[str, Any] | None = None,
    firing_frequency: torch.Tensor | None = None,
) -> Path:
    """Write one SAE as a SAELens folder, the scalar `norm_scale` folded in (module docstring).

    state: sae-sweep's state dict (W_dec (d, M), encoder (M, d)); metadata: cfg.json's
    `metadata` (model_name, hook_name, ...). firing_frequency: (M,) fraction of held-out
    tokens on which each latent fired, written as log10 to `sparsity.safetensors`.
    """
    mapping = _mapping(kind)
    s = float(norm_scale)
    if not (math.isfinite(s) and s > 0):
        raise ExportError(f"norm_scale={norm_scale!r} is not a positive number: cannot fold it")
    state = {k: v.detach().float().cpu() for k, v in state.items()}
    d_in, d_sae = state["W_dec"].shape
    encoder = {k: v for k, v in state.items() if k not in ("W_dec", "b_dec")}
    encoder["W_enc"] = encoder.pop(mapping.encoder_name).T * s
    tensors = {
        "W_enc": encoder["W_enc"],
        **mapping.to_saelens(encoder),
        "W_dec": state["W_dec"].T / s,
        "b_dec": state["b_dec"] / s,
    }
    cfg = {
        "architecture": mapping.architecture,
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        **mapping.extra_cfg(options or {}),
        "metadata": {"sae_lens_version": _saelens_version(), **metadata},
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with replace_atomically(out_dir / WEIGHTS_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    if firing_frequency is not None:
        log10 = torch.log10(firing_frequency.detach().float().cpu() + 1e-10)  # as SAELens writes
        with replace_atomically(out_dir / SPARSITY_FILE) as tmp:
            save_file({"sparsity": log10.contiguous()}, str(tmp))
    atomic_write_json(out_dir / CFG_FILE, cfg)
    return out_dir


def is_saelens_folder(directory: Path) -> bool:
    return (Path(directory) / CFG_FILE).is_file() and (Path(directory) / WEIGHTS_FILE).is_file()


def read_saelens_folder(directory: Path, device: str = "cpu") -> tuple[str, Tensors, dict]:
    """(sae-sweep kind, sae-sweep state dict, cfg.json) of a SAELens folder (any producer)."""
    directory = Path(directory)
    cfg = json.loads((directory / CFG_FILE).read_text())
    arch = cfg.get("architecture", "standard")  # SAELens's own default for old folders
    kind = next((k for k, m in MAPPINGS.items() if m.architecture == arch), None)
    if kind is None:
        raise ExportError(
            f"{directory}: SAELens architecture {arch!r} has no sae-sweep counterpart "
            f"(supported: {sorted(m.architecture for m in MAPPINGS.values())})."
        )
    norm = cfg.get("normalize_activations", "none")
    if norm != "none":
        raise ExportError(
            f"{directory}: normalize_activations={norm!r} is applied at run time by SAELens and "
            "cannot be loaded as fixed weights. Fix: fold it in SAELens first "
            "(e.g. sae.fold_activation_norm_scaling_factor(s)) and save the folder again."
        )
    if cfg.get("reshape_activations", "none") != "none":
        raise ExportError(f"{directory}: reshape_activations must be 'none' to load it here")
    t = {k: v.float() for k, v in load_file(str(directory / WEIGHTS_FILE), device=device).items()}
    _check_cfg_matches_weights(directory, cfg, t)
    mapping = MAPPINGS[kind]
    b_dec_to_fold = None if cfg.get("apply_b_dec_to_input", True) else t["b_dec"]
    state = {
        mapping.encoder_name: t["W_enc"].T.contiguous(),
        **mapping.from_saelens(t, b_dec_to_fold),
        "W_dec": t["W_dec"].T.contiguous(),
        "b_dec": t["b_dec"],
    }
    return kind, state, cfg


def _check_cfg_matches_weights(directory: Path, cfg: dict[str, Any], t: Tensors) -> None:
    """cfg.json's d_in / d_sae must be the weights' shape: a folder whose cfg.json was
    edited, or copied from another SAE, would otherwise load with a false description."""
    if "W_enc" not in t or t["W_enc"].ndim != 2:
        raise ExportError(f"{directory / WEIGHTS_FILE}: no 2-D W_enc; not a SAELens SAE")
    d_in, d_sae = t["W_enc"].shape
    wrong = [f"{key}={cfg[key]!r} but the weights have {key}={actual}"
             for key, actual in (("d_in", d_in), ("d_sae", d_sae))
             if key in cfg and cfg[key] != actual]  # fmt: skip
    if wrong:
        raise ExportError(
            f"{directory}: {CFG_FILE} disagrees with {WEIGHTS_FILE}: {'; '.join(wrong)}. Fix: "
            f"write the folder again from its SAE, or correct {CFG_FILE}."
        )


def _mapping(kind: str) -> SAELensMapping:
    if kind not in MAPPINGS:
        raise ExportError(
            f"no SAELens mapping for architecture {kind!r} (have: {sorted(MAPPINGS)}). "
            "Fix: add its entry to sae_sweep/export/saelens.py MAPPINGS."
        )
    return MAPPINGS[kind]


def _saelens_version() -> str:
    try:
        return metadata.version("sae-lens")
    except metadata.PackageNotFoundError:
        return FORMAT_VERSION
