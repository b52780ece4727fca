"""Resumable training state, stored without pickle: tensors in safetensors, the rest in JSON.

A checkpoint proves its own consistency: the state file carries its step in its header,
and meta.json, written last, is its manifest: the step, and the size of each file it
belongs with. A checkpoint whose files disagree (a write killed between the state and the
manifest: meta.json of step 75 beside a state of step 100; a truncated file; files copied
from two checkpoints) is as unusable as an unreadable one.

A write killed between the state and the manifest loses nothing: the state it replaces is
kept as `state.previous.safetensors` until the new manifest is written, and a load whose
state and manifest disagree takes the previous state when that one matches the manifest
(the checkpoint before the killed write). Otherwise, a checkpoint that cannot be read or is
inconsistent fails the job with CheckpointError
naming the file, and is first moved aside to `checkpoint.damaged-<time>/` (kept for
inspection, never deleted): the re-run starts the job from step 0. Temporary files of a
write that was killed are removed when the job next loads its checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..record import layout
from ..record.atomic import atomic_write_text, remove_stale_temporaries, replace_atomically
from ..record.layout import CHECKPOINT_META as META_FILE
from ..record.layout import CHECKPOINT_STATE as STATE_FILE
from ..record.layout import CHECKPOINT_STATE_PREVIOUS as PREVIOUS_FILE

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
    state, previous = directory / STATE_FILE, directory / PREVIOUS_FILE
    if state.exists() and (directory / META_FILE).exists():
        # the state the current manifest names stays until the new manifest is written
        os.replace(state, previous)
    with replace_atomically(state) as tmp:
        save_file(flat, str(tmp), metadata={"step": str(step)})
    # meta.json, the manifest, is written last: a checkpoint without it is incomplete and is
    # ignored; one whose files do not match it is damaged (`_check_consistent`).
    files = {STATE_FILE: {"bytes": (directory / STATE_FILE).stat().st_size}}
    manifest = {"step": step, **meta, "files": files}
    atomic_write_text(directory / META_FILE, json.dumps(manifest, indent=2))
    previous.unlink(missing_ok=True)


def load_checkpoint(
    directory: Path,
    sae: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    required_extra: tuple[str, ...] = (),
    required_meta: tuple[str, ...] = (),
) -> tuple[int, dict[str, torch.Tensor], dict] | None:
    """Restore sae and optimizer in place; returns (step, extra tensors, meta) or None.

    Raises CheckpointError (after moving the folder aside) when it cannot be read or lacks
    one of `required_extra` (tensors) or `required_meta` (meta.json keys), or when its files
    do not belong together (`_check_consistent`)."""
    remove_stale_temporaries(directory)  # of a checkpoint write that was killed
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
    _take_consistent_state(directory, meta)
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
    meta.pop("files", None)
    return int(meta.pop("step")), extra, meta


class InconsistentCheckpointError(ValueError):
    """A checkpoint's files do not match its manifest (meta.json)."""


def _take_consistent_state(directory: Path, meta: dict) -> None:
    """Leave in STATE_FILE the state meta.json names: the current one, or, after a write
    killed before its manifest, the previous one (kept for that moment); raise
    InconsistentCheckpointError when neither matches."""
    previous = directory / PREVIOUS_FILE
    try:
        _check_consistent(directory, meta)
    except (InconsistentCheckpointError, FileNotFoundError) as exc:
        if not previous.exists():
            raise
        try:
            _check_consistent(directory, meta, PREVIOUS_FILE)
        except Exception:  # noqa: BLE001 -- the previous state does not help: report the first
            raise exc from None
        os.replace(previous, directory / STATE_FILE)  # the write it preceded never finished
        return
    previous.unlink(missing_ok=True)  # a write killed after its manifest: no longer needed


def _check_consistent(directory: Path, meta: dict, state_file: str = STATE_FILE) -> None:
    """Raise InconsistentCheckpointError when a file's size differs from the manifest's, or
    the state's step from meta.json's. Checkpoints of earlier versions hold neither record:
    they are taken as they are."""
    for name, expected in (meta.get("files") or {}).items():
        size = (directory / (state_file if name == STATE_FILE else name)).stat().st_size
        if size != expected.get("bytes", size):
            raise InconsistentCheckpointError(
                f"{name} holds {size} bytes, its manifest {META_FILE} says {expected['bytes']}"
            )
    with safe_open(str(directory / state_file), "pt") as state:
        stored = (state.metadata() or {}).get("step")
    if stored is not None and int(stored) != int(meta["step"]):
        raise InconsistentCheckpointError(
            f"{STATE_FILE} holds the state after step {stored} but {META_FILE} names step "
            f"{meta['step']}: a checkpoint write was interrupted, or the files come from two "
            "checkpoints"
        )


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
