"""Typed configuration: the schema (one dataclass per conf/ group) and the checks that need no
architecture. The architectures extend it (models/); `sae_sweep.config_store` stores every
schema in Hydra's ConfigStore and `sae_sweep.models.validate` checks a whole config."""

from .schema import (
    AuxDecoder,
    Config,
    DType,
    LoggerMode,
    NormGrad,
    PenaltyKind,
)
from .validation import ConfigError, config_problems

__all__ = [
    "AuxDecoder",
    "Config",
    "ConfigError",
    "DType",
    "LoggerMode",
    "NormGrad",
    "PenaltyKind",
    "config_problems",
]
