"""Resumable training state, stored without pickle: tensors in safetensors, the rest in JSON."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..record.atomic import atomic_write_text, replace_atomically
from ..record.layout import CHECKPOINT_META as META_FILE
from ..record.layout import CHECKPOINT_STATE as STATE_FILE


def save_checkpoint(
    directory: Path,
    *,
    step: int,
    sae: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    meta: dict,
) -> None:
    """Write everything needed to continue from `step` (the number of completed steps)."""
    directory.mkdir(parents=True, exist_ok=True)
    flat = {f"sae.{k}": v for k, v in sae.state_dict().items()}
    names = {id(p): n for n, p in sae.named_parameters()}
    for param, state in optimizer.state.items():
        for key, value in state.items():
            flat[f"optim.{names[id(param)]}.{key}"] = torch.as_tensor(value)
    flat.update({f"extra.{k}": v for k, v in tensors.items()})
    flat = {k: v.detach().cpu().contiguous() for k, v in flat.items()}
    with replace_atomically(directory / STATE_FILE) as tmp:
        save_file(flat, str(tmp))
    # meta.json is written last: a checkpoint without it is incomplete and is ignored.
    atomic_write_text(directory / META_FILE, json.dumps({"step": step, **meta}, indent=2))


def load_checkpoint(
    directory: Path, sae: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, dict[str, torch.Tensor], dict] | None:
    """Restore sae and optimizer in place; returns (step, extra tensors, meta) or None."""
    if not (directory / META_FILE).exists():
        return None
    meta = json.loads((directory / META_FILE).read_text())
    flat = load_file(str(directory / STATE_FILE))
    device = next(sae.parameters()).device
    sae.load_state_dict({k[4:]: v for k, v in flat.items() if k.startswith("sae.")})
    for name, param in sae.named_parameters():
        state = {
            k.rsplit(".", 1)[1]: v.to(device) if not k.endswith(".step") else v
            for k, v in flat.items()
            if k.startswith(f"optim.{name}.")
        }
        if state:
            optimizer.state[param] = state
    extra = {k[6:]: v.to(device) for k, v in flat.items() if k.startswith("extra.")}
    return meta.pop("step"), extra, meta
