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
Configs differ when a knob both have is set differently (`differing_keys`): logging,
device and launch options never count, nor do knobs only one of them has (a record
written by another version of sae-sweep).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ...config.schema import LAUNCH_KEYS
from ...record import layout
from ...record.atomic import atomic_write_text
from ...record.layout import checkpoint_step

# Top-level keys that do not change what is trained: a re-run may differ in them. (Launch
# options are no longer recorded, but records of earlier versions hold `rerun_failed`.)
# The target-L0 settings steer the sweep, not the job: a re-run with more targets reuses the
# grid. A recipe name only labels a preset.
IGNORED_KEYS = ("logger", "device", *LAUNCH_KEYS, "l0_targets", "l0_tolerance", "l0_max_rounds",
                "l0_target", "recipe")  # fmt: skip
# Nested knobs that check or move data without changing it.
IGNORED_PATHS = ("data.verify_hashes", "train.pin_memory")


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
    recorded = layout.read_yaml(job_dir / layout.CONFIG)
    if recorded is not None and differing_keys(recorded, config):
        keys = ", ".join(differing_keys(recorded, config)[:5])
        return Decision(
            Action.CONFLICT,
            f"the folder holds a job with a different config ({keys}); "
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
    after the checkpoint the job resumes from (they will be logged again). The eval/ line is
    logged after the last checkpoint, at its step: a job killed after it logs it again, so
    it goes too (else metrics.jsonl would hold it twice)."""
    (Path(job_dir) / layout.SUMMARY).unlink(missing_ok=True)
    metrics = Path(job_dir) / layout.METRICS
    if not metrics.exists():
        return
    keep = []
    for line in metrics.read_text().splitlines():
        try:
            entry = json.loads(line)
            step = entry.get("step")
        except (json.JSONDecodeError, AttributeError):
            continue  # a half-written last line of a killed job
        if any(k.startswith("eval/") for k in entry):
            continue
        ckpt = decision.checkpoint_step
        if ckpt is not None and step is not None and step <= ckpt:
            keep.append(line)
    atomic_write_text(metrics, "".join(f"{line}\n" for line in keep))


def differing_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The knobs set differently in two configs. A knob that only one of them has is left
    out: a record written by an earlier (or later) sae-sweep lacks the knobs added since (or
    holds ones removed since), and upgrading in the middle of a sweep must not turn every
    finished job into a conflict."""
    fa, fb = _flatten(_comparable(a)), _flatten(_comparable(b))
    both = (fa.keys() & fb.keys()) - set(IGNORED_PATHS)
    return sorted(k for k in both if fa[k] != fb[k])


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in IGNORED_KEYS}


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
