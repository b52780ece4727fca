"""One GPU per job on a multi-GPU machine: a job claims a free GPU through a per-GPU lock.

Launchers hand jobs out dynamically (joblib, submitit_local reuse whichever worker is free),
so a GPU fixed by the job number can be shared by two jobs while another idles. Instead:
1. the launching process records the GPUs of the machine in SAE_SWEEP_GPUS (the
   CUDA_VISIBLE_DEVICES it was started with, else every GPU torch sees), unless already set;
   every launcher's job processes inherit it (submitit_local would otherwise give every job
   the same CUDA_VISIBLE_DEVICES; hydra issue 2757);
2. a job makes that whole list visible again and takes the first GPU whose lock file it can
   lock (an OS lock, fcntl.flock, held by the job's process: the GPU is free again when the
   job ends, and also when its process dies, however it dies), starting its search at
   GPU `job number mod N` so that the first jobs spread without contention. With every GPU
   held, it waits, saying which jobs hold them, until one is released (or fails after
   SAE_SWEEP_GPU_WAIT_S seconds, when that is set).
The job then runs on `cuda:k` and makes it the current device (`torch.cuda.set_device`), so
that `data.lm_device=auto` and anything else that says "cuda" lands on the job's GPU.

Nothing is claimed for device=cpu or device=cuda:K (the user chose), without CUDA, on SLURM
(the scheduler gives each job its own GPUs), or when one GPU is visible (the job takes it).
Set SAE_SWEEP_GPUS=2,3 to use only those GPUs, or SAE_SWEEP_GPUS= (empty) to switch
claiming off. The locks live in SAE_SWEEP_GPU_LOCKS (default: `sae-sweep-gpus` in the
machine's temporary folder), one file per physical GPU id, holding who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ENV_GPUS = "SAE_SWEEP_GPUS"
ENV_LOCKS = "SAE_SWEEP_GPU_LOCKS"
ENV_WAIT = "SAE_SWEEP_GPU_WAIT_S"
WAIT_MESSAGE_EVERY_S = 60.0
log = logging.getLogger(__name__)


class GpusBusyError(RuntimeError):
    """Every GPU stayed held by other jobs for longer than SAE_SWEEP_GPU_WAIT_S."""


def publish_machine_gpus(on_slurm: bool) -> None:
    """In the launching process: record the machine's GPUs for the jobs (see module doc)."""
    if on_slurm or ENV_GPUS in os.environ:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        os.environ[ENV_GPUS] = visible
        return
    import torch

    if torch.cuda.is_available():
        os.environ[ENV_GPUS] = ",".join(str(k) for k in range(torch.cuda.device_count()))


def parse_gpus(value: str | None) -> list[str]:
    return [g.strip() for g in (value or "").split(",") if g.strip()]


@dataclass
class GpuClaim:
    """A GPU held by this process: `index` into the visible GPUs, `gpu` its physical id."""

    index: int
    gpu: str
    fd: int | None
    """The locked file's descriptor (None when the GPU was taken without a lock)."""

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def lock_dir() -> Path:
    folder = Path(os.environ.get(ENV_LOCKS) or Path(tempfile.gettempdir()) / "sae-sweep-gpus")
    if not folder.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # shared like /tmp: every user's jobs lock here
            folder.chmod(0o1777)
    return folder


def claim(gpus: list[str], job_num: int, folder: Path, *, wait_s: float | None = None,
          poll_s: float = 1.0) -> GpuClaim:  # fmt: skip
    """Lock the first free GPU of `gpus`, searching from `job_num mod N`; wait while all are
    held (raise GpusBusyError after `wait_s` seconds, if given)."""
    n = len(gpus)
    order = [(job_num + i) % n for i in range(n)]
    t0 = last_message = time.monotonic()
    first = True
    while True:
        for k in order:
            fd = _try_lock(_lock_path(folder, gpus[k]), job_num)
            if fd is not None:
                return GpuClaim(k, gpus[k], fd)
        waited = time.monotonic() - t0
        if wait_s is not None and waited >= wait_s:
            raise GpusBusyError(
                f"job {job_num}: every GPU ({', '.join(gpus)}) was held by other jobs for "
                f"{waited:.0f} s ({_holders(gpus, folder)}). Fix: run fewer jobs at once than "
                f"there are GPUs (e.g. hydra.launcher.n_jobs={n}), or unset {ENV_WAIT} to wait."
            )
        if first or time.monotonic() - last_message >= WAIT_MESSAGE_EVERY_S:
            limit = f"failing after {wait_s:.0f} s" if wait_s is not None else "no time limit"
            log.warning(
                "job %d waits for a GPU: all %d are held (%s); a job releases its GPU when it "
                "ends or its process dies (%s, set by %s)",
                job_num, n, _holders(gpus, folder), limit, ENV_WAIT,
            )  # fmt: skip
            first, last_message = False, time.monotonic()
        time.sleep(poll_s)


def _lock_path(folder: Path, gpu: str) -> Path:
    return folder / f"gpu-{gpu.replace('/', '_')}.lock"  # MIG ids may hold slashes


def _try_lock(path: Path, job_num: int) -> int | None:
    """The descriptor of `path`, exclusively flock-ed by this process, or None if held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    with contextlib.suppress(OSError):  # so that another user's jobs can lock it too
        os.fchmod(fd, 0o666)
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "job": job_num,
              "since": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    return fd


def _holders(gpus: list[str], folder: Path) -> str:
    """'GPU 0: job 3 (pid 123) since ...' for each GPU, from its lock file."""
    out = []
    for gpu in gpus:
        try:
            h = json.loads(_lock_path(folder, gpu).read_text())
            out.append(f"GPU {gpu}: job {h['job']} (pid {h['pid']}) since {h['since']}")
        except (OSError, ValueError, KeyError):
            out.append(f"GPU {gpu}: held")
    return "; ".join(out)


@contextlib.contextmanager
def claim_gpu(job_num: int, device: str) -> Iterator[dict[str, str | int] | None]:
    """In a job process: hold this job's GPU for the duration of the block (see module doc).

    Yields {"gpu": physical id, "index": k, "device": "cuda:k", "cuda_visible_devices"}, the
    job's device to train on, or None when the job keeps its configured device.
    """
    on_slurm = os.environ.get("SUBMITIT_EXECUTOR") == "slurm" or "SLURM_JOB_ID" in os.environ
    published = os.environ.get(ENV_GPUS)
    gpus = parse_gpus(published)
    if device not in ("auto", "cuda") or on_slurm or not gpus:
        yield None  # the user, the scheduler or SAE_SWEEP_GPUS= chose; or not a sweep job
        return
    import torch

    visible = ",".join(gpus)
    if torch.cuda.is_initialized() and os.environ.get("CUDA_VISIBLE_DEVICES") != visible:
        log.warning(
            "CUDA was initialised in this process before the GPU claim; job %d stays on the "
            "default GPU", job_num,
        )  # fmt: skip
        yield None
        return
    # before anything asks CUDA how many devices there are: the driver reads this once
    os.environ["CUDA_VISIBLE_DEVICES"] = visible
    if not torch.cuda.is_available():
        yield None
        return
    held = GpuClaim(0, gpus[0], None)  # one GPU visible: it is this job's, no lock needed
    if len(gpus) > 1:
        wait = os.environ.get(ENV_WAIT)
        held = claim(gpus, job_num, lock_dir(), wait_s=float(wait) if wait else None)
    try:
        torch.cuda.set_device(held.index)
        log.info("job %d: on GPU %s (cuda:%d)", job_num, held.gpu, held.index)
        yield {"gpu": held.gpu, "index": held.index, "device": f"cuda:{held.index}",
               "cuda_visible_devices": visible}  # fmt: skip
    finally:
        held.release()
