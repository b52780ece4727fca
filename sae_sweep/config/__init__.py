"""Typed configuration: the schema (one dataclass per conf/ group) and its validation."""

from .schema import (
    AuxDecoder,
    Config,
    DType,
    LoggerMode,
    NormGrad,
    PenaltyKind,
    SAEKind,
    register_configs,
)
from .validation import ConfigError, validate

__all__ = [
    "AuxDecoder",
    "Config",
    "ConfigError",
    "DType",
    "LoggerMode",
    "NormGrad",
    "PenaltyKind",
    "SAEKind",
    "register_configs",
    "validate",
]
