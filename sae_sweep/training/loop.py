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
from .resampling import resample_dead_features_
from .schedules import lambda_at, lr_at
from .step import LossPath, StepOutput, Stepper, make_optimizer, set_matmul_precision, to_device


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    steps: int
    train_wall_s: float
    activations_per_s: float
    resumed_from_step: int


def train(
    cfg: Config,
    sae: SparseAutoencoder,
    source: ActivationSource,
    logger: RunLogger,
    *,
    norm_scale: float,
    checkpoint_dir: Path | None,
) -> TrainResult:
    tr, pen, rs = cfg.train, cfg.penalty, cfg.resample
    device, dtype = sae.W_dec.device, sae.W_dec.dtype
    optimizer = make_optimizer(sae, tr.lr, tr.adam_betas)
    set_matmul_precision(tr.tf32)
    last_fired = torch.full((sae.d_sae,), -1, dtype=torch.long, device=device)  # step index
    start, wall_before = 0, 0.0
    if checkpoint_dir is not None:
        restored = load_checkpoint(
            checkpoint_dir, sae, optimizer, ("last_fired",), ("train_wall_s",)
        )
        if restored is not None:
            start, extra, meta = restored
            last_fired, wall_before = extra["last_fired"], meta["train_wall_s"]
    resample_steps = set(rs.at_steps) if rs.enabled else set()
    fix = _divergence_fix(cfg)  # the advice a divergence error gives
    window = _WindowSums(device, fix)
    stepper = Stepper(cfg, sae, optimizer)
    t_start = t_window = time.perf_counter()

    for step in range(start, tr.steps):
        lr = lr_at(
            step,
            base_lr=tr.lr,
            steps=tr.steps,
            warmup_steps=tr.lr_warmup_steps,
            decay_fraction=tr.lr_decay_fraction,
        )
        lam = lambda_at(step, coefficient=pen.coefficient, warmup_steps=pen.warmup_steps)

        batch = source.train_batch(step, tr.batch_size)
        x = to_device(batch, device, dtype, tr.pin_memory) * norm_scale
        out = stepper.step(x, lr, lam)  # loss, backward, constraint, clip, Adam (step.py)

        fired = window.add(x, out)
        last_fired.masked_fill_(fired, step)
        done = step + 1
        if done in resample_steps:
            n = _resample(cfg, sae, optimizer, source, last_fired, step, norm_scale)
            logger.log({"train/resampled": n}, step=done)

        checkpoint_due = checkpoint_dir is not None and (
            done == tr.steps or (tr.checkpoint_every and done % tr.checkpoint_every == 0)
        )
        if done % tr.log_every == 0 or checkpoint_due:
            metrics, n_steps = window.read_and_reset(step)  # the one device sync of the window
            now = time.perf_counter()
            dead = ((step - last_fired) * tr.batch_size >= tr.dead_window_tokens).float().mean()
            metrics.update(
                lr=lr,
                coefficient=lam,
                dead_fraction=dead.item(),
                activations_per_s=n_steps * tr.batch_size / (now - t_window),
            )
            metrics["sparse_path"] = float(stepper.path == LossPath.sparse)
            logger.log({f"train/{k}": v for k, v in metrics.items()}, step=done)
            stepper.update_path(metrics["l0"])  # train.sparse_path=auto
            t_window = time.perf_counter()
        if checkpoint_due:
            _check_finite_weights(sae, done, fix)  # never checkpoint NaNs
            wall = wall_before + time.perf_counter() - t_start
            save_checkpoint(
                checkpoint_dir,
                step=done,
                sae=sae,
                optimizer=optimizer,
                tensors={"last_fired": last_fired},
                meta={"train_wall_s": wall},
            )

    _check_finite_weights(sae, tr.steps, fix)  # the last update may overflow unseen
    wall = wall_before + time.perf_counter() - t_start
    trained = tr.steps - start
    speed = trained * tr.batch_size / max(wall - wall_before, 1e-9) if trained else 0.0
    return TrainResult(tr.steps, wall, speed, start)


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
    n = resample_dead_features_(sae, optimizer, dead, inputs * norm_scale, rs.encoder_scale, gen)
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
