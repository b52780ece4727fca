"""Resumable training state, stored without pickle: tensors in safetensors, the rest in JSON.

A checkpoint that cannot be read (damaged file, disk error) fails the job with
CheckpointError naming the file, and is first moved aside to `checkpoint.damaged-<time>/`
(kept for inspection, never deleted): the re-run starts the job from step 0.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..record import layout
from ..record.atomic import atomic_write_text, replace_atomically
from ..record.layout import CHECKPOINT_META as META_FILE
from ..record.layout import CHECKPOINT_STATE as STATE_FILE

DAMAGED_SUFFIX = layout.CHECKPOINT_DAMAGED_SUFFIX
"""A damaged checkpoint folder is renamed to `<folder>.damaged-<YYYYmmdd-HHMMSS>`."""


class CheckpointError(RuntimeError):
    """The job's checkpoint cannot be read; it was moved aside so that a re-run starts afresh."""


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
    directory: Path,
    sae: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    required_extra: tuple[str, ...] = (),
    required_meta: tuple[str, ...] = (),
) -> tuple[int, dict[str, torch.Tensor], dict] | None:
    """Restore sae and optimizer in place; returns (step, extra tensors, meta) or None.

    Raises CheckpointError (after moving the folder aside) when it cannot be read or lacks
    one of `required_extra` (tensors) or `required_meta` (meta.json keys)."""
    if not (directory / META_FILE).exists():
        return None
    try:
        return _restore(directory, sae, optimizer, required_extra, required_meta)
    except Exception as exc:  # noqa: BLE001 -- truncated, corrupt, wrong shapes: all unusable
        kept = quarantine(directory)
        raise CheckpointError(
            f"the checkpoint {directory} cannot be read ({type(exc).__name__}: {exc}). It was "
            f"moved to {kept} (kept, not deleted). Fix: run the job again and it starts from "
            "step 0 (in a sweep: the same command with rerun_failed=true)."
        ) from exc


def quarantine(directory: Path) -> Path:
    """Rename a damaged checkpoint folder aside; returns its new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = directory.with_name(f"{directory.name}{DAMAGED_SUFFIX}{stamp}"), 1
    while target.exists():
        target, n = directory.with_name(f"{directory.name}{DAMAGED_SUFFIX}{stamp}~{n}"), n + 1
    os.rename(directory, target)
    return target


def _restore(directory, sae, optimizer, required_extra, required_meta):
    meta = json.loads((directory / META_FILE).read_text())
    flat = load_file(str(directory / STATE_FILE))
    device = next(sae.parameters()).device
    sae.load_state_dict({k[4:]: v for k, v in flat.items() if k.startswith("sae.")})
    optimizer.load_state_dict(_optimizer_state_dict(flat, sae, optimizer))
    extra = {k[6:]: v.to(device) for k, v in flat.items() if k.startswith("extra.")}
    for key in required_extra:  # a checkpoint missing them is as unusable as a corrupt one
        if key not in extra:
            raise KeyError(f"{STATE_FILE} lacks the tensor {key!r}")
    for key in required_meta:
        if key not in meta:
            raise KeyError(f"{META_FILE} lacks {key!r}")
    return int(meta.pop("step")), extra, meta


def _optimizer_state_dict(flat: dict[str, torch.Tensor], sae, optimizer) -> dict:
    """The optimizer's own state_dict, its per-parameter state replaced by the stored tensors.

    Loading goes through `optimizer.load_state_dict` because it puts each tensor where the
    optimizer's update reads it: moments on the parameter's device and dtype, Adam's `step`
    on the device for the fused and capturable kernels (on the CPU otherwise). Stored
    tensors are named by parameter, so a checkpoint does not depend on parameter order.
    """
    current = optimizer.state_dict()
    index = {id(p): i for i, p in enumerate(q for g in optimizer.param_groups for q in g["params"])}
    state = {}
    for name, param in sae.named_parameters():
        prefix = f"optim.{name}."
        entry = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
        if entry:
            state[index[id(param)]] = entry
    return {"state": state, "param_groups": current["param_groups"]}
