"""The record layout: every file a job or a sweep leaves, named here and nowhere else.

A sweep folder (`hydra.sweep.dir`):
    sweep.json            the manifest: grid, git commit, launches (sweep/bookkeeping/manifest.py)
    sweep.lock            held by the launch running now; names it (sweep/bookkeeping/lock.py)
    jobs.md, jobs.json    the end-of-sweep table (sweep/bookkeeping/table.py)
    multirun.yaml         Hydra's record of the multirun
    packs/                what each packed job trains (sweep/planning/packing.py)
    targets.json          a target-L0 sweep's outcome per (variant, target)
    wandb_sync.json       which offline W&B runs `sae-analysis SWEEP --sync` uploaded
    wandb_publish.json    the W&B summary run and Report `--publish` made (re-publishing updates)
    <job folder>/         one per SAE, named by `hydra.sweep.subdir`

A job folder:
    config.yaml           the resolved config
    metrics.jsonl         train/... every log_every steps, eval/... at the end
    summary.json          status, held-out metrics, steps, wall time, every knob, versions
    sae.safetensors       the weights, with sae_config.json beside them
    ground_truth.safetensors   the true feature directions (synthetic data)
    latent_firing.safetensors  per-latent firing frequency on the held-out tokens
    progress.json         live progress (step, L0, FVU, ETA), rewritten while it runs
    saelens/              the SAE in SAELens's format, when W&B logs it as an artifact
    checkpoint/           resumable training state: state.safetensors, then meta.json (its
                          manifest: the step and each file's size; training/checkpoint.py);
                          state.previous.safetensors only while a new state is written
    checkpoint.damaged-<time>/  an unreadable checkpoint, moved aside (the re-run starts afresh)
    job.json              what the latest launch did with the job (sweep/running/task.py)
    wandb_run_id.txt      the job's W&B run id, reused on resume
    wandb/                W&B's own folder: the job's (offline) run
    .hydra/               Hydra's own copy of the job's config and overrides

To add a record file: name it here, read and write it through this module's paths, and
list it in `JOB_FILES` or `SWEEP_FILES`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

# libyaml's safe loader where PyYAML has it: the same result, about 10x faster
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# -- a job folder --
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
WEIGHTS = "sae.safetensors"
WEIGHTS_CONFIG = "sae_config.json"
GROUND_TRUTH = "ground_truth.safetensors"
FIRING = "latent_firing.safetensors"  # per-latent firing frequency on held-out tokens
SAELENS_DIR = "saelens"  # the SAE exported in SAELens's format (logged as a W&B artifact)
PROGRESS = "progress.json"  # live progress of a job (also of a cache build, in its tmp folder)
CHECKPOINT_DAMAGED_SUFFIX = (
    ".damaged-"  # an unreadable checkpoint/ moved to checkpoint.damaged-<time>
)
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE = "state.safetensors"  # inside CHECKPOINT_DIR
# inside CHECKPOINT_DIR: the state the manifest names, kept while a new one is written
CHECKPOINT_STATE_PREVIOUS = "state.previous.safetensors"
CHECKPOINT_META = "meta.json"  # inside CHECKPOINT_DIR, written last: the manifest
JOB = "job.json"
WANDB_RUN_ID = "wandb_run_id.txt"
HYDRA_DIR = ".hydra"  # Hydra writes it; a launched job that died early has only this

# -- a sweep folder --
MANIFEST = "sweep.json"
TABLE_MD = "jobs.md"
TABLE_JSON = "jobs.json"
HYDRA_MULTIRUN = "multirun.yaml"
PACKS_DIR = "packs"
TARGETS = "targets.json"  # a target-L0 sweep's outcome per (variant, target)
LAUNCH_LOCK = "sweep.lock"  # flock'ed by the launching process: one launch at a time
WANDB_SYNC = "wandb_sync.json"  # offline W&B runs uploaded so far (analysis/sync.py)
WANDB_PUBLISH = "wandb_publish.json"  # the summary run and Report published (analysis/publish.py)

JOB_FILES = (CONFIG, METRICS, SUMMARY, WEIGHTS, WEIGHTS_CONFIG, GROUND_TRUTH, FIRING,
             SAELENS_DIR, PROGRESS, CHECKPOINT_DIR, JOB, WANDB_RUN_ID)  # fmt: skip
SWEEP_FILES = (MANIFEST, LAUNCH_LOCK, TABLE_MD, TABLE_JSON, HYDRA_MULTIRUN, PACKS_DIR, TARGETS,
               WANDB_SYNC, WANDB_PUBLISH)  # fmt: skip
# Folders inside a sweep (or a job) that never hold a job of their own.
NOT_JOB_DIRS = frozenset({CHECKPOINT_DIR, PACKS_DIR, SAELENS_DIR, HYDRA_DIR, "wandb",
                          "__pycache__", "plots"})  # fmt: skip


def checkpoint_dir(job_dir: Path) -> Path:
    return Path(job_dir) / CHECKPOINT_DIR


def is_job_dir(path: Path, filenames: list[str] | None = None) -> bool:
    """Whether `path` holds a job's record (its own, or only Hydra's: launched, died early)."""
    names = set(filenames) if filenames is not None else {p.name for p in Path(path).iterdir()}
    return CONFIG in names or SUMMARY in names or (Path(path) / HYDRA_DIR / CONFIG).is_file()


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when the file is missing, unreadable or not an object."""
    try:
        loaded = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def read_yaml(path: Path) -> dict[str, Any] | None:
    """A YAML mapping from `path`, or None when missing, unreadable or not a mapping."""
    try:
        loaded = yaml.load(Path(path).read_text(), Loader=_SafeLoader)
    except (OSError, yaml.YAMLError):
        return None
    return loaded if isinstance(loaded, dict) else None


def read_summary(job_dir: Path) -> dict[str, Any] | None:
    return read_json(Path(job_dir) / SUMMARY)


def read_config(job_dir: Path) -> dict[str, Any] | None:
    """The job's resolved config; Hydra's copy for a job that died before writing its own."""
    job_dir = Path(job_dir)
    return read_yaml(job_dir / CONFIG) or read_yaml(job_dir / HYDRA_DIR / CONFIG)


def checkpoint_step(job_dir: Path) -> int | None:
    """Number of completed steps in the job's checkpoint, or None without a whole one."""
    meta = read_json(checkpoint_dir(job_dir) / CHECKPOINT_META)
    try:
        return int(meta["step"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return None


def summaries(sweep_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(job folder, summary) of every job under `sweep_dir` that wrote a readable summary."""
    found = []
    for path in sorted(Path(sweep_dir).rglob(SUMMARY)):
        summary = read_json(path)
        if summary is not None:
            found.append((path.parent, summary))
    return found
