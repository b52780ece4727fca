"""A record folder belongs to one configuration: whether a folder's recorded config is a job's.

A job's folder holds the resolved config it was made with (`config.yaml`). A job whose
config differs from it must neither resume that folder's checkpoint (it would continue
weights trained with other settings and record its own knobs for them) nor overwrite its
record: a sweep's job reports a conflict (sweep/running/policy.py), a single run refuses to
start (job.py). Both ask `differing_keys`. `restart=true` frees a single run's folder
(`discard_record`).

Configs differ when a knob both have is set differently: logging, device and launch
options never count, nor do knobs only one of them has (a record written by another
version of sae-sweep).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..config.schema import LAUNCH_KEYS
from . import layout

# Top-level keys that do not change what is trained: a re-run may differ in them. (Launch
# options are no longer recorded, but records of earlier versions hold `rerun_failed`.)
# The target-L0 settings steer the sweep, not the job: a re-run with more targets reuses the
# grid; so do the tuning settings (a job's tuned value is its own knob). A recipe name only
# labels a preset.
IGNORED_KEYS = ("logger", "device", *LAUNCH_KEYS, "l0_targets", "l0_tolerance", "l0_max_rounds",
                "l0_target", "l0_placement", "l0_lambda_per", "tune", "tune_criterion",
                "recipe")  # fmt: skip
# Nested knobs that check or move data without changing it.
IGNORED_PATHS = ("data.verify_hashes", "train.pin_memory")


class ConfigMismatchError(ValueError):
    """A folder holds the record of a job made with other knobs; it was left untouched."""


def differing_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The knobs set differently in two configs. A knob that only one of them has is left
    out: a record written by an earlier (or later) sae-sweep lacks the knobs added since (or
    holds ones removed since), and upgrading in the middle of a sweep must not turn every
    finished job into a conflict."""
    fa, fb = _flatten(_comparable(a)), _flatten(_comparable(b))
    both = (fa.keys() & fb.keys()) - set(IGNORED_PATHS)
    return sorted(k for k in both if fa[k] != fb[k])


def recorded_differences(job_dir: Path, config: dict[str, Any], shown: int = 5) -> str | None:
    """How the config recorded in `job_dir` differs from `config` (`penalty.coefficient: 3.0
    recorded, 50.0 now`, the first `shown` knobs), or None when it does not, or there is none."""
    recorded = layout.read_yaml(Path(job_dir) / layout.CONFIG)
    keys = differing_keys(recorded, config) if recorded is not None else []
    if not keys:
        return None
    fr, fc = _flatten(recorded), _flatten(config)
    text = "; ".join(f"{k}: {fr[k]!r} recorded, {fc[k]!r} now" for k in keys[:shown])
    return text + (f"; and {len(keys) - shown} more" if len(keys) > shown else "")


def check_same_config(job_dir: Path, config: dict[str, Any]) -> None:
    """Raise ConfigMismatchError, naming the knobs and the fix, when `job_dir` holds the record
    of a job made with other knobs than `config` (a job's resolved config)."""
    differences = recorded_differences(job_dir, config)
    if differences is not None:
        raise ConfigMismatchError(
            f"the folder {job_dir} holds a run made with other settings ({differences}); its "
            "checkpoint and record are left untouched. Fix: write this run to a new folder "
            "(hydra.run.dir=...), or add restart=true to discard that run and start this one "
            "over there."
        )


def discard_record(job_dir: Path) -> list[str]:
    """Delete the record of the job in `job_dir` (every file `layout.JOB_FILES` names: config,
    checkpoint, summary, metrics, weights, W&B run id); returns the names deleted. Other files
    (Hydra's, the user's, a damaged checkpoint kept aside) stay."""
    removed = []
    for name in layout.JOB_FILES:
        path = Path(job_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


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
