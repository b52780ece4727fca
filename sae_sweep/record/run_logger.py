"""One logger for the local record and W&B together: the same metric names in both.

Local: `metrics.jsonl` (one JSON object per logging step, flushed at once) and, at the end,
`summary.json`. W&B: one run per job (a mirror for sharing, never the only copy), always
finished in a `finally`, or a serial multirun would log every job into the first run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..config.schema import LoggerConfig, LoggerMode
from .atomic import atomic_write_json

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


class RunLogger:
    def __init__(
        self,
        out_dir: Path,
        cfg: LoggerConfig,
        config: dict[str, Any],
        tags: list[str],
        default_name: str,
    ):
        self.out_dir = Path(out_dir)
        self.cfg = cfg
        self.config = config
        self.tags = tags
        self.default_name = default_name
        self.wandb_run = None
        self._metrics_fh = None

    def __enter__(self) -> RunLogger:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._metrics_fh = open(self.out_dir / METRICS_FILE, "a")
        if LoggerMode(self.cfg.mode) != LoggerMode.disabled:
            self.wandb_run = self._start_wandb()
        return self

    def _start_wandb(self):
        import wandb

        return wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            group=self.cfg.group,
            name=self.cfg.name or self.default_name,
            tags=sorted(set(self.tags) | set(self.cfg.tags)),
            config=self.config,
            mode=LoggerMode(self.cfg.mode).value,
            dir=str(self.out_dir),
            # A resumed job continues its own W&B run instead of starting a second one.
            id=_wandb_run_id(self.out_dir),
            resume="allow",
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        record = {"step": step, **{k: _json_number(v) for k, v in metrics.items()}}
        self._metrics_fh.write(json.dumps(record) + "\n")
        self._metrics_fh.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.out_dir / SUMMARY_FILE
        atomic_write_json(path, {k: _json_number(v) for k, v in summary.items()})
        if self.wandb_run is not None:
            flat = {k: v for k, v in summary.items() if not isinstance(v, dict)}
            self.wandb_run.summary.update(flat)
        return path

    def log_sae_artifact(self, folder: Path, metadata: dict[str, Any]) -> str | None:
        """Log an exported SAE folder as the W&B artifact `sae_artifact_name(run id)`.

        The files are referenced in place (policy "immutable"), so an offline run's staged
        artifact syncs later from the record itself. Returns the name, or None without W&B.
        """
        if self.wandb_run is None:
            return None
        import wandb

        name = sae_artifact_name(self.wandb_run.id)
        artifact = wandb.Artifact(name, type=SAE_ARTIFACT_TYPE, metadata=metadata)
        artifact.add_dir(str(folder), policy="immutable")
        self.wandb_run.log_artifact(artifact)
        return name

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._metrics_fh is not None:
                self._metrics_fh.close()
        finally:
            if self.wandb_run is not None:
                self.wandb_run.finish(exit_code=1 if exc_type else 0)
                self.wandb_run = None


SAE_ARTIFACT_TYPE = "sae"


def sae_artifact_name(wandb_run_id: str) -> str:
    """The artifact a job's exported SAE is logged as (its versions: `:latest`, `:v0`...)."""
    return f"sae-{wandb_run_id}"


def _wandb_run_id(out_dir: Path) -> str:
    """A stable id per job folder, kept in the folder so a resumed job reuses it."""
    path = out_dir / "wandb_run_id.txt"
    if path.exists():
        return path.read_text().strip()
    run_id = os.urandom(8).hex()
    path.write_text(run_id)
    return run_id


def _json_number(v):
    """NaN/inf are not JSON: write them as strings the analysis can parse back."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v
