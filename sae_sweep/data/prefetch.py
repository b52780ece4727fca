"""The stored-activation reader's windows, prepared off the training thread.

A window is `buffer` rows gathered from random chunks of the shards, then shuffled
(reader.py). Preparing one is the reader's whole cost: a memory-mapped read of hundreds of
MB, then a shuffled gather. `WindowLoader.load` does it; `WindowLoader.prefetch` starts the
next window on one background thread while the training steps consume the current one:
- rows are read straight into one buffer: pinned host memory when the target is CUDA (and
  `train.pin_memory`), so that the copy to the GPU is asynchronous;
- on CUDA the buffer is uploaded, and the window shuffled on the device, on a side stream;
  the training stream waits for that stream's event before it first reads the window;
- on the CPU the window is shuffled on the host, exactly as before (same bits).
An error of the background read (a corrupt or vanished shard) is raised on the training
thread when it asks for that window, as it would have been raised there without the thread.
`close()` (the job's end, however it ends) cancels what has not started and waits for a
read in progress; a source nobody closes lets its thread go when it is garbage collected.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # the reader builds a WindowLoader: a type-only import back
    from .reader import Rows

THREAD_NAME = "sae-sweep-prefetch"


class WindowLoader:
    """Loads the windows of one `Rows` onto one device, the next one ahead (module doc)."""

    def __init__(self, rows: Rows, device: torch.device, pin_memory: bool):
        self.rows, self.device = rows, device
        self.cuda = device.type == "cuda"
        self.pin = pin_memory and self.cuda
        self._stream = torch.cuda.Stream(device) if self.cuda else None
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[Hashable, Future] | None = None
        self._lock = threading.Lock()

    def load(self, key: Hashable, runs: list[tuple[int, int]], shuffle: np.ndarray,
             ) -> torch.Tensor:  # fmt: skip
        """Window `key`: rows of `runs` (start, stop), permuted by `shuffle`, on the device.
        Taken from the background thread when it was prefetched, else read now."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None and pending[0] == key:
            x, ready = pending[1].result()  # re-raises the background read's error, here
        else:
            if pending is not None:
                pending[1].cancel()
            x, ready = self._prepare(runs, shuffle)
        if ready is not None:  # CUDA: the training stream waits for the side stream's upload
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready)
            x.record_stream(current)  # its memory is not reused while this stream reads it
        return x

    def prefetch(self, key: Hashable, runs: list[tuple[int, int]], shuffle: np.ndarray) -> None:
        """Start preparing window `key` (as `load` would) on the background thread."""
        with self._lock:
            if self._pending is not None and self._pending[0] == key:
                return
            if self._pending is not None:
                self._pending[1].cancel()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix=THREAD_NAME)
            self._pending = (key, self._pool.submit(self._prepare, runs, shuffle))

    @property
    def pending_key(self) -> Hashable | None:
        return None if self._pending is None else self._pending[0]

    def close(self) -> None:
        with self._lock:
            pool, self._pool, self._pending = self._pool, None, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _prepare(self, runs: list[tuple[int, int]], shuffle: np.ndarray):
        """(window, CUDA event marking it ready or None); runs on either thread."""
        n = sum(b - a for a, b in runs)
        host = torch.empty((n, self.rows.d), dtype=self.rows.dtype, pin_memory=self.pin)
        at = 0
        for a, b in runs:
            self.rows.read_into(host[at : at + b - a], a, b)
            at += b - a
        order = torch.from_numpy(shuffle)
        if not self.cuda:
            return host[order], None
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            x = host.to(self.device, non_blocking=self.pin)[order.to(self.device)]
            ready = torch.cuda.Event()
            ready.record(self._stream)
        return x, ready
