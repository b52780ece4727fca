"""One job of a sweep: apply the skip/resume policy, claim a GPU, train, never raise.

The multirun task function calls `run_sweep_job` instead of `run_job`. A failing job
(exception, NaN divergence, out of memory, invalid config) leaves `status: failed` with its
traceback in its summary and returns normally, so the launcher goes on with the other jobs
and Hydra's end-of-multirun callback still runs. Only an interruption (Ctrl-C, SIGTERM,
a SLURM preemption) propagates: the job is then resumed by the next launch.

A packed job (sweep/planning/packing.py) applies the policy to each member on its own: finished
members are skipped, interrupted ones resumed, and those left train together.

A job with no `logger.group` of its own logs to the sweep instance's W&B group, the `id` in
sweep.json, so runs of two launches of the same sweep file never mix in W&B.

Each job also leaves `job.json` in its folder: what this launch did with it (action,
outcome, GPU, host, threads, times); the end-of-sweep table is built from these files.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import gc
import logging
import os
import signal
import socket
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from ...config.schema import Config, job_config
from ...record import layout
from ...record.atomic import atomic_write_json, atomic_write_text
from ..bookkeeping.manifest import sweep_id
from .gpus import claim_gpu
from .policy import Action, Decision, decide, prepare
from .threads import apply_thread_budget

if TYPE_CHECKING:
    from ..worker_deaths import Death

ENV_LAUNCH_ID = "SAE_SWEEP_LAUNCH_ID"
log = logging.getLogger("sae_sweep")


def run_sweep_job(
    cfg: Config, out_dir: Path, job_num: int, subdir: str, sweep_dir: Path | None = None
) -> dict[str, Any] | list[dict[str, Any]]:
    """Run (or skip, or resume) one job of a sweep, or every member of a packed one; returns
    the outcome (also in each job.json).

    cfg: the composed config (launch options included); out_dir: the job's folder, `subdir`
    inside `sweep_dir`.
    """
    from ..planning.packing import member_config, pack_file, read_pack

    skip_collection_at_exit()
    threads = apply_thread_budget(getattr(cfg, "threads", 0))
    members = None
    if sweep_dir is not None:
        launch_id = os.environ.get(ENV_LAUNCH_ID, "launch")
        members = read_pack(pack_file(sweep_dir, launch_id, job_num))
    if members is None:
        jobs = [(cfg, Path(out_dir), job_num, subdir)]
    else:
        jobs = [(member_config(m["config"]), Path(m["dir"]), m["job"], m["subdir"])
                for m in members]  # fmt: skip
    rerun_failed = getattr(cfg, "rerun_failed", False)
    instance = sweep_id(sweep_dir) if sweep_dir is not None else None
    records, to_train = [], []
    for member_cfg, member_dir, num, member_subdir in jobs:
        member_cfg = in_wandb_group(job_config(member_cfg), instance)
        decision = decide(member_dir, resolved_config(member_cfg), rerun_failed)
        record = _start(member_cfg, member_dir, num, member_subdir, decision, threads)
        records.append(record)
        if decision.action.trains:
            to_train.append(record)
        else:
            _settle(record, decision)
    if to_train:
        _train(to_train, job_num)
    public = [_public(r) for r in records]
    return public[0] if members is None else public


def in_wandb_group(cfg: Config, instance: str | None) -> Config:
    """`cfg` with the sweep instance as its W&B group, unless it names a group itself."""
    if instance is None or cfg.logger.group is not None:
        return cfg
    return dataclasses.replace(cfg, logger=dataclasses.replace(cfg.logger, group=instance))


def settle_without_training(cfg: Config, out_dir: Path, job_num: int, subdir: str,
                            rerun_failed: bool) -> dict[str, Any] | None:  # fmt: skip
    """The outcome of a job that needs no training (finished or failed in an earlier launch,
    or in conflict with its record), recorded in its job.json as its worker would; None when
    the job must be launched.

    The sweeper calls it in the launching process when a sweep resumes, so that finished
    jobs are not launched only to be skipped (on SLURM, a queued job each)."""
    decision = decide(out_dir, resolved_config(cfg), rerun_failed)
    if decision.action.trains:
        return None
    record = _start(cfg, out_dir, job_num, subdir, decision, threads=None)
    _settle(record, decision)
    return _public(record)


def _start(cfg: Config, out_dir: Path, job_num: int, subdir: str, decision: Decision,
           threads: int | None) -> dict[str, Any]:  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "job": job_num,
        "dir": subdir,
        "variant": cfg.variant,
        "lambda_multiplier": cfg.lambda_multiplier,
        "coefficient": cfg.penalty.coefficient,
        "k": getattr(cfg.sae, "k", None),  # the L0 knob of TopK-like SAEs (target-L0 rounds)
        "seed": cfg.seed,
        "l0_target": cfg.l0_target,
        "launch_id": os.environ.get(ENV_LAUNCH_ID),
        "action": decision.action.value,
        "reason": decision.reason,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "threads": threads,
        "started": time.time(),
        "_cfg": cfg,
        "_out_dir": out_dir,
    }
    if decision.action.trains:
        prepare(out_dir, decision)
    return record


def _settle(record: dict[str, Any], decision: Decision) -> None:
    """Record the outcome of a job that is not trained: skipped, or in conflict."""
    outcome = "conflict" if decision.action == Action.CONFLICT else "skipped"
    out_dir = record["_out_dir"]
    log.info("job %d %s: %s (%s)", record["job"], outcome, out_dir, decision.reason)
    _finish(out_dir, record, outcome=outcome, summary=layout.read_summary(out_dir))


def _train(records: list[dict[str, Any]], job_num: int) -> None:
    """Train the jobs (one, or a pack's members) on one GPU, held while they train; contain
    every failure."""
    from ...job import run_jobs  # imported late: keeps `import sae_sweep.sweep` light

    with claim_gpu(job_num, records[0]["_cfg"].device) as gpu:
        jobs = []
        for record in records:
            cfg, out_dir = record["_cfg"], record["_out_dir"]
            if gpu is not None:
                record["gpu"] = gpu
                cfg = dataclasses.replace(cfg, device=str(gpu["device"]))
            log.info("job %d: %s -> %s", record["job"], record["reason"], out_dir)
            _write(out_dir, {**record, "outcome": "running"})
            jobs.append((cfg, out_dir))
        try:
            outcomes = run_jobs(jobs)
        finally:
            _release_memory()  # a reused worker's next job starts with a clean GPU
    for record, outcome in zip(records, outcomes, strict=True):
        cfg, out_dir = record["_cfg"], record["_out_dir"]
        if isinstance(outcome, dict):
            _finish(out_dir, record, outcome="done", summary=outcome)
            continue
        summary = layout.read_summary(out_dir)
        if summary is None or summary.get("status") != "failed":
            # failed before run_jobs could write its record (e.g. an invalid config)
            summary = {"status": "failed", "error": f"{type(outcome).__name__}: {outcome}",
                       "traceback": "".join(traceback.format_exception(outcome)),
                       "variant": cfg.variant, "sweep": cfg.sweep}  # fmt: skip
            atomic_write_text(out_dir / layout.CONFIG, OmegaConf.to_yaml(resolved_config(cfg)))
            atomic_write_json(out_dir / layout.SUMMARY, summary)
        log.error("job %d failed: %s\n%s", record["job"], summary.get("error"),
                  summary.get("traceback") or "")  # fmt: skip
        _finish(out_dir, record, outcome="failed", summary=summary)


def fail_killed_job(out_dir: Path, death: Death | None) -> dict[str, Any]:
    """Record, for the launcher, a job whose worker process died while it ran (SIGKILL from
    the kernel's out-of-memory killer, a kill by hand): the process could write nothing.
    Its summary says `failed`, naming the signal and the step its progress had reached; a
    re-run with rerun_failed=true resumes it from its checkpoint."""
    out_dir = Path(out_dir)
    record = layout.read_json(out_dir / layout.JOB) or {}
    progress = layout.read_json(out_dir / layout.PROGRESS) or {}
    how = death.describe() if death is not None else "killed"
    cause = ("; SIGKILL is what the kernel's out-of-memory killer sends: lower "
             "train.batch_size / train.eval_batch_size / sae.d_sae, or run fewer jobs at once"
             if death is not None and death.signal == signal.SIGKILL else "")  # fmt: skip
    step = f" at step {progress['done']} of {progress.get('total')}" if "done" in progress else ""
    error = (f"WorkerKilled: the job's process (pid {record.get('pid')}) was {how}"
             f"{step}{cause}. The sweep's other jobs went on; re-run the sweep with "
             "rerun_failed=true to resume this one from its checkpoint")  # fmt: skip
    summary = {"status": "failed", "error": error, "traceback": "",
               "signal": death.signal if death is not None else None,
               "variant": record.get("variant"), "sweep": (layout.read_config(out_dir) or {})
               .get("sweep")}  # fmt: skip
    atomic_write_json(out_dir / layout.SUMMARY, summary)
    record.setdefault("started", time.time())
    return _public(_finish(out_dir, record, outcome="failed", summary=summary))


def mark_interrupted(out_dir: Path, reason: str) -> dict[str, Any]:
    """Record, for the launcher, a job that was stopped while it ran and will be resumed:
    `interrupted` in its summary (unless the job wrote its own) and its job.json."""
    out_dir = Path(out_dir)
    record = layout.read_json(out_dir / layout.JOB) or {}
    summary = layout.read_summary(out_dir)
    if summary is None or summary.get("status") not in ("interrupted", "failed", "done"):
        summary = {"status": "interrupted", "error": reason,
                   "variant": record.get("variant")}  # fmt: skip
        atomic_write_json(out_dir / layout.SUMMARY, summary)
    record.setdefault("started", time.time())
    ended = summary["status"] if summary["status"] in ("done", "failed") else "interrupted"
    return _public(_finish(out_dir, record, outcome=ended, summary=summary))


def resolved_config(cfg: Config) -> dict[str, Any]:
    """The resolved config as a job records it in config.yaml (launch options left out)."""
    return OmegaConf.to_container(
        OmegaConf.structured(job_config(cfg)), resolve=True, enum_to_str=True
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
    atomic_write_json(out_dir / layout.JOB, _public(record))


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """A job record without its in-process entries (`_cfg`, `_out_dir`): what job.json holds
    and the launcher returns."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _release_memory() -> None:
    """After a job (done, failed e.g. out of memory, or interrupted), give its GPU memory back
    and reset the peak-memory statistics, for the next job of a reused worker process.

    Only after a GPU job: there, tensors kept alive by reference cycles would hold GPU memory
    the next job needs. A full collection costs about 0.4 s in a worker that has imported
    torch and Hydra (a tenth of a quick-sweep job); on the CPU, Python's own collector frees
    such cycles in time."""
    import torch

    if torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()  # of the current device: the job's


@functools.cache  # once per process
def skip_collection_at_exit() -> None:
    """At interpreter exit, take every object out of the cyclic garbage collector's reach.

    A worker that has run jobs holds hundreds of thousands of objects (torch, Hydra, W&B and
    what they cache), and Python's last full collection at exit walked them all: each joblib
    worker took about 5 s to exit, and the sweep waited for both before it could end. Exit
    frees the whole process anyway; reference counting still closes files and runs
    finalizers."""
    atexit.register(gc.freeze)
