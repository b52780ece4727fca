"""Trained SAE weights as safetensors, with a JSON config beside them to rebuild the model.

`load_sae` also opens SAELens-format folders (`cfg.json` + `sae_weights.safetensors`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..export.saelens import MAPPINGS, is_saelens_folder, read_saelens_folder
from ..models import SparseAutoencoder, architecture
from . import layout
from .atomic import atomic_write_json, replace_atomically

WEIGHTS_FILE = layout.WEIGHTS
WEIGHTS_CONFIG_FILE = layout.WEIGHTS_CONFIG
FIRING_FILE = layout.FIRING


def save_sae(out_dir: Path, sae: SparseAutoencoder, kind: str, meta: dict[str, Any]) -> Path:
    """Write the weights and buffers (float32 on disk) and `sae_config.json` (architecture,
    sizes, the architecture's own knobs, meta)."""
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in sae.state_dict().items()}
    path = Path(out_dir) / WEIGHTS_FILE
    with replace_atomically(path) as tmp:
        save_file(tensors, str(tmp))
    config = {"kind": architecture(kind).name, "d_in": sae.d_in, "d_sae": sae.d_sae}
    config.update(options=sae.options, **meta)
    atomic_write_json(Path(out_dir) / WEIGHTS_CONFIG_FILE, config)
    return path


def save_firing(out_dir: Path, frequency: torch.Tensor, tokens: int) -> Path:
    """Write the per-latent firing frequency (fraction of held-out tokens, (M,))."""
    path = Path(out_dir) / FIRING_FILE
    tensors = {"frequency": frequency.detach().float().cpu().contiguous(),
               "tokens": torch.tensor([tokens], dtype=torch.int64)}  # fmt: skip
    with replace_atomically(path) as tmp:
        save_file(tensors, str(tmp))
    return path


def load_sae(directory: Path, device: str = "cpu") -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Rebuild a saved SAE; returns (sae, its config).

    `directory` is a job record (config: its sae_config.json) or a SAELens folder (config:
    kind, d_in, d_sae, norm_scale 1.0 and the folder's cfg.json under `saelens_cfg`).
    The config's `norm_scale` is the input-normalisation scalar: feed it `x * norm_scale`.
    """
    directory = Path(directory)
    if not (directory / WEIGHTS_CONFIG_FILE).is_file() and is_saelens_folder(directory):
        kind, state, saelens_cfg = read_saelens_folder(directory, device)
        d_in, d_sae = state["W_dec"].shape
        ours = (saelens_cfg.get("metadata") or {}).get("sae_sweep") or {}
        options = MAPPINGS[kind].options_from_cfg(saelens_cfg)
        config = {"kind": kind, "d_in": d_in, "d_sae": d_sae, "norm_scale": 1.0, "options": options,
                  "config": ours.get("knobs", {}), "saelens_cfg": saelens_cfg}  # fmt: skip
        return _rebuild(config, state, device), config
    if not (directory / WEIGHTS_CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"{directory} holds no SAE: neither {WEIGHTS_CONFIG_FILE} + {WEIGHTS_FILE} "
            "(a sae-sweep job) nor cfg.json + sae_weights.safetensors (a SAELens folder)"
        )
    config = json.loads((directory / WEIGHTS_CONFIG_FILE).read_text())
    state = load_file(str(directory / WEIGHTS_FILE), device=device)
    return _rebuild(config, state, device), config


def _rebuild(config: dict[str, Any], state: dict[str, torch.Tensor], device: str):
    sae = architecture(config["kind"]).model(
        config["d_in"],
        config["d_sae"],
        decoder_init_norm=1.0,  # overwritten by the saved weights
        encoder_init_transpose=False,
        generator=torch.Generator().manual_seed(0),
        **config.get("options", {}),  # records written before architectures had options: {}
    )
    sae.load_state_dict(state)
    return sae.to(device).eval()  # for inference: BatchTopK then applies its threshold
