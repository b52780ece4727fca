"""Activation sources: where the vectors an SAE trains on come from."""

from __future__ import annotations

import torch

from ..config.schema import SyntheticDataConfig
from .hf import activations_source, hf_source
from .source import (
    ActivationSource,
    DataError,
    GroundTruthSource,
    estimate_norm_scale,
    held_out_batches,
)
from .synthetic import SyntheticData
from .synthsaebench import synthsaebench_source

__all__ = [
    "ActivationSource",
    "DataError",
    "GroundTruthSource",
    "SyntheticData",
    "build_source",
    "estimate_norm_scale",
    "held_out_batches",
]


def build_source(data_cfg, run_seed: int, device: torch.device,
                 pin_memory: bool = True) -> ActivationSource:  # fmt: skip
    """The activation source named by `data.kind`. `pin_memory` (train.pin_memory): stored
    activations reach a CUDA device through pinned memory, asynchronously. Close it after use."""
    if isinstance(data_cfg, SyntheticDataConfig) or data_cfg.kind == "synthetic":
        return SyntheticData(data_cfg, run_seed=run_seed, device=device)
    if data_cfg.kind == "hf":
        return hf_source(data_cfg, run_seed=run_seed, device=device, pin_memory=pin_memory)
    if data_cfg.kind == "activations":
        return activations_source(data_cfg, run_seed, device=device, pin_memory=pin_memory)
    if data_cfg.kind == "synthsaebench":
        return synthsaebench_source(data_cfg, run_seed, device=device, pin_memory=pin_memory)
    raise ValueError(f"data.kind={data_cfg.kind!r} is not a known activation source")
