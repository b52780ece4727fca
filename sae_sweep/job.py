"""One job: config -> data -> training loop -> evaluation -> record, for one SAE or a pack of
several that share their data (sweep/planning/packing.py); each SAE leaves its complete record
(docs/design.md, "The record").

`run_job` trains one SAE; `run_jobs` a pack, in lockstep on one stream of batches
(training/loop.py), each SAE with its own optimizer, schedules, checkpoint, record and W&B
run. Every SAE's record is the same as when it trains alone (record/layout.py lists the
files); every file is written atomically. A failing SAE writes a summary with status `failed`
and its traceback (an interrupted one, by Ctrl-C, SIGTERM or a SLURM requeue: status
`interrupted` with the step it reached, resumable; training/interruption.py); in a pack the
others go on. Failing includes a W&B run that cannot start and non-finite weights or held-out
metrics: `done` means finite results. `progress.json` tells other processes how far each SAE
is. With W&B on, each SAE is also exported to `saelens/` in its record and logged as an
artifact.
"""

from __future__ import annotations

import contextlib
import resource
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from .config.schema import Config
from .data import build_source, estimate_norm_scale
from .evaluation import check_finite_metrics, evaluate
from .models import build_sae, validate
from .record import RunLogger, atomic_write_text, layout, replace_atomically
from .record.atomic import remove_stale_temporaries
from .record.config_match import check_same_config
from .record.knobs import flat_knobs
from .record.progress import reclassify_dead
from .record.run_logger import keep_metrics_through
from .record.versions import versions
from .record.wandb_run import log_sae_artifact, run_name, run_tags
from .record.weights import save_firing, save_sae
from .training.interruption import JobInterrupted, held, stop_on_signals
from .training.loop import TrainingRun, TrainResult, train
from .training.memory import InsufficientMemoryError, check_training_fits
from .training.progress import JobProgress


def run_job(cfg: Config, out_dir: Path) -> dict[str, Any]:
    """Train, evaluate and record one SAE; returns the summary written to summary.json.
    Raises what made it fail (after recording it)."""
    (outcome,) = run_jobs([(cfg, out_dir)], single_run=True)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def run_jobs(
    jobs: list[tuple[Config, Path]], *, single_run: bool = False
) -> list[dict[str, Any] | Exception]:
    """Train SAEs that share `data`, `seed`, `device`, `dtype` and `train.batch_size` on one
    stream of batches. Returns, per job, its summary or the exception it failed with (an
    invalid config fails before anything of it is written). An interruption (Ctrl-C,
    SIGTERM) marks every unfinished SAE `interrupted` and propagates.

    single_run: the folder is not prepared by a sweep's policy (sweep/running/policy.py), so
    the job prepares it: an earlier start killed without a word (a `running` progress under a
    dead pid: the out-of-memory killer) is first recorded `failed`, and the metrics logged
    after the checkpoint it resumes from are dropped. (A sweep's launcher records the jobs of
    its killed workers itself; a sweep killed as a whole resumes its jobs.)"""
    shared = {_stream(cfg) for cfg, _ in jobs}
    if len(shared) > 1:
        raise ValueError(f"jobs trained together must share data, seed, device, dtype and "
                         f"train.batch_size; these differ: {sorted(map(str, shared))}")  # fmt: skip
    outcomes: list[dict[str, Any] | Exception | None] = [None] * len(jobs)
    members = []
    for i, (cfg, out_dir) in enumerate(jobs):
        try:
            validate(cfg)  # before anything is written: a bad config leaves no record behind
            members.append(_Member(i, cfg, Path(out_dir), single_run))
        except Exception as exc:  # noqa: BLE001 -- this job's outcome
            outcomes[i] = exc
    with stop_on_signals(), contextlib.ExitStack() as stack:  # SIGTERM, SIGINT: JobInterrupted
        live = [m for m in members if m.guard(m.open, stack)]
        try:
            if live:
                _train_together(live)
        except BaseException as exc:
            with held():  # a second signal must not cut the records short
                for m in live:
                    if m.outcome is None:
                        m.fail(exc)
            if not isinstance(exc, Exception):
                raise
    for m in members:
        outcomes[m.index] = m.outcome
    return outcomes  # type: ignore[return-value]


def _stream(cfg: Config) -> str:
    """What fixes a job's stream of training batches."""
    return repr((cfg.data, cfg.seed, cfg.device, cfg.dtype, cfg.train.batch_size))


def _train_together(members: list[_Member]) -> None:
    """Data -> loop -> evaluate -> record, for SAEs that share one stream of batches."""
    first = members[0].cfg
    device = resolve_device(first.device)
    if device.type == "cuda":
        # the current device: what "cuda" means to the language model (data.lm_device=auto)
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)  # this job's peak, not a previous one's
    torch.manual_seed(first.seed)
    source = build_source(first.data, first.seed, device, pin_memory=first.train.pin_memory)
    with contextlib.closing(source):  # its background reader ends with the job, however
        _save_ground_truth(source, members)
        norm_scales: dict[int, float] = {}  # one estimate per pack, shared by members that agree
        built = [m for m in members if m.guard(m.build, source, device, norm_scales)]
        try:  # before the first step: a job that cannot fit never starts
            check_training_fits([m.run for m in built], first.train.batch_size, device)
        except InsufficientMemoryError as exc:
            for m in built:
                m.fail(exc)
            return
        results = train([m.run for m in built], source, lambda i, exc: built[i].fail(exc))
        for m, result in zip(built, results, strict=True):
            if result is not None:
                m.guard(m.finish, result, source, device)


def _save_ground_truth(source, members: list[_Member]) -> None:
    """Synthetic data's true feature directions, into each record (the answer MMCS scores)."""
    if source.ground_truth is not None:
        truth = {"directions": source.ground_truth.float().cpu().contiguous()}
        for m in members:
            with replace_atomically(m.out_dir / layout.GROUND_TRUTH) as tmp:
                save_file(truth, str(tmp))


class _Member:
    """One SAE of a job: its config, record folder, logger, model and training state."""

    def __init__(self, index: int, cfg: Config, out_dir: Path, single_run: bool = False):
        self.index, self.cfg, self.out_dir = index, cfg, out_dir
        self.single_run = single_run
        self.outcome: dict[str, Any] | Exception | None = None
        self.log: RunLogger | None = None
        self.progress: JobProgress | None = None

    def guard(self, fn, *args) -> bool:
        """Run one phase of this SAE; a failure is recorded as its outcome, not raised."""
        try:
            fn(*args)
            return True
        except Exception as exc:  # noqa: BLE001 -- one SAE failing leaves the others training
            self.fail(exc)
            return False

    def open(self, stack: contextlib.ExitStack) -> None:
        cfg, out_dir = self.cfg, self.out_dir
        resolved = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
        check_same_config(out_dir, resolved)  # a folder of other settings stays untouched
        if self.single_run:  # (a sweep's job: prepared by sweep/running/policy.py)
            reclassify_dead(out_dir)  # an earlier start killed without a word: said, resumed
            keep_metrics_through(out_dir, layout.checkpoint_step(out_dir))  # none logged twice
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out_dir)  # of a write killed in an earlier start (weights)
        atomic_write_text(out_dir / layout.CONFIG, OmegaConf.to_yaml(resolved))
        self.t0 = time.perf_counter()
        self.base = {
            "variant": cfg.variant,
            "sweep": cfg.sweep,
            "knobs": flat_knobs(resolved),
            "versions": versions(),
            "started": _now(),
        }
        label = f"{cfg.variant}/{out_dir.name}" if cfg.variant else out_dir.name
        self.progress = JobProgress(cfg, out_dir, label=label)
        self.log = RunLogger(
            out_dir, cfg.logger, resolved, run_tags(cfg), default_name=run_name(cfg)
        )
        stack.push(self.log)  # closed (W&B run finished) when the job ends, however it ends
        self.log.open()  # W&B starts here: a run that cannot start fails the job like any fault

    def build(self, source, device: torch.device, norm_scales: dict[int, float]) -> None:
        """norm_scales: the estimates made so far in this job, by `train.norm_estimate_batches`
        (members share source and batch size, so equal settings give the same scalar)."""
        cfg, tr = self.cfg, self.cfg.train
        dtype = getattr(torch, cfg.dtype.value if hasattr(cfg.dtype, "value") else cfg.dtype)
        self.norm_scale = 1.0
        if tr.normalize_input:
            # a cache records its dataset-wide scalar; other sources estimate it on a few batches
            self.norm_scale = getattr(source, "norm_scale", None) or norm_scales.get(
                tr.norm_estimate_batches
            )
            if self.norm_scale is None:
                self.norm_scale = estimate_norm_scale(
                    source, tr.norm_estimate_batches, tr.batch_size
                )
                norm_scales[tr.norm_estimate_batches] = self.norm_scale
        self.sae = build_sae(cfg.sae, d_in=source.d, seed=cfg.seed).to(device, dtype)
        self.run = TrainingRun(cfg, self.sae, source, self.log, norm_scale=self.norm_scale,
                               checkpoint_dir=layout.checkpoint_dir(self.out_dir),
                               progress=self.progress)  # fmt: skip

    def finish(self, result: TrainResult, source, device: torch.device) -> None:
        cfg, sae = self.cfg, self.sae
        self.progress.evaluating()
        firing: dict = {}
        metrics = evaluate(sae, source, self.norm_scale, cfg.train.eval_batch_size, firing=firing)
        check_finite_metrics(metrics)  # a NaN result must never be recorded as done
        self.log.log({f"eval/{k}": v for k, v in metrics.items() if v is not None}, result.steps)
        save_sae(self.out_dir, sae, cfg.sae.kind,
                 {"norm_scale": self.norm_scale, "config": self.base["knobs"]})  # fmt: skip
        save_firing(self.out_dir, firing["frequency"], metrics["dead_window_tokens"])
        artifact = log_sae_artifact(cfg, self.out_dir, self.log,
                                     {**metrics, "norm_scale": self.norm_scale})  # fmt: skip
        control = result.l0_control  # with train.l0_target: its lambda and trajectory
        summary = {
            **metrics,
            "steps": result.steps,
            "resumed_from_step": result.resumed_from_step,
            "loss_paths": result.loss_paths,
            "matmul_precision": result.matmul_precision,
            "train_wall_s": result.train_wall_s,
            "activations_per_s": result.activations_per_s,
            "norm_scale": self.norm_scale,
            "l0_control": control.record(metrics["l0"], cfg.l0_tolerance) if control else None,
            "d_in": sae.d_in,
            "d_sae": sae.d_sae,
            "inputs": getattr(source, "inputs", None),  # the data's files' sha256 (a cache's)
            "device": str(device),
            "threads": torch.get_num_threads(),
            "peak_memory_mb": _peak_memory_mb(device),
            "sae_artifact": artifact,
            "status": "done",
            "error": None,
            "traceback": None,
            **self.base,
            "wall_s": time.perf_counter() - self.t0,
            "ended": _now(),
        }
        self.log.write_summary(summary)
        self.progress.finish(summary)
        self.outcome = summary

    def fail(self, exc: BaseException) -> None:
        self.outcome = exc if isinstance(exc, Exception) else None
        self.sae = self.run = None  # e.g. out of memory: give this SAE's memory to the others
        if self.log is None:  # failed before its record was opened
            return
        # Ctrl-C, SIGTERM, SystemExit (e.g. a SLURM preemption requeue): resumable, not failed
        interrupted = not isinstance(exc, Exception)
        done = self.progress.steps_done if self.progress is not None else None
        resumes_from = layout.checkpoint_step(self.out_dir)
        error = f"{type(exc).__name__}: {exc}"
        if interrupted:
            error += (f" after step {done} of {self.cfg.train.steps}; running it again resumes "
                      f"from the checkpoint of step {resumes_from or 0}")  # fmt: skip
        failed = {
            "status": "interrupted" if interrupted else "failed",
            "error": error,
            "traceback": "".join(traceback.format_exception(exc)),
            "steps_done": done,  # the steps trained when it stopped
            "checkpoint_step": resumes_from,  # where a re-run resumes (None: from step 0)
            # its number, as a worker killed under a sweep records it (sweep/running/task.py)
            "signal": exc.signum if isinstance(exc, JobInterrupted) else None,
        }
        summary = {**failed, **self.base, "wall_s": time.perf_counter() - self.t0, "ended": _now()}
        self.log.write_summary(summary)
        self.log.mark_failed()
        if self.progress is not None:
            self.progress.finish(failed)


def resolve_device(name: str) -> torch.device:
    """`device` as a torch device; `auto` and `cuda` name the current GPU by its index."""
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda" if name == "auto" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but CUDA is not available here. Fix: device=cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
