"""Packed jobs: grid points that share their data train as one job, on one stream of batches.

With `pack=K`, the sweep (sweep/lifecycle.py) groups the grid's jobs whose data stream is the
same (`pack_key`: data config, seed, device, dtype, batch size) into packs of up to K, in
grid order, and launches one job per pack. A pack travels as a file,
`<sweep dir>/packs/<launch id>/<job number>.json`, holding each member's grid number, folder
and resolved config; the launched job (its Hydra config is the pack's first member's) finds
it by its own job number, so packing works with every launcher. Each member keeps its own
job folder and record, exactly as if it had run alone.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ...config.schema import (
    ActivationsDataConfig,
    HFDataConfig,
    LaunchConfig,
    SyntheticDataConfig,
    SynthSAEBenchDataConfig,
)
from ...models import architecture
from ...record import layout
from ...record.atomic import atomic_write_json

# What must be equal for two SAEs to train on the same batches.
SHARED_KEYS = ("data", "seed", "device", "dtype", "train.batch_size")
_DATA_SCHEMAS = {"synthetic": SyntheticDataConfig, "hf": HFDataConfig,
                 "activations": ActivationsDataConfig,
                 "synthsaebench": SynthSAEBenchDataConfig}  # fmt: skip


def pack_key(config: dict[str, Any]) -> str:
    """The part of a resolved job config that fixes its stream of training batches."""
    shared = {key: OmegaConf.select(OmegaConf.create(config), key) for key in SHARED_KEYS}
    return json.dumps(OmegaConf.to_container(OmegaConf.create(shared)), sort_keys=True)


def pack_jobs(configs: list[dict[str, Any]], k: int) -> list[list[int]]:
    """Indices of `configs` grouped into packs of at most `k` that share `pack_key`.

    Packs keep grid order inside and are ordered by their first member; k <= 1 gives one
    job per config.
    """
    if k <= 1:
        return [[i] for i in range(len(configs))]
    groups: OrderedDict[str, list[int]] = OrderedDict()
    for i, config in enumerate(configs):
        groups.setdefault(pack_key(config), []).append(i)
    packs = [g[j : j + k] for g in groups.values() for j in range(0, len(g), k)]
    return sorted(packs, key=lambda p: p[0])


def pack_file(sweep_dir: Path, launch_id: str, job_num: int) -> Path:
    return Path(sweep_dir) / layout.PACKS_DIR / launch_id / f"{job_num}.json"


def write_pack(path: Path, members: list[dict[str, Any]]) -> None:
    """members: [{"job": grid number, "dir": job folder, "subdir": its name, "config": resolved}]"""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"members": members})


def read_pack(path: Path) -> list[dict[str, Any]] | None:
    """The members of a pack, or None when `path` holds no pack (an unpacked job)."""
    pack = layout.read_json(path)
    return None if pack is None else pack["members"]


def member_config(resolved: dict[str, Any]) -> LaunchConfig:
    """A member's typed config from its resolved config (the one its job records)."""
    return OmegaConf.to_object(OmegaConf.merge(config_schema(resolved), resolved))


def config_schema(resolved: dict[str, Any]):
    """The structured schema a resolved job config is typed by (its data kind's and its
    architecture's sections)."""
    kind = resolved.get("data", {}).get("kind")
    if kind not in _DATA_SCHEMAS:
        raise ValueError(f"a job config has data.kind={kind!r}, not one of {list(_DATA_SCHEMAS)}")
    schema = OmegaConf.structured(LaunchConfig)
    schema.data = OmegaConf.structured(_DATA_SCHEMAS[kind])
    schema.sae = OmegaConf.structured(architecture(resolved.get("sae", {}).get("kind")).config)
    return schema
