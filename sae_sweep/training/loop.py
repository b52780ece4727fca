"""The training loop: one screen, top to bottom (lr, lambda, forward, loss, backward, step, log).

Metrics accumulate on the device and are read once every `train.log_every` steps: the loop
never synchronises with the device on an ordinary step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config.schema import Config
from ..data.source import ActivationSource, DataError
from ..models.base import SparseAutoencoder
from ..record.run_logger import RunLogger
from .checkpoint import load_checkpoint, save_checkpoint
from .precision import set_matmul_precision
from .progress import JobProgress
from .resampling import resample_dead_features_
from .schedules import lambda_at, lr_at
from .step import LossPath, StepOutput, Stepper, make_optimizer, to_device


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


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


def train(
    cfg: Config,
    sae: SparseAutoencoder,
    source: ActivationSource,
    logger: RunLogger,
    *,
    norm_scale: float,
    checkpoint_dir: Path | None,
    progress: JobProgress | None = None,
) -> TrainResult:
    run = TrainingRun(cfg, sae, source, logger, norm_scale=norm_scale,
                      checkpoint_dir=checkpoint_dir, progress=progress)  # fmt: skip
    for step in range(run.start, cfg.train.steps):
        run.step(step, source.train_batch(step, cfg.train.batch_size))
    return run.result()


class TrainingRun:
    """One SAE's training between steps: `train` steps one, a packed job several on one batch.

    Restores the checkpoint when there is one; `start` is the first step still to train.
    """

    def __init__(self, cfg: Config, sae: SparseAutoencoder, source: ActivationSource,
                 logger: RunLogger, *, norm_scale: float, checkpoint_dir: Path | None,
                 progress: JobProgress | None = None):  # fmt: skip
        self.cfg, self.sae, self.source, self.logger = cfg, sae, source, logger
        self.norm_scale, self.checkpoint_dir, self.progress = norm_scale, checkpoint_dir, progress
        self.divergence_fix = _divergence_fix(cfg)
        tr, rs = cfg.train, cfg.resample
        self.device, self.dtype = sae.W_dec.device, sae.W_dec.dtype
        self.optimizer = make_optimizer(sae, tr.lr, tr.adam_betas)
        self.matmul_precision = set_matmul_precision(tr.matmul_dtype, self.device)
        self.last_fired = torch.full((sae.d_sae,), -1, dtype=torch.long, device=self.device)
        self.start, self.wall_before = 0, 0.0
        if checkpoint_dir is not None:
            restored = load_checkpoint(
                checkpoint_dir, sae, self.optimizer, ("last_fired",), ("train_wall_s",)
            )
            if restored is not None:
                self.start, extra, meta = restored
                self.last_fired, self.wall_before = extra["last_fired"], meta["train_wall_s"]
        self.resample_steps = set(rs.at_steps) if rs.enabled else set()
        self.window = _WindowSums(self.device, self.divergence_fix)
        self.stepper = Stepper(cfg, sae, self.optimizer)
        self.t_start = self.t_window = time.perf_counter()
        if progress is not None:
            progress.start(self.start)

    def step(self, step: int, batch: torch.Tensor) -> None:
        """Train on `batch`, the source's batch of `step`: lr, lambda, step, log, checkpoint."""
        cfg, tr, pen = self.cfg, self.cfg.train, self.cfg.penalty
        lr = lr_at(
            step,
            base_lr=tr.lr,
            steps=tr.steps,
            warmup_steps=tr.lr_warmup_steps,
            decay_fraction=tr.lr_decay_fraction,
        )
        lam = lambda_at(step, coefficient=pen.coefficient, warmup_steps=pen.warmup_steps)

        x = to_device(batch, self.device, self.dtype, tr.pin_memory) * self.norm_scale
        out = self.stepper.step(x, lr, lam)  # loss, backward, constraint, clip, Adam (step.py)

        fired = self.window.add(x, out)
        self.last_fired.masked_fill_(fired, step)
        done = step + 1
        if done in self.resample_steps:
            n = _resample(cfg, self.sae, self.optimizer, self.source, self.last_fired, step,
                          self.norm_scale)  # fmt: skip
            self.logger.log({"train/resampled": n}, step=done)

        checkpoint_due = self.checkpoint_dir is not None and (
            done == tr.steps or (tr.checkpoint_every and done % tr.checkpoint_every == 0)
        )
        metrics = None
        if done % tr.log_every == 0 or checkpoint_due:
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
            self.logger.log({f"train/{k}": v for k, v in metrics.items()}, step=done)
            self.stepper.update_path(metrics["l0"])  # train.sparse_path=auto
            self.t_window = time.perf_counter()
        if self.progress is not None:
            self.progress.step(done, metrics)  # a clock check; reports every progress_every_s
        if checkpoint_due:
            _check_finite_weights(self.sae, done, self.divergence_fix)  # never checkpoint NaNs
            save_checkpoint(
                self.checkpoint_dir,
                step=done,
                sae=self.sae,
                optimizer=self.optimizer,
                tensors={"last_fired": self.last_fired},
                meta={"train_wall_s": self.wall_before + time.perf_counter() - self.t_start},
            )

    def result(self) -> TrainResult:
        """After the last step: the run's figures; raises if the final weights are not finite."""
        steps = self.cfg.train.steps
        _check_finite_weights(self.sae, steps, self.divergence_fix)
        wall = self.wall_before + time.perf_counter() - self.t_start
        trained = steps - self.start
        speed = trained * self.cfg.train.batch_size / max(wall - self.wall_before, 1e-9)
        paths = [p.value for p in self.stepper.paths_used]
        return TrainResult(
            steps, wall, speed if trained else 0.0, self.start, paths, self.matmul_precision
        )


def _divergence_fix(cfg: Config) -> str:
    """What to change after a divergence: grad clipping only where it is not already on."""
    tr = cfg.train
    if tr.grad_clip is None:
        return "Fix: lower train.lr or penalty.coefficient, or set train.grad_clip."
    return (
        f"Fix: lower train.lr (now {tr.lr}) or penalty.coefficient (now "
        f"{cfg.penalty.coefficient}), or tighten train.grad_clip (now {tr.grad_clip})."
    )


def _check_finite_weights(sae: SparseAutoencoder, step: int, fix: str) -> None:
    """Raise TrainingDivergedError if a parameter holds NaN/inf (one device sync)."""
    flags = torch.stack([torch.isfinite(p).all() for p in sae.parameters()])
    if not bool(flags.all()):
        params = (name for name, _ in sae.named_parameters())
        names = [name for name, ok in zip(params, flags.tolist(), strict=True) if not ok]
        raise TrainingDivergedError(
            f"the SAE's weights became non-finite (NaN/inf) by step {step}, in {names}. {fix}"
        )


def _resample(cfg, sae, optimizer, source, last_fired, step, norm_scale) -> int:
    """Resample features that have not fired over the last `resample.dead_window_steps` steps."""
    rs, tr = cfg.resample, cfg.train
    dead = (step - last_fired) >= rs.dead_window_steps
    device, dtype = sae.W_dec.device, sae.W_dec.dtype
    inputs = torch.cat(
        [source.train_batch(max(step - i, 0), tr.batch_size) for i in range(rs.loss_sample_batches)]
    ).to(device, dtype)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)  # resumable: seeded by step
    n = resample_dead_features_(sae, optimizer, dead, inputs * norm_scale, rs.encoder_scale, gen,
                                chunk_rows=tr.batch_size)  # fmt: skip
    last_fired.masked_fill_(dead, step)  # a fresh feature gets a full window before it is dead
    return n


class _WindowSums:
    """On-device sums of the training metrics over one logging window."""

    NAMES = ("loss", "recon", "sparse", "aux", "l0", "variance", "nonfinite_inputs")

    def __init__(self, device: torch.device, divergence_fix: str):
        self.divergence_fix = divergence_fix
        self.sums = torch.zeros(len(self.NAMES), dtype=torch.float64, device=device)
        self.steps = 0

    def add(self, x: torch.Tensor, out: StepOutput) -> torch.Tensor:
        """Add one step's values; returns the (M,) mask of features that fired in the batch."""
        terms = out.terms
        with torch.no_grad():
            values = torch.stack(
                [
                    terms.total,
                    terms.recon,
                    terms.sparse,
                    terms.aux,
                    out.counts.sum().float() / x.shape[0],
                    (x - x.mean(0)).pow(2).sum(-1).mean(),
                    (~torch.isfinite(x)).sum().float(),
                ]
            )
            self.sums += values.double()
        self.steps += 1
        return out.counts > 0

    def read_and_reset(self, step: int) -> tuple[dict[str, float], int]:
        """Mean of each metric over the window, and the window's number of steps."""
        values = dict(zip(self.NAMES, (self.sums / self.steps).tolist(), strict=True))
        first, n_steps = step - self.steps + 1, self.steps
        self.sums.zero_()
        self.steps = 0
        bad_inputs = values.pop("nonfinite_inputs") * n_steps
        if bad_inputs:
            raise DataError(
                f"the training activations of steps {first}..{step} hold {int(bad_inputs)} "
                "non-finite values (NaN/inf). Fix or recompute the activation data."
            )
        if not all(map(math.isfinite, values.values())):
            raise TrainingDivergedError(
                f"the loss became non-finite between steps {first} and {step} ({values}). "
                f"{self.divergence_fix}"
            )
        variance = values.pop("variance")
        values["mse"] = values["recon"]
        values["fvu"] = values["recon"] / variance if variance > 0 else float("nan")
        return values, n_steps
