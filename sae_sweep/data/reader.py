"""Memory-mapped activation shards, read in a shuffled order that is a pure function of the step.

Shards (.npy, .safetensors, or .pt loaded with weights_only=True) are mapped, not loaded: a
cache larger than RAM streams from disk. The training rows are cut into chunks of
contiguous rows; each epoch visits the chunks in a seeded random order, taken `buffer`
rows at a time (a window of chunks from all over the data), and shuffles the rows inside
each window. So every row is read exactly once per epoch, at most one window (plus the one
a batch may straddle into) is held in RAM, and the rows of step s are fixed by
(seed, s): a resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .prefetch import WindowLoader
from .source import DataError

log = logging.getLogger("sae_sweep")
_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.int16, "F64": np.float64}


class Shard:
    """One (rows, d) file, memory-mapped; `read(a, b)` copies rows a..b-1 as a tensor."""

    def __init__(self, path: Path, key: str | None = None, bfloat16: bool = False):
        self.path = Path(path)
        suffix = self.path.suffix
        if suffix not in (".npy", ".safetensors", ".pt"):
            raise DataError(f"{self.path}: not a .npy, .safetensors or .pt file")
        try:
            if suffix == ".npy":
                self._data = np.load(self.path, mmap_mode="r")
            elif suffix == ".safetensors":
                self._data, bfloat16 = _map_safetensors(self.path, key)
            else:
                self._data = _load_torch(self.path, key)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 -- truncated, empty, corrupt: each parser differs
            raise DataError(
                f"activation shard {self.path} cannot be read ({type(exc).__name__}: {exc}): "
                "it is empty, truncated or not a valid file of its format. Fix: rewrite or "
                "remove it."
            ) from exc
        self.bfloat16 = bfloat16
        data = self._data
        floating = data.is_floating_point() if isinstance(data, torch.Tensor) else (
            bfloat16 or np.issubdtype(data.dtype, np.floating)
        )  # fmt: skip
        if not floating:  # .npy only: the other formats check on loading
            raise DataError(
                f"activation shard {self.path} holds {self._data.dtype} values, not floats "
                "(token ids, or activations saved in the wrong type?). Fix: save the "
                "activations as float32, float16 or bfloat16, or move the file out of data.path."
            )
        if self._data.ndim != 2:
            raise DataError(
                f"activation shard {self.path} has shape {tuple(self._data.shape)}: "
                "expected (rows, d)"
            )
        self.rows, self.d = (int(n) for n in self._data.shape)

    def read(self, start: int, stop: int) -> torch.Tensor:
        part = self._data[start:stop]
        if isinstance(part, torch.Tensor):
            return part.clone()
        x = torch.from_numpy(np.array(part))  # the copy pages in just these rows
        return x.view(torch.bfloat16) if self.bfloat16 else x

    @property
    def dtype(self) -> torch.dtype:
        if isinstance(self._data, torch.Tensor):
            return self._data.dtype
        if self.bfloat16:
            return torch.bfloat16
        return torch.from_numpy(np.empty(0, self._data.dtype)).dtype

    def read_into(self, out: torch.Tensor, start: int, stop: int) -> None:
        """Copy rows start..stop-1 into `out` (a CPU tensor of this shard's dtype), in place."""
        part = self._data[start:stop]
        if isinstance(part, torch.Tensor) or out.dtype != self.dtype:  # mixed shards: cast
            out.copy_(self.read(start, stop) if out.dtype != self.dtype else part)
        else:  # the copy pages in just these rows, straight into `out` (pinned, perhaps)
            np.copyto((out.view(torch.int16) if self.bfloat16 else out).numpy(), part)


class Rows:
    """Rows lo..hi-1 of the concatenation of shards, as one indexable range."""

    def __init__(self, shards: list[Shard], lo: int = 0, hi: int | None = None):
        if not shards:
            raise DataError("no activation shards to read")
        ds = {s.d for s in shards}
        if len(ds) != 1:
            detail = ", ".join(f"{s.path.name}: d={s.d}" for s in shards)
            raise DataError(f"activation shards disagree on d ({detail})")
        self.shards, self.d = shards, ds.pop()
        self.offsets = np.cumsum([0] + [s.rows for s in shards])
        self.lo, self.hi = lo, int(self.offsets[-1]) if hi is None else hi
        self.n = self.hi - self.lo

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop-1 (relative to lo), across shard boundaries."""
        a, b = start + self.lo, stop + self.lo
        parts = []
        i = int(np.searchsorted(self.offsets, a, side="right")) - 1
        while a < b:
            end = min(b, int(self.offsets[i + 1]))
            parts.append(self.shards[i].read(a - int(self.offsets[i]), end - int(self.offsets[i])))
            a, i = end, i + 1
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def read_into(self, out: torch.Tensor, start: int, stop: int) -> None:
        """Copy rows start..stop-1 (relative to lo) into `out`, across shard boundaries."""
        a, b, at = start + self.lo, stop + self.lo, 0
        i = int(np.searchsorted(self.offsets, a, side="right")) - 1
        while a < b:
            end = min(b, int(self.offsets[i + 1]))
            base = int(self.offsets[i])
            self.shards[i].read_into(out[at : at + end - a], a - base, end - base)
            a, at, i = end, at + end - a, i + 1

    @property
    def dtype(self) -> torch.dtype:
        """The rows' dtype, as `read` returns them (mixed shards promote, as torch.cat does)."""
        dtypes = [s.dtype for s in self.shards]
        out = dtypes[0]
        for d in dtypes[1:]:
            out = torch.promote_types(out, d)
        return out

    def locate(self, row: int) -> tuple[Path, int]:
        """(shard file, row inside it) of row `row` (relative to lo)."""
        a = row + self.lo
        i = int(np.searchsorted(self.offsets, a, side="right")) - 1
        return self.shards[i].path, a - int(self.offsets[i])


class ShuffledActivations:
    """The ActivationSource over stored activations (the cache, or a user's files).

    The windows are prepared on a background thread, one ahead (prefetch.py); `close()` ends
    it. The order is the same whether or not a window was prefetched, and on every device.
    """

    ground_truth = None

    def __init__(
        self,
        train: Rows,
        eval_rows: Rows,
        *,
        run_seed: int,
        device: torch.device,
        buffer: int,
        norm_scale: float | None = None,
        held_out_lm=None,  # hf.HeldOutLM: what the LM metrics splice the SAE into
        pin_memory: bool = True,
        inputs: dict[str, str] | None = None,
    ):
        if train.n <= 0 or eval_rows.n <= 0:
            raise DataError(f"{train.n} training and {eval_rows.n} held-out activations: need both")
        self.train, self.eval, self.d = train, eval_rows, train.d
        self.device, self.seed = device, run_seed
        self.norm_scale, self.held_out_lm = norm_scale, held_out_lm
        self.inputs = inputs
        """{file: sha256} of the local model and dataset files the activations were computed
        from (a cache's manifest; None when not recorded): each job's record carries them."""
        n = train.n
        self.buffer = max(1, min(buffer, n))
        # >= 64 chunks per window, so a window (and a batch) mixes rows from all over the data
        self.chunk = max(1, min(4096, self.buffer // 64))
        self.n_chunks = -(-n // self.chunk)
        self.per_window = max(1, self.buffer // self.chunk)
        self._epochs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._windows: dict[tuple[int, int], tuple[np.ndarray, torch.Tensor | None]] = {}
        self.loader = WindowLoader(train, device, pin_memory)

    # -- the ActivationSource interface --
    def train_batch(self, step: int, batch_size: int) -> torch.Tensor:
        if batch_size > self.train.n:  # the first call (the norm estimate) fails the job early
            raise DataError(
                f"train.batch_size={batch_size} is larger than the {self.train.n} training "
                "activations: every batch would hold the same rows several times. Fix: "
                f"train.batch_size<={self.train.n}, or more data (more files, data.n_tokens), "
                "or a smaller held-out split (data.n_eval)."
            )
        parts = [
            self._window(epoch, w, data=True)[1][a:b]
            for epoch, w, a, b in self._segments(step * batch_size, batch_size)
        ]
        x = parts[0] if len(parts) == 1 else torch.cat(parts)
        return x.to(self.device, non_blocking=True)

    def eval_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, self.eval.n, batch_size):
            x = self.eval.read(start, min(start + batch_size, self.eval.n))
            bad = ~torch.isfinite(x)
            if bad.any():  # on the CPU copy: no device sync
                path, row = self.eval.locate(start + int(bad.any(-1).nonzero()[0]))
                raise DataError(
                    f"the held-out activations hold {int(bad.sum())} non-finite values (NaN/inf), "
                    f"the first in row {row} of {path}. Fix or recompute that file."
                )
            yield x.to(self.device)

    def close(self) -> None:
        """Stop the background reader (waits for a window read in progress)."""
        self.loader.close()

    # -- the order --
    def train_rows(self, step: int, batch_size: int) -> np.ndarray:
        """The training row indices of a step's batch (what `train_batch` returns, as indices)."""
        return np.concatenate(
            [
                self._window(epoch, w, data=False)[0][a:b]
                for epoch, w, a, b in self._segments(step * batch_size, batch_size)
            ]
        )

    def _segments(self, position: int, count: int):
        """(epoch, window, start, stop) pieces covering `count` positions from `position`."""
        n = self.train.n
        while count > 0:
            epoch, p = divmod(position, n)
            starts = self._epoch(epoch)[1]
            w = int(np.searchsorted(starts, p, side="right")) - 1
            a = p - int(starts[w])
            b = min(int(starts[w + 1]) - int(starts[w]), a + count)
            yield epoch, w, a, b
            position, count = position + (b - a), count - (b - a)

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """This epoch's chunk order and the first position of each window (keeps two epochs:
        the current one and the next, whose first window is prefetched)."""
        if epoch not in self._epochs:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n_chunks)
            lengths = np.minimum(self.chunk, self.train.n - order * self.chunk)
            window_len = np.add.reduceat(lengths, np.arange(0, self.n_chunks, self.per_window))
            if len(self._epochs) >= 2:
                self._epochs.pop(next(iter(self._epochs)))
            self._epochs[epoch] = (order, np.concatenate([[0], np.cumsum(window_len)]))
        return self._epochs[epoch]

    def _plan(self, epoch: int, w: int):
        """(row indices in shuffled order, contiguous (start, stop) reads, the shuffle)."""
        order = self._epoch(epoch)[0]
        chunks = np.sort(order[w * self.per_window : (w + 1) * self.per_window])  # sequential IO
        starts = chunks * self.chunk
        stops = np.minimum(starts + self.chunk, self.train.n)
        rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)])
        shuffle = np.random.default_rng([self.seed, epoch, w, 1]).permutation(len(rows))
        return rows[shuffle], list(_runs(starts, stops)), shuffle

    def _window(self, epoch: int, w: int, data: bool):
        """(row indices, rows) of window w of an epoch, in shuffled order; keeps the last two,
        and has the next one prepared in the background when the rows are asked for."""
        cached = self._windows.get((epoch, w))
        if cached is None or (data and cached[1] is None):
            rows, runs, shuffle = self._plan(epoch, w)
            x = self.loader.load((epoch, w), runs, shuffle) if data else None
            cached = (rows, x)
            if len(self._windows) >= 2:
                self._windows.pop(next(iter(self._windows)))
            self._windows[(epoch, w)] = cached
        if data:
            following = self._following(epoch, w)
            if following not in self._windows and self.loader.pending_key != following:
                _, runs, shuffle = self._plan(*following)  # here: the plan caches epochs
                self.loader.prefetch(following, runs, shuffle)
        return cached

    def _following(self, epoch: int, w: int) -> tuple[int, int]:
        """The window read after window w of an epoch."""
        windows = len(self._epoch(epoch)[1]) - 1
        return (epoch, w + 1) if w + 1 < windows else (epoch + 1, 0)


def open_files(path: str, key: str | None) -> list[Shard]:
    """The user's activation shards named by a folder or glob, in sorted name order."""
    if os.path.isdir(path):
        files = sorted(
            p for ext in ("npy", "safetensors", "pt") for p in glob.glob(f"{path}/*.{ext}")
        )
    else:
        files = sorted(glob.glob(path))
    if not files:
        raise DataError(
            f"data.path={path!r} names no .npy, .safetensors or .pt files. Fix: a folder of "
            "shards or a glob such as '/data/acts/*.npy'."
        )
    shards = [Shard(Path(f), key=key) for f in files]
    dtypes = sorted({str(s.dtype) for s in shards})
    if len(dtypes) > 1:  # read as one promoted type: works, but rarely what was meant
        detail = ", ".join(f"{s.path.name}: {s.dtype}" for s in shards[:20])
        log.warning("the activation shards of data.path=%s mix float types (%s); they are read "
                    "as %s. Fix, if that is not intended: save every shard in one type",
                    path, detail, Rows(shards).dtype)  # fmt: skip
    return shards


def _runs(starts: np.ndarray, stops: np.ndarray):
    """Merge adjacent [start, stop) ranges (sorted), so contiguous chunks are read at once."""
    a, b = int(starts[0]), int(stops[0])
    for s, e in zip(starts[1:], stops[1:], strict=True):
        if s == b:
            b = int(e)
        else:
            yield a, b
            a, b = int(s), int(e)
    yield a, b


def _map_safetensors(path: Path, key: str | None):
    """Memory-map one tensor of a safetensors file (8-byte header size, JSON header, data)."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        if size > os.path.getsize(path) - 8:
            raise ValueError(f"its header claims {size} bytes, more than the file holds")
        header = json.loads(fh.read(size))
    header.pop("__metadata__", None)
    name = _pick(list(header), key, path)
    info = header[name]
    if info["dtype"] not in _ST_DTYPES:
        raise DataError(f"{path}: tensor {name!r} has dtype {info['dtype']}, not a float type")
    start, _end = info["data_offsets"]
    data = np.memmap(
        path, dtype=_ST_DTYPES[info["dtype"]], mode="r", offset=8 + size + start,
        shape=tuple(info["shape"]),
    )  # fmt: skip
    return data, info["dtype"] == "BF16"


def _load_torch(path: Path, key: str | None) -> torch.Tensor:
    """A tensor from a torch file: weights_only=True (never unpickles code), memory-mapped."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) files cannot be mapped
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        obj = obj[_pick([k for k, v in obj.items() if isinstance(v, torch.Tensor)], key, path)]
    if not isinstance(obj, torch.Tensor) or not obj.is_floating_point():
        raise DataError(f"{path}: expected a float tensor (or a dict of them), got {type(obj)}")
    return obj


def _pick(names: list[str], key: str | None, path: Path) -> str:
    if key is not None:
        if key not in names:
            raise DataError(f"{path} has no tensor {key!r} (it has {names}). Fix: data.key=...")
        return key
    if len(names) != 1:
        raise DataError(f"{path} holds tensors {names}: choose one with data.key=<name>")
    return names[0]
