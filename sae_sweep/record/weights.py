"""Trained SAE weights as safetensors, with a JSON config beside them to rebuild the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..models import SparseAutoencoder, architecture
from . import layout
from .atomic import atomic_write_json, replace_atomically

WEIGHTS_FILE = layout.WEIGHTS
WEIGHTS_CONFIG_FILE = layout.WEIGHTS_CONFIG


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


def load_sae(directory: Path, device: str = "cpu") -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Rebuild a saved SAE; returns (sae, its sae_config.json).

    The config's `norm_scale` is the input-normalisation scalar: feed it `x * norm_scale`.
    """
    directory = Path(directory)
    config = json.loads((directory / WEIGHTS_CONFIG_FILE).read_text())
    sae = architecture(config["kind"]).model(
        config["d_in"],
        config["d_sae"],
        decoder_init_norm=1.0,  # overwritten by the saved weights
        encoder_init_transpose=False,
        generator=torch.Generator().manual_seed(0),
        **config.get("options", {}),  # records written before architectures had options: {}
    )
    sae.load_state_dict(load_file(str(directory / WEIGHTS_FILE), device=device))
    return sae.to(device), config
