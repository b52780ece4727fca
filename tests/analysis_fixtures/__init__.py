"""Hand-made sweep folders following the training job's record contract (docs/design.md,
"The record"): `config.yaml` (resolved, nested), `summary.json` (flat), `metrics.jsonl` per job."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import yaml

BASE_CONFIG: dict[str, Any] = {
    "seed": 0,
    "device": "cpu",
    "dtype": "float32",
    "sae": {
        "kind": "gated",
        "expansion_factor": 4,
        "d_sae": 64,
        "aux_decoder": "frozen",
        "decoder_init_norm": 1.0,
        "encoder_init_transpose": True,
    },
    "penalty": {"kind": "l1", "coefficient": 1.0, "decoder_norm_grad": None, "warmup_steps": 0},
    "train": {
        "steps": 100,
        "batch_size": 32,
        "lr": 3e-4,
        "lr_warmup_steps": 0,
        "lr_decay_fraction": 0.2,
        "adam_betas": [0.0, 0.999],
        "grad_clip": None,
        "unit_norm_decoder": True,
        "normalize_input": True,
        "log_every": 10,
    },
    "resample": {"enabled": False},
    "data": {"kind": "synthetic", "d": 16, "n_features": 32},
    "logger": {"mode": "disabled", "project": "sae-sweep", "group": "ablation", "name": "x"},
}


def config(**overrides: Any) -> dict[str, Any]:
    """BASE_CONFIG with dotted overrides: config(**{"penalty.kind": "decoder_norm"})."""
    cfg = copy.deepcopy(BASE_CONFIG)
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out |= flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def summary(cfg: dict[str, Any], l0: float, fvu: float, **extra: Any) -> dict[str, Any]:
    """A finished synthetic-data summary."""
    s = {
        "status": "done",
        "error": None,
        "traceback": None,
        "l0": l0,
        "mse": fvu * 2.0,
        "mse_original_units": fvu * 8.0,
        "fvu": fvu,
        "explained_variance": 1 - fvu,
        "dead_fraction": 0.1,
        "dead_window_tokens": 10000,
        "shrinkage": 0.9,
        "mmcs": 1 - fvu / 2,
        "frac_recovered": 0.5,
        "mmcs_random": 0.2,
        "loss_recovered": None,
        "delta_lm_loss": None,
        "steps": cfg["train"]["steps"],
        "wall_s": 1.5,
        "activations_per_s": 1e5,
        "norm_scale": 1.3,
        "knobs": flat(cfg),
        "versions": {"torch": "2.4.0"},
        "variant": cfg.get("variant"),
        "sweep": "ablation",
    }
    return s | extra


def write_job(
    job_dir: Path,
    cfg: dict[str, Any],
    summ: dict[str, Any] | None,
    history_steps: int = 3,
    torn_last_line: bool = False,
) -> Path:
    """One job folder: .hydra/config.yaml, config.yaml, metrics.jsonl, summary.json."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / ".hydra").mkdir(exist_ok=True)
    (job_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (job_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    lines = [
        json.dumps({"step": 10 * i, "train/loss": 1.0 / (i + 1)}) for i in range(history_steps)
    ]
    if summ is not None and summ.get("status") == "done":
        lines.append(json.dumps({"step": 10 * history_steps, "eval/l0": summ["l0"]}))
    text = "\n".join(lines) + "\n"
    if torn_last_line:
        text += '{"step": 99, "train/lo'
    (job_dir / "metrics.jsonl").write_text(text)
    if summ is not None:
        (job_dir / "summary.json").write_text(json.dumps(summ))
    return job_dir


def frontier_l0(lam: float) -> float:
    return 40.0 / (1.0 + 4.0 * lam)


def make_sweep(root: Path, seeds=(0, 1), lams=(0.1, 0.3, 1.0, 3.0)) -> Path:
    """Two variants that differ in one knob (penalty.kind); decoder_norm has 20% lower FVU.

    Plus one failed job and one unfinished job (no summary, torn metrics.jsonl), jobs
    numbered like Hydra's (0, 1, ..., 10, ...) and one nested a level deeper.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    (root / "sweep.json").write_text(
        json.dumps(
            {
                "name": "ablation",
                "grid": {"penalty.kind": ["l1", "decoder_norm"]},
                "git_commit": "abc123",
                "started": "2024-06-01T12:00:00",
            }
        )  # fmt: skip
    )
    i = 0
    for kind, scale in (("l1", 1.0), ("decoder_norm", 0.8)):
        for lam in lams:
            for seed in seeds:
                cfg = config(
                    seed=seed,
                    **{"penalty.kind": kind, "penalty.coefficient": lam,
                       "logger.name": f"{kind}-{lam}-{seed}"},
                )  # fmt: skip
                l0 = frontier_l0(lam) * (1 + 0.01 * seed)
                fvu = scale * 0.5 / math.sqrt(l0) * (1 + 0.02 * seed)
                sub = root / ("nested" if i == 3 else "") / str(i)
                write_job(sub, cfg, summary(cfg, l0, fvu))
                i += 1
    bad = config(seed=2, **{"penalty.kind": "l1", "penalty.coefficient": 0.3})
    write_job(
        root / str(i), bad,
        {"status": "failed", "error": "RuntimeError: CUDA out of memory",
         "traceback": "Traceback (most recent call last):\n ...\nRuntimeError: CUDA out of memory",
         "sweep": "ablation"},
    )  # fmt: skip
    unfinished = config(seed=2, **{"penalty.kind": "decoder_norm", "penalty.coefficient": 1.0})
    write_job(root / str(i + 1), unfinished, None, history_steps=5, torn_last_line=True)
    return root
