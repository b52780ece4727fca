"""One job of a sweep: apply the skip/resume policy, pick a GPU, train, never raise.

The multirun task function calls `run_sweep_job` instead of `run_job`. A failing job
(exception, NaN divergence, out of memory, invalid config) leaves `status: failed` with its
traceback in its summary and returns normally, so the launcher goes on with the other jobs
and Hydra's end-of-multirun callback still runs. Only an interruption (Ctrl-C, SIGTERM,
a SLURM preemption) propagates: the job is then resumed by the next launch.

Each job also leaves `job.json` in its folder: what this launch did with it (action,
outcome, GPU, host, times); the end-of-sweep table is built from these files.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..config.schema import Config
from ..record.atomic import atomic_write_json, atomic_write_text
from .gpus import assign_gpu
from .policy import CONFIG_FILE, SUMMARY_FILE, Action, decide, prepare

JOB_FILE = "job.json"
ENV_LAUNCH_ID = "SAE_SWEEP_LAUNCH_ID"
log = logging.getLogger("sae_sweep")


def run_sweep_job(cfg: Config, out_dir: Path, job_num: int, subdir: str) -> dict[str, Any]:
    """Run (or skip, or resume) one job of a sweep; returns its outcome (also in job.json).

    out_dir: the job's folder, `subdir` inside the sweep folder.
    """
    from ..job import run_job  # imported late: keeps `import sae_sweep.sweep` light

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = resolved_config(cfg)
    decision = decide(out_dir, config, cfg.rerun_failed)
    record: dict[str, Any] = {
        "job": job_num,
        "dir": subdir,
        "variant": cfg.variant,
        "lambda_multiplier": cfg.lambda_multiplier,
        "coefficient": cfg.penalty.coefficient,
        "seed": cfg.seed,
        "l0_target": cfg.l0_target,
        "launch_id": os.environ.get(ENV_LAUNCH_ID),
        "action": decision.action.value,
        "reason": decision.reason,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.time(),
    }
    if not decision.action.trains:
        outcome = "conflict" if decision.action == Action.CONFLICT else "skipped"
        log.info("job %d %s: %s (%s)", job_num, outcome, out_dir, decision.reason)
        return _finish(out_dir, record, outcome=outcome, summary=_read_json(out_dir / SUMMARY_FILE))

    prepare(out_dir, decision)
    gpu = assign_gpu(job_num, cfg.device)
    if gpu is not None:
        record["gpu"] = gpu
        import torch

        if torch.cuda.is_available():
            cfg = dataclasses.replace(cfg, device=str(gpu["device"]))
    log.info("job %d: %s -> %s", job_num, decision.reason, out_dir)
    _write(out_dir, {**record, "outcome": "running"})
    try:
        summary = run_job(dataclasses.replace(cfg, rerun_failed=False), out_dir)
        return _finish(out_dir, record, outcome="done", summary=summary)
    except Exception as exc:  # noqa: BLE001 -- contain every failure; interruptions propagate
        tb = traceback.format_exc()
        summary = _read_json(out_dir / SUMMARY_FILE)
        if summary is None or summary.get("status") != "failed":
            # failed before run_job could write its record (e.g. an invalid config)
            summary = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                       "traceback": tb, "variant": cfg.variant, "sweep": cfg.sweep}  # fmt: skip
            atomic_write_text(out_dir / CONFIG_FILE, OmegaConf.to_yaml(config))
            atomic_write_json(out_dir / SUMMARY_FILE, summary)
        log.error("job %d failed: %s\n%s", job_num, summary.get("error"), tb)
        _release_memory()
        return _finish(out_dir, record, outcome="failed", summary=summary)


def resolved_config(cfg: Config) -> dict[str, Any]:
    """The resolved config as a job records it in config.yaml."""
    return OmegaConf.to_container(
        OmegaConf.structured(dataclasses.replace(cfg, rerun_failed=False)),
        resolve=True,
        enum_to_str=True,
    )


def _finish(out_dir: Path, record: dict, *, outcome: str, summary: dict | None) -> dict:
    summary = summary or {}
    record.update(
        outcome=outcome,
        status=summary.get("status"),
        error=summary.get("error"),
        resumed_from_step=summary.get("resumed_from_step"),
        l0=summary.get("l0"),
        fvu=summary.get("fvu"),
        wall_s=round(time.time() - record["started"], 2),
    )
    _write(out_dir, record)
    return record


def _write(out_dir: Path, record: dict) -> None:
    atomic_write_json(out_dir / JOB_FILE, record)


def _read_json(path: Path) -> dict | None:
    import json

    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _release_memory() -> None:
    """After a failure (e.g. CUDA out of memory), give the memory back for the next job."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
