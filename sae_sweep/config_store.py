"""Hydra's ConfigStore: every structured schema a composed config is typed by.

Each YAML in `conf/` names its group's schema in its defaults list (`config_schema`,
`penalty/schema`, `data/<kind>_schema`, `logger/schema`, `sae/<name>_schema`); this module
stores them all. It sits above both packages it reads: the schema (config/) and the
architectures (models/, each with its own `sae` schema, registered in models/registry.py),
so that the config package never imports the architectures that build on it.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from .config.schema import (
    ActivationsDataConfig,
    HFDataConfig,
    LaunchConfig,
    LoggerConfig,
    PenaltyConfig,
    SyntheticDataConfig,
    SynthSAEBenchDataConfig,
)
from .models import ARCHITECTURES


def register_configs() -> None:
    """Store every schema, the architectures' included: call it before composing a config,
    and again after registering an architecture later (storing twice replaces, harmlessly)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=LaunchConfig)
    for name, arch in ARCHITECTURES.items():
        cs.store(group="sae", name=f"{name}_schema", node=arch.config)
    cs.store(group="penalty", name="schema", node=PenaltyConfig)
    cs.store(group="data", name="synthetic_schema", node=SyntheticDataConfig)
    cs.store(group="data", name="hf_schema", node=HFDataConfig)
    cs.store(group="data", name="activations_schema", node=ActivationsDataConfig)
    cs.store(group="data", name="synthsaebench_schema", node=SynthSAEBenchDataConfig)
    cs.store(group="logger", name="schema", node=LoggerConfig)
