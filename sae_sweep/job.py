"""One job: train one SAE from a validated config and leave its complete record (DESIGN 5).

The record, in the job's output directory:
    config.yaml          the resolved config
    metrics.jsonl        train/... every log_every steps, eval/... at the end
    summary.json         status, held-out metrics, steps, wall time, every knob, versions
    sae.safetensors      the weights, with sae_config.json beside them
    latent_firing.safetensors  per-latent firing frequency on the held-out tokens
    saelens/             the SAE in SAELens's format, when W&B logs it as an artifact
    ground_truth.safetensors   the true feature directions (synthetic data)
    checkpoint/          resumable training state
Every file is written atomically. A failed job writes a summary with status `failed`
and its traceback, then re-raises (an interrupted one: status `interrupted`, resumable).
"""

from __future__ import annotations

import logging
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
from .config.validation import validate
from .data import build_source, estimate_norm_scale
from .evaluation import evaluate
from .export.run import SAELENS_DIR, export_run
from .models import build_sae
from .record import RunLogger, atomic_write_text, replace_atomically
from .record.versions import versions
from .record.weights import save_firing, save_sae
from .training.loop import train

logger = logging.getLogger("sae_sweep")

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoint"


def run_job(cfg: Config, out_dir: Path) -> dict[str, Any]:
    """Train, evaluate and record one SAE; returns the summary written to summary.json."""
    validate(cfg)  # before anything is written: a bad config leaves no record behind
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    atomic_write_text(out_dir / CONFIG_FILE, OmegaConf.to_yaml(resolved))
    started, t0 = _now(), time.perf_counter()
    base = {
        "variant": cfg.variant,
        "sweep": cfg.sweep,
        "knobs": _flatten(resolved),
        "versions": versions(),
        "started": started,
    }

    with RunLogger(out_dir, cfg.logger, resolved, _tags(cfg), default_name=out_dir.name) as log:
        try:
            summary = _train_and_evaluate(cfg, out_dir, log, base["knobs"])
            summary.update(status="done", error=None, traceback=None)
        except BaseException as exc:
            failed = {
                # Ctrl-C, SystemExit (e.g. a SLURM preemption requeue): resumable, not failed
                "status": "failed" if isinstance(exc, Exception) else "interrupted",
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
            log.write_summary(
                {**failed, **base, "wall_s": time.perf_counter() - t0, "ended": _now()}
            )
            raise
        summary = {**summary, **base, "wall_s": time.perf_counter() - t0, "ended": _now()}
        log.write_summary(summary)
    return summary


def _train_and_evaluate(
    cfg: Config, out_dir: Path, log: RunLogger, knobs: dict[str, Any]
) -> dict[str, Any]:
    device = resolve_device(cfg.device)
    dtype = getattr(torch, cfg.dtype.value if hasattr(cfg.dtype, "value") else cfg.dtype)
    torch.manual_seed(cfg.seed)
    source = build_source(cfg.data, run_seed=cfg.seed, device=device)
    tr = cfg.train
    norm_scale = (
        # a cache records its dataset-wide scalar; other sources estimate it on a few batches
        getattr(source, "norm_scale", None)
        or estimate_norm_scale(source, tr.norm_estimate_batches, tr.batch_size)
        if tr.normalize_input
        else 1.0
    )
    if source.ground_truth is not None:
        with replace_atomically(out_dir / "ground_truth.safetensors") as tmp:
            save_file({"directions": source.ground_truth.float().cpu().contiguous()}, str(tmp))
    sae = build_sae(cfg.sae, d_in=source.d, seed=cfg.seed).to(device, dtype)

    result = train(
        cfg, sae, source, log, norm_scale=norm_scale, checkpoint_dir=out_dir / CHECKPOINT_DIR
    )
    firing: dict = {}
    metrics = evaluate(sae, source, norm_scale, tr.eval_batch_size, firing=firing)
    log.log({f"eval/{k}": v for k, v in metrics.items() if v is not None}, step=result.steps)
    save_sae(out_dir, sae, cfg.sae.kind, {"norm_scale": norm_scale, "config": knobs})
    save_firing(out_dir, firing["frequency"], metrics["dead_window_tokens"])
    artifact = _log_sae_artifact(cfg, out_dir, log, {**metrics, "norm_scale": norm_scale})
    return {
        **metrics,
        "steps": result.steps,
        "resumed_from_step": result.resumed_from_step,
        "train_wall_s": result.train_wall_s,
        "activations_per_s": result.activations_per_s,
        "norm_scale": norm_scale,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "device": str(device),
        "peak_memory_mb": _peak_memory_mb(device),
        "sae_artifact": artifact,
    }


def _log_sae_artifact(cfg: Config, out_dir: Path, log: RunLogger, metrics: dict) -> str | None:
    """With W&B on: export the SAE to `saelens/` in the record and log it as an artifact.

    The SAE is trained and saved by now: a W&B failure here is reported, not fatal.
    """
    if log.wandb_run is None:
        return None
    known = {**metrics, "variant": cfg.variant, "sweep": cfg.sweep}
    try:
        folder = export_run(out_dir, out_dir / SAELENS_DIR, summary=known)
        return log.log_sae_artifact(folder, metrics)
    except Exception as exc:  # noqa: BLE001 - the record is complete without the artifact
        logger.warning("the SAE artifact was not logged to W&B (%s: %s); the record is complete "
                     "and `sae-export %s OUT` writes the same folder", type(exc).__name__, exc,
                     out_dir)  # fmt: skip
        return None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but CUDA is not available here. Fix: device=cpu")
    return device


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _tags(cfg: Config) -> list[str]:
    """W&B tags carrying the recipe knobs, so runs filter by knob in the W&B UI."""
    val = lambda v: getattr(v, "value", v)  # noqa: E731
    tags = [
        f"sae={val(cfg.sae.kind)}",
        f"penalty={val(cfg.penalty.kind)}",
        f"unit_norm={cfg.train.unit_norm_decoder}",
        f"resample={cfg.resample.enabled}",
        f"enc_transpose={cfg.sae.encoder_init_transpose}",
        f"lambda_warmup={cfg.penalty.warmup_steps > 0}",
    ]
    if cfg.sae.aux_decoder is not None:
        tags.append(f"aux={val(cfg.sae.aux_decoder)}")
    if cfg.penalty.decoder_norm_grad is not None:
        tags.append(f"norm={val(cfg.penalty.decoder_norm_grad)}")
    if cfg.variant:
        tags.append(f"variant={cfg.variant}")
    return tags


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
