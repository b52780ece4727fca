"""Memory checked before it runs out: what a training step and an evaluation batch need, and
what the device has free.

A job whose SAE, batch or evaluation batch does not fit its device was killed by the kernel
(CPU: the out-of-memory killer, no record left) or failed mid-run after training for hours
(GPU). Before training, `check_training_fits` refuses such a job with the sizes and the knobs
to lower (`train.batch_size`, `sae.d_sae` / `sae.expansion_factor`); before evaluation,
`eval_rows_that_fit` lowers the number of held-out rows per forward pass to what fits (the
metrics are sums over rows: the same result), or refuses when not even a small batch fits.

The estimates: the parameters, their gradients and Adam's two moments (4 x the parameters),
and per row of a batch `ROW_TENSORS` float tensors of width d_sae alive at once (the
pre-activations, gates, activations and what backward keeps). Measured on the CPU with a batch
of 2048 at d_sae 20000: gated 6.0 in evaluation and 7.1 in a training step, JumpReLU 6.2,
standard 3.1-3.3, TopK 1.1-3.3; the issue's gated evaluation at d_sae 200000 and 4096 rows took
24 GB, 7.3 such tensors. Free memory: on a GPU what CUDA reports free plus what PyTorch holds
unused; on the CPU /proc/meminfo's MemAvailable, lowered to the room left under the process's
cgroup limit (a container, a SLURM allocation) where there is one. Where neither can be read
nothing is checked.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger("sae_sweep")

ROW_TENSORS = 8
"""Float tensors of width d_sae alive at once per row of a batch (an upper bound of the
measurements above)."""
HEADROOM = 0.9
"""The share of the free memory a job plans to use (the allocator fragments; others allocate)."""
MIN_EVAL_ROWS = 16
"""Evaluation refuses, rather than crawl, when fewer rows than this fit at once."""


class InsufficientMemoryError(MemoryError):
    """The job would not fit its device's free memory; nothing was run."""


def free_bytes(device: torch.device) -> int | None:
    """What the device has free for this process, or None when it cannot be told."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    if device.type != "cpu":
        return None
    available = _meminfo_available()
    room = _cgroup_room()
    known = [b for b in (available, room) if b is not None]
    return min(known) if known else None


def row_bytes(sae, dtype: torch.dtype | None = None) -> int:
    """The memory one row of a batch takes in a forward pass (or a training step)."""
    itemsize = (dtype or sae.W_dec.dtype).itemsize
    return ROW_TENSORS * sae.d_sae * itemsize + 8 * sae.d_in * 8  # and a few float64 (d,) rows


def eval_rows_that_fit(sae, batch_size: int) -> int:
    """The held-out rows to evaluate per forward pass: `batch_size` (train.eval_batch_size) when
    it fits the device's free memory, else as many as fit (with a warning). Raises
    InsufficientMemoryError when fewer than MIN_EVAL_ROWS fit."""
    device = sae.W_dec.device
    free = free_bytes(device)
    per_row = row_bytes(sae)
    if free is None or batch_size * per_row <= HEADROOM * free:
        return batch_size
    fit = int(HEADROOM * free // per_row)
    if fit < MIN_EVAL_ROWS:
        raise InsufficientMemoryError(
            f"evaluating the SAE (d_sae={sae.d_sae}) needs about {_gb(per_row * MIN_EVAL_ROWS)} "
            f"for {MIN_EVAL_ROWS} held-out rows at once and {device} has {_gb(free)} free. "
            "Fix: a smaller sae.d_sae (or sae.expansion_factor), or a device with more memory."
        )
    log.warning("evaluation: train.eval_batch_size=%d rows at d_sae=%d would need about %s and "
                "%s has %s free: evaluating %d rows at a time (the same metrics)", batch_size,
                sae.d_sae, _gb(batch_size * per_row), device, _gb(free), fit)  # fmt: skip
    return fit


def check_training_fits(runs: list, batch_size: int, device: torch.device) -> None:
    """Raise InsufficientMemoryError when training these runs (`TrainingRun`s, their SAEs built
    on `device`) together on batches of `batch_size` rows would not fit its free memory."""
    free = free_bytes(device)
    if free is None or not runs:
        return
    # the parameters are allocated already; their gradients are not, nor Adam's moments (but
    # for a run restored from a checkpoint)
    state = sum(max(3 * _bytes(run.sae.parameters()) - _bytes(_optimizer_tensors(run.optimizer)),
                    0) for run in runs)  # fmt: skip
    saes = [run.sae for run in runs]
    rows = sum(batch_size * row_bytes(sae) for sae in saes)
    if state + rows <= HEADROOM * free:
        return
    widths = ", ".join(str(sae.d_sae) for sae in saes)
    raise InsufficientMemoryError(
        f"training needs about {_gb(state + rows)} on {device} ({_gb(state)} for gradients and "
        f"Adam's moments, {_gb(rows)} for a batch of train.batch_size={batch_size} rows at "
        f"d_sae={widths}) and it has {_gb(free)} free. Fix: a smaller train.batch_size or "
        "sae.d_sae (or sae.expansion_factor), fewer SAEs per job (pack) or jobs at once, or "
        "a device with more memory."
    )


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _optimizer_tensors(optimizer: torch.optim.Optimizer):
    for state in optimizer.state.values():
        yield from (v for v in state.values() if isinstance(v, torch.Tensor))


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**28 else f"{n / 2**20:.0f} MB"


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """The room left under this process's cgroup memory limit (v2, else v1), not counting
    inactive file cache (the kernel reclaims it before it kills); None without a limit."""
    for limit, usage, stat, inactive in (
        ("memory.max", "memory.current", "memory.stat", "inactive_file"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "memory/memory.stat",
         "total_inactive_file"),
    ):  # fmt: skip
        root = Path("/sys/fs/cgroup")
        try:
            text = (root / limit).read_text().strip()
            if text == "max" or int(text) >= 2**60:  # no limit
                return None
            used = int((root / usage).read_text())
            for line in (root / stat).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == inactive:
                    used -= int(value)
            return max(int(text) - used, 0)
        except (OSError, ValueError):
            continue
    return None
