"""The training loop: one stream of batches, and every SAE of a job steps on each batch.

A job trains one SAE or a pack of several that share their data
(sweep/planning/packing.py); one SAE is a pack of one. Each step's batch is drawn or read
once and every SAE steps on it, each a `TrainingRun` with its own optimizer, schedules,
logger, checkpoint and progress, so each ends exactly as when it trains alone. An SAE that
fails leaves the loop (`on_failure`) and the others train on. Metrics accumulate on the
device and are read once every `train.log_every` steps (window.py): the loop never
synchronises with the device on an ordinary step. A stop signal (SIGTERM, SIGINT) lets the
step in progress end, then every SAE checkpoints that step and the loop raises
JobInterrupted (interruption.py).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config.schema import Config
from ..data.source import ActivationSource
from ..models.base import SparseAutoencoder
from ..record.run_logger import RunLogger
from .checkpoint import load_checkpoint, save_checkpoint
from .divergence import check_finite_weights, divergence_fix
from .interruption import JobInterrupted, at_step_ends, held
from .interruption import requested as stop_requested
from .l0_control import L0Controller
from .precision import set_matmul_precision
from .progress import JobProgress
from .resampling import resample_dead_features_
from .schedules import lambda_at, lr_at
from .step import LossPath, Stepper, make_optimizer, to_device
from .window import MetricWindow


@dataclass
class TrainResult:
    steps: int
    train_wall_s: float
    activations_per_s: float
    resumed_from_step: int
    loss_paths: list[str]
    """The loss implementations the steps ran on (training/step.py: reference, dense, ...)."""
    matmul_precision: str
    """What the step's matrix products ran at: float32, tf32 or bfloat16 (precision.py)."""
    l0_control: L0Controller | None = None
    """With train.l0_target: the controller, its final lambda and trajectory (l0_control.py)."""


def train(
    runs: Sequence[TrainingRun],
    source: ActivationSource,
    on_failure: Callable[[int, Exception], None] | None = None,
) -> list[TrainResult | None]:
    """Train every run from its `start` to its `train.steps` on the source's batches; returns
    each run's figures, None for a run that failed.

    A run that fails (in a step, or the final check of its weights) leaves the loop and is
    handed to `on_failure(index, exception)`; without `on_failure` the failure is raised. A
    failing source (a read error) raises: every run needs its batches.
    """
    batch_size = _shared_batch_size(runs)
    live = dict(enumerate(runs))
    results: list[TrainResult | None] = [None] * len(runs)

    def guarded(i: int, phase: Callable, *args):
        try:
            return phase(*args)
        except Exception as exc:  # noqa: BLE001 -- one SAE failing leaves the others training
            if on_failure is None:
                raise
            del live[i]
            on_failure(i, exc)  # writes the record, traceback included
            # e.g. out of memory: the failed SAE's weights and Adam moments go back to the
            # others, so neither the run nor the frames of its traceback may keep them alive
            traceback.clear_frames(exc.__traceback__)
            runs[i].release()

    first = min((run.start for run in runs), default=0)
    with at_step_ends():  # SIGTERM / SIGINT: the step ends, then `_stop_after`
        for step in range(first, max((run.steps for run in runs), default=0)):
            batch = None
            for i, run in list(live.items()):
                if run.start <= step < run.steps:
                    if batch is None:  # drawn or read once for every SAE of the pack
                        batch = source.train_batch(step, batch_size)
                    guarded(i, run.step, step, batch)
            if (signum := stop_requested()) is not None:
                _stop_after(step, live, guarded, signum)
    for i, run in list(live.items()):
        results[i] = guarded(i, run.result)
    return results


def _stop_after(step: int, live: dict[int, TrainingRun], guarded, signum: int) -> None:
    """A stop signal came during `step`: checkpoint every SAE that trained it at its end (the
    others' checkpoints are at their own last step already), then raise JobInterrupted."""
    for i, run in list(live.items()):
        if run.start <= step < run.steps:
            guarded(i, run.checkpoint, step + 1)
    raise JobInterrupted(signum)


def _shared_batch_size(runs: Sequence[TrainingRun]) -> int:
    sizes = {run.cfg.train.batch_size for run in runs}
    if len(sizes) > 1:
        raise ValueError(f"SAEs trained on one stream of batches share train.batch_size; "
                         f"these differ: {sorted(sizes)}")  # fmt: skip
    return sizes.pop() if sizes else 0


class TrainingRun:
    """One SAE's training, step by step: its optimizer, loss path, logging window, dead-feature
    clock and checkpoint. Restores the checkpoint when there is one; `start` is the first
    step still to train, `steps` the number it trains to.
    """

    def __init__(self, cfg: Config, sae: SparseAutoencoder, source: ActivationSource,
                 logger: RunLogger, *, norm_scale: float, checkpoint_dir: Path | None,
                 progress: JobProgress | None = None):  # fmt: skip
        self.cfg, self.sae, self.source, self.logger = cfg, sae, source, logger
        self.norm_scale, self.checkpoint_dir, self.progress = norm_scale, checkpoint_dir, progress
        self.divergence_fix = divergence_fix(cfg)
        tr, rs = cfg.train, cfg.resample
        self.steps = tr.steps
        self.device, self.dtype = sae.W_dec.device, sae.W_dec.dtype
        self.optimizer = make_optimizer(sae, tr.lr, tr.adam_betas)
        self.matmul_precision = set_matmul_precision(tr.matmul_dtype, self.device)
        self.last_fired = torch.full((sae.d_sae,), -1, dtype=torch.long, device=self.device)
        self.start, self.wall_before = 0, 0.0
        self.saved_step: int | None = None  # the step of the checkpoint this run last wrote
        self.control = L0Controller.from_config(cfg)  # None: lambda follows penalty.coefficient
        if checkpoint_dir is not None:
            meta_keys = ("train_wall_s",) + (("l0_control",) if self.control else ())
            restored = load_checkpoint(
                checkpoint_dir, sae, self.optimizer, ("last_fired",), meta_keys
            )
            if restored is not None:
                self.start, extra, meta = restored
                self.last_fired, self.wall_before = extra["last_fired"], meta["train_wall_s"]
                if self.control:
                    self.control.load_state_dict(meta["l0_control"])
        self.resample_steps = set(rs.at_steps) if rs.enabled else set()
        self.window = MetricWindow(self.device, self.divergence_fix)
        self.stepper = Stepper(cfg, sae, self.optimizer)
        self.t_start = self.t_window = time.perf_counter()
        if progress is not None:
            progress.start(self.start)

    def release(self) -> None:
        """Drop every tensor this run holds (the SAE, its optimizer and their helpers): called
        when it has failed, so its memory serves the SAEs still training."""
        self.sae = self.optimizer = self.stepper = self.window = self.last_fired = None

    def step(self, step: int, batch: torch.Tensor) -> None:
        """Train on `batch`, the source's batch of `step`; then what falls due after the step:
        resampling, logging, progress, checkpoint."""
        tr, done = self.cfg.train, step + 1
        lr, lam = self._schedules(step)
        x = to_device(batch, self.device, self.dtype, tr.pin_memory) * self.norm_scale
        out = self.stepper.step(x, lr, lam)  # loss, backward, constraint, clip, Adam (step.py)
        if self.control is not None:  # the batch's mean L0, read every few steps (l0_control.py)
            self.control.observe(step, out.counts.sum() / x.shape[0])
        self.last_fired.masked_fill_(self.window.add(x, out), step)
        if done in self.resample_steps:
            self._resample(step)
        checkpoint_due = self.checkpoint_dir is not None and (
            done == tr.steps or (tr.checkpoint_every and done % tr.checkpoint_every == 0)
        )
        metrics = None
        if done % tr.log_every == 0 or checkpoint_due:
            metrics = self._log(step, lr, lam)
        if self.progress is not None:
            self.progress.step(done, metrics)  # a clock check; reports every progress_every_s
        if checkpoint_due:
            self._checkpoint(done)

    def result(self) -> TrainResult:
        """After the last step: the run's figures; raises if the final weights are not finite."""
        check_finite_weights(self.sae, self.steps, self.divergence_fix)
        wall = self.wall_before + time.perf_counter() - self.t_start
        trained = self.steps - self.start
        speed = trained * self.cfg.train.batch_size / max(wall - self.wall_before, 1e-9)
        paths = [p.value for p in self.stepper.paths_used]
        return TrainResult(self.steps, wall, speed if trained else 0.0, self.start, paths,
                           self.matmul_precision, self.control)  # fmt: skip

    def _schedules(self, step: int) -> tuple[float, float]:
        """The learning rate and the sparsity coefficient (lambda) of `step`."""
        tr, pen = self.cfg.train, self.cfg.penalty
        lr = lr_at(step, base_lr=tr.lr, steps=tr.steps, warmup_steps=tr.lr_warmup_steps,
                   decay_fraction=tr.lr_decay_fraction)  # fmt: skip
        if self.control is not None:
            return lr, self.control.coefficient_at(step)
        return lr, lambda_at(step, coefficient=pen.coefficient, warmup_steps=pen.warmup_steps)

    def _log(self, step: int, lr: float, lam: float) -> dict[str, float]:
        """Log the window's means as `train/...` at the step count; returns them."""
        tr = self.cfg.train
        metrics, n_steps = self.window.read_and_reset(step)  # the window's one device sync
        now = time.perf_counter()
        dead = (step - self.last_fired) * tr.batch_size >= tr.dead_window_tokens
        metrics.update(
            lr=lr,
            coefficient=lam,
            dead_fraction=dead.float().mean().item(),
            activations_per_s=n_steps * tr.batch_size / (now - self.t_window),
        )
        metrics["sparse_path"] = float(self.stepper.path == LossPath.sparse)
        self.logger.log({f"train/{k}": v for k, v in metrics.items()}, step=step + 1)
        self.stepper.update_path(metrics["l0"])  # train.sparse_path=auto
        self.t_window = time.perf_counter()
        return metrics

    def _resample(self, step: int) -> None:
        """Resample the features that have not fired over the last `resample.dead_window_steps`
        steps, from inputs of the last `resample.loss_sample_batches` batches."""
        cfg, rs, tr = self.cfg, self.cfg.resample, self.cfg.train
        dead = (step - self.last_fired) >= rs.dead_window_steps
        batches = [self.source.train_batch(max(step - i, 0), tr.batch_size)
                   for i in range(rs.loss_sample_batches)]  # fmt: skip
        inputs = torch.cat(batches).to(self.device, self.dtype) * self.norm_scale
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)  # resumable: by step
        n = resample_dead_features_(self.sae, self.optimizer, dead, inputs, rs.encoder_scale,
                                    gen, chunk_rows=tr.batch_size)  # fmt: skip
        self.last_fired.masked_fill_(dead, step)  # a fresh feature gets a full window to fire
        self.logger.log({"train/resampled": n}, step=step + 1)

    def checkpoint(self, done: int) -> None:
        """Save everything a resume needs after `done` steps (unless saved already)."""
        if self.checkpoint_dir is not None and self.saved_step != done:
            self._checkpoint(done)

    def _checkpoint(self, done: int) -> None:
        """Save everything a resume needs after `done` steps; never a checkpoint of NaNs."""
        check_finite_weights(self.sae, done, self.divergence_fix)
        with held():  # no stop signal between the state and its manifest
            save_checkpoint(
                self.checkpoint_dir,
                step=done,
                sae=self.sae,
                optimizer=self.optimizer,
                tensors={"last_fired": self.last_fired},
                meta={
                    "train_wall_s": self.wall_before + time.perf_counter() - self.t_start,
                    **({"l0_control": self.control.state_dict()} if self.control else {}),
                },
            )
        self.saved_step = done
