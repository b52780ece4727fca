"""Sweep files: `sweeps/*.yaml` become the options of the `sweep` config group.

`sae-sweep +sweep=NAME` then selects `sweeps/NAME.yaml` from any working directory, and
command-line overrides combine with it as with any config group. The files are stored in
Hydra's ConfigStore (group `sweep`, package `_global_`) when `sae_sweep.main` is imported,
so launcher workers (joblib, submitit) see them too. Files whose name starts with `_` are
shared bases that sweep files include (`defaults: [_base]`), not sweeps to run.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from ..resources import SWEEPS_DIR

GROUP = "sweep"


def available_sweeps(sweeps_dir: Path = SWEEPS_DIR) -> list[str]:
    """Names of the runnable sweeps (the `_`-prefixed bases left out)."""
    return sorted(p.stem for p in sweeps_dir.glob("*.yaml") if not p.stem.startswith("_"))


def register_sweeps(sweeps_dir: Path = SWEEPS_DIR) -> None:
    """Store every `sweeps/*.yaml` as option `<stem>` of the config group `sweep`."""
    cs = ConfigStore.instance()
    for path in sorted(sweeps_dir.glob("*.yaml")):
        cs.store(
            group=GROUP,
            name=path.stem,
            node=OmegaConf.load(path),
            package="_global_",
            provider=f"sae_sweep ({sweeps_dir})",
        )
