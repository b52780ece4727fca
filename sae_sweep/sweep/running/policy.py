"""Skip / resume policy: what a sweep job does when its folder already holds a record.

Re-running a sweep into the same `hydra.sweep.dir` reaches the same job folders (they are
named by variant, lambda and seed, not by job number). Per folder:

| found in the folder                              | action                                    |
|--------------------------------------------------|-------------------------------------------|
| nothing                                          | NEW: train from step 0                    |
| summary status `done`                            | SKIP_DONE                                 |
| summary status `failed`                          | SKIP_FAILED, or RERUN with rerun_failed   |
| no summary / `interrupted`, a checkpoint         | RESUME from the checkpoint                |
| no summary / `interrupted`, no checkpoint        | NEW                                       |
| a config.yaml that differs from this job's       | CONFLICT: left untouched, reported        |

RERUN and RESUME both continue from the last checkpoint when there is one (a job that ran
out of memory or lost its node loses no work); delete the folder to start a job over.
Whether configs differ is record/config_match.py's answer, the same a single run gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ...record import layout
from ...record.config_match import recorded_differences
from ...record.layout import checkpoint_step
from ...record.run_logger import keep_metrics_through


class Action(str, Enum):
    NEW = "new"
    RESUME = "resume"
    RERUN = "rerun"
    SKIP_DONE = "skip_done"
    SKIP_FAILED = "skip_failed"
    CONFLICT = "conflict"

    @property
    def trains(self) -> bool:
        return self in (Action.NEW, Action.RESUME, Action.RERUN)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    checkpoint_step: int | None = None


def decide(job_dir: Path, config: dict[str, Any], rerun_failed: bool) -> Decision:
    """What to do with `job_dir` for a job whose resolved config is `config`."""
    job_dir = Path(job_dir)
    differences = recorded_differences(job_dir, config)
    if differences is not None:
        return Decision(
            Action.CONFLICT,
            f"the folder holds a job with a different config ({differences}); "
            "use a new hydra.sweep.dir, or delete the folder",
        )
    status = (layout.read_summary(job_dir) or {}).get("status")
    step = checkpoint_step(job_dir)
    if status == "done":
        return Decision(Action.SKIP_DONE, "finished in an earlier launch")
    if status == "failed":
        if rerun_failed:
            return Decision(Action.RERUN, "failed earlier; rerun_failed=true", step)
        return Decision(Action.SKIP_FAILED, "failed earlier (re-run it with rerun_failed=true)")
    if step is not None:
        return Decision(Action.RESUME, f"interrupted; resuming from step {step}", step)
    return Decision(Action.NEW, "new job")


def prepare(job_dir: Path, decision: Decision) -> None:
    """Make the folder ready for training: drop the stale summary, and the metrics logged
    after the checkpoint the job resumes from (record/run_logger.py)."""
    (Path(job_dir) / layout.SUMMARY).unlink(missing_ok=True)
    keep_metrics_through(job_dir, decision.checkpoint_step)
