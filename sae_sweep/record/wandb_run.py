"""What a job's W&B run carries beyond its metrics: a name a reader can tell apart from the
other runs of the sweep, the tags its knobs filter by, and its SAE as an artifact (the
RunLogger, record/run_logger.py, sends them)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.schema import Config
from ..export.run import export_run
from ..models import architecture
from . import layout
from .run_logger import RunLogger

logger = logging.getLogger("sae_sweep")


def run_name(cfg: Config) -> str:
    """The W&B run name: variant, target L0 (a refinement or L0-control job), the L0 knob
    (lambda multiplier, or k of TopK-like SAEs; `controlled` where the job steers lambda
    itself, its multiplier only the preset's start) and seed, e.g. `gated_original L0=8
    lam2.37 seed1`: what a panel's tooltip and legend show. Job folders repeat across
    variants, so their names alone do not tell runs apart."""
    parts = [cfg.variant or cfg.sae.kind]
    if cfg.l0_target is not None:
        parts.append(f"L0={cfg.l0_target:g}")
    knob = architecture(cfg.sae.kind).l0_knob
    if knob is not None:
        leaf = knob.removeprefix("sae.")
        parts.append(f"{leaf}={getattr(cfg.sae, leaf)}")
    elif cfg.train.l0_target is not None:
        parts.append("controlled")
    elif cfg.lambda_multiplier is not None:
        parts.append(f"lam{cfg.lambda_multiplier:g}")
    else:
        parts.append(f"coef={cfg.penalty.coefficient:.3g}")
    parts.append(f"seed{cfg.seed}")
    return " ".join(parts)


def run_tags(cfg: Config) -> list[str]:
    """W&B tags carrying the recipe knobs, so runs filter by knob in the W&B UI."""
    val = lambda v: getattr(v, "value", v)  # noqa: E731
    tags = [
        f"sae={cfg.sae.kind}",
        f"penalty={val(cfg.penalty.kind)}",
        f"unit_norm={cfg.train.unit_norm_decoder}",
        f"resample={cfg.resample.enabled}",
        f"enc_transpose={cfg.sae.encoder_init_transpose}",
        f"lambda_warmup={cfg.penalty.warmup_steps > 0}",
    ]
    if getattr(cfg.sae, "aux_decoder", None) is not None:
        tags.append(f"aux={val(cfg.sae.aux_decoder)}")
    if (knob := architecture(cfg.sae.kind).l0_knob) is not None:  # e.g. TopK's sae.k: k=32
        leaf = knob.removeprefix("sae.")
        tags.append(f"{leaf}={getattr(cfg.sae, leaf)}")
    if cfg.penalty.decoder_norm_grad is not None:
        tags.append(f"norm={val(cfg.penalty.decoder_norm_grad)}")
    if cfg.variant:
        tags.append(f"variant={cfg.variant}")
    if cfg.sweep:
        tags.append(f"sweep={cfg.sweep}")
    return tags


def log_sae_artifact(cfg: Config, out_dir: Path, log: RunLogger, metrics: dict) -> str | None:
    """With W&B on: export the SAE to `saelens/` in the record and log it as an artifact.

    The SAE is trained and saved by now: a W&B failure here is reported, not fatal.
    """
    if log.wandb_run is None:
        return None
    known = {**metrics, "variant": cfg.variant, "sweep": cfg.sweep}
    try:
        folder = export_run(out_dir, out_dir / layout.SAELENS_DIR, summary=known)
        return log.log_sae_artifact(folder, metrics)
    except Exception as exc:  # noqa: BLE001 - the record is complete without the artifact
        logger.warning("the SAE artifact was not logged to W&B (%s: %s); the record is complete "
                     "and `sae-export %s OUT` writes the same folder", type(exc).__name__, exc,
                     out_dir)  # fmt: skip
        return None
