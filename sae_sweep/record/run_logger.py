"""One logger for the local record and W&B together: the same metric names in both.

Local: `metrics.jsonl` (one JSON object per logging step, flushed at once) and, at the end,
`summary.json`. W&B: one run per job (a mirror for sharing, never the only copy), always
finished in a `finally`. A packed job holds several loggers open at once, so each W&B run
is a run of its own (`reinit="create_new"`), never the process's single current run.

A W&B run that cannot start (no key, no network) is a job failure like any other: `open`
raises `WandbStartError` with the reason and the fix, within `logger.init_timeout_s`; or,
with `logger.fallback=offline`, the job logs to an offline W&B run instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from ..config.schema import LoggerConfig, LoggerFallback, LoggerMode
from . import layout
from .atomic import atomic_write_json, atomic_write_text

log = logging.getLogger("sae_sweep")


class WandbStartError(RuntimeError):
    """W&B could not start the job's run (no API key, no network, a server error)."""


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
        self._failed = False

    def __enter__(self) -> RunLogger:
        self.open()
        return self

    def open(self) -> None:
        """Open the local record, then start the W&B run (may raise WandbStartError)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._metrics_fh = open(self.out_dir / layout.METRICS, "a")  # noqa: SIM115 -- closed in close()
        mode = LoggerMode(self.cfg.mode)
        if mode == LoggerMode.disabled:
            return
        try:
            self.wandb_run = self._start_wandb(mode)
        except Exception as exc:  # noqa: BLE001 -- W&B raises many types; each is the same fault
            lines = str(exc).strip().splitlines()
            reason = f"{type(exc).__name__}: {lines[0] if lines else ''}"
            fallback = LoggerFallback(self.cfg.fallback)
            if mode == LoggerMode.online and fallback == LoggerFallback.offline:
                log.warning("W&B online failed (%s); logging offline (logger.fallback)", reason)
                import wandb

                # the failed attempt keeps the run id claimed in W&B's service process: a
                # fresh service lets the offline run keep the id (`wandb sync` then uploads
                # it as this job's run)
                wandb.teardown()
                self.wandb_run = self._start_wandb(LoggerMode.offline)
                return
            raise WandbStartError(
                f"W&B could not start its {mode.value} run ({reason}). The local record is "
                "unaffected. Fix: logger=offline (upload later: `sae-analysis SWEEP --sync`), "
                "logger=disabled, logger.fallback=offline to fall back on its own, or "
                "`wandb login` / check the network and logger.entity/project."
            ) from exc

    def _start_wandb(self, mode: LoggerMode):
        import wandb

        return wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            group=self.cfg.group,
            job_type=JOB_TYPE,
            name=self.cfg.name or self.default_name,
            tags=sorted(set(self.tags) | set(self.cfg.tags)),
            config=self.config,
            mode=mode.value,
            dir=str(self.out_dir),
            # A resumed job continues its own W&B run instead of starting a second one.
            id=_wandb_run_id(self.out_dir),
            resume="allow",
            reinit="create_new",
            settings=wandb.Settings(
                silent=True,
                console="off",
                # W&B's own default waits 90 s for an unreachable server before failing
                init_timeout=self.cfg.init_timeout_s,
                # per-run work a sweep job does not need: the record holds the versions and
                # sweep.json the git commit; listing the installed packages took 0.6 s a run
                save_code=False,
                disable_git=True,
                x_save_requirements=False,
                x_disable_stats=not self.cfg.system_metrics,
                x_disable_meta=not self.cfg.system_metrics,
            ),
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        record = {"step": step, **{k: _json_number(v) for k, v in metrics.items()}}
        self._metrics_fh.write(json.dumps(record) + "\n")
        self._metrics_fh.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.out_dir / layout.SUMMARY
        atomic_write_json(path, {k: _json_number(v) for k, v in summary.items()})
        if self.wandb_run is not None:
            flat = {k: v for k, v in summary.items() if not isinstance(v, dict)}
            self.wandb_run.summary.update(flat)
        return path

    def mark_failed(self) -> None:
        """The job failed without raising through this logger (a packed job goes on)."""
        self._failed = True

    def log_sae_artifact(self, folder: Path, metadata: dict[str, Any]) -> str | None:
        """Log an exported SAE folder as the W&B artifact `sae_artifact_name(run id)`.

        The files are referenced in place (policy "immutable"), so an offline run's staged
        artifact syncs later from the record itself. Offline, the references are relative to
        the job folder (`wandb sync` runs there: analysis/sync.py), so they survive moving the
        sweep folder, also to another machine. Returns the name, or None without W&B.
        """
        if self.wandb_run is None:
            return None
        import wandb

        name = sae_artifact_name(self.wandb_run.id)
        artifact = wandb.Artifact(name, type=SAE_ARTIFACT_TYPE, metadata=metadata)
        artifact.add_dir(str(folder), policy="immutable")
        if self.wandb_run.offline:  # online, W&B uploads now, from the absolute paths
            for entry in artifact.manifest.entries.values():
                entry.local_path = os.path.relpath(entry.local_path, self.out_dir)
        self.wandb_run.log_artifact(artifact)
        return name

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    def close(self, failed: bool = False) -> None:
        try:
            if self._metrics_fh is not None:
                self._metrics_fh.close()
                self._metrics_fh = None
        finally:
            run, self.wandb_run = self.wandb_run, None
            if run is not None:
                try:
                    run.finish(exit_code=1 if failed or self._failed else 0)
                except Exception as exc:  # noqa: BLE001 -- the local record is already complete
                    log.warning(
                        "W&B could not finish its run (%s: %s); the local record in %s is "
                        "complete (an offline run can be synced with `wandb sync`)",
                        type(exc).__name__,
                        exc,
                        self.out_dir,
                    )


JOB_TYPE = "train"
"""The W&B job_type of a job's run (the analysis's summary run is "analysis")."""
SAE_ARTIFACT_TYPE = "sae"


def keep_metrics_through(job_dir: Path, step: int | None) -> None:
    """Before a job resumes from the checkpoint of `step` (None: starts afresh), drop the lines
    of metrics.jsonl logged after it (they will be logged again), every eval/ line (logged
    after the last checkpoint, at its step: a job killed after it logs it again) and a
    half-written last line of a killed job."""
    metrics = Path(job_dir) / layout.METRICS
    if not metrics.exists():
        return
    keep = []
    for line in metrics.read_text().splitlines():
        try:
            entry = json.loads(line)
            logged_at = entry.get("step")
        except (json.JSONDecodeError, AttributeError):
            continue
        if any(k.startswith("eval/") for k in entry):
            continue
        if step is not None and logged_at is not None and logged_at <= step:
            keep.append(line)
    atomic_write_text(metrics, "".join(f"{line}\n" for line in keep))


def sae_artifact_name(wandb_run_id: str) -> str:
    """The artifact a job's exported SAE is logged as (its versions: `:latest`, `:v0`...)."""
    return f"sae-{wandb_run_id}"


def _wandb_run_id(out_dir: Path) -> str:
    """A stable id per job folder, kept in the folder so a resumed job reuses it."""
    path = out_dir / layout.WANDB_RUN_ID
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
