"""One GPU per job on a multi-GPU machine: job i gets GPU i mod N.

Launchers do not do this for us: the basic and joblib launchers leave every job on the
default GPU, and submitit_local sets the same CUDA_VISIBLE_DEVICES for every job (empty, or
"0" with gpus_per_node=1; hydra issue 2757). So:
1. the launching process records the GPUs of the machine in SAE_SWEEP_GPUS (the
   CUDA_VISIBLE_DEVICES it was started with, else every GPU torch sees), unless already set;
   every launcher's job processes inherit it;
2. each job makes that whole list visible again and picks `cuda:{i mod N}` in it, by index,
   which also works in a reused joblib worker where CUDA is already initialised.
Nothing happens for device=cpu or device=cuda:K (the user chose), on SLURM (the scheduler
gives each job its own GPUs), or with fewer than 2 GPUs. Set SAE_SWEEP_GPUS=2,3 to use
only those GPUs, or SAE_SWEEP_GPUS= (empty) to switch the spreading off.
"""

from __future__ import annotations

import logging
import os

ENV_GPUS = "SAE_SWEEP_GPUS"
log = logging.getLogger(__name__)


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


def gpu_for_job(job_num: int, gpus: list[str]) -> int:
    """Index (into `gpus`) of the GPU that job `job_num` runs on."""
    return job_num % len(gpus)


def assign_gpu(job_num: int, device: str) -> dict[str, str | int] | None:
    """In a job process: make the machine's GPUs visible and choose this job's.

    Returns {"gpu": physical id, "index": k, "device": "cuda:k", "cuda_visible_devices"} or
    None when the job is left alone. `device` is the job's configured device; the caller
    uses the returned device only when CUDA is available.
    """
    gpus = parse_gpus(os.environ.get(ENV_GPUS))
    on_slurm = os.environ.get("SUBMITIT_EXECUTOR") == "slurm" or "SLURM_JOB_ID" in os.environ
    if device not in ("auto", "cuda") or on_slurm or len(gpus) < 2:
        return None
    k = gpu_for_job(job_num, gpus)
    visible = ",".join(gpus)
    import torch

    if torch.cuda.is_initialized() and os.environ.get("CUDA_VISIBLE_DEVICES") != visible:
        log.warning(
            "CUDA was initialised in this process before the GPU assignment; job %d stays "
            "on the default GPU",
            job_num,
        )
        return None
    os.environ["CUDA_VISIBLE_DEVICES"] = visible
    return {"gpu": gpus[k], "index": k, "device": f"cuda:{k}", "cuda_visible_devices": visible}
