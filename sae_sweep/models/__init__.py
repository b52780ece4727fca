"""SAE architectures: one file each, one shared interface (`SparseAutoencoder`), one registry
(`registry.py`) that the rest of the pipeline dispatches through, and the checks of a config
against its architecture (`validation.py`)."""

from __future__ import annotations

from dataclasses import fields

import torch

from ..config.schema import SAEConfig
from .base import SAEOutput, SparseAutoencoder
from .batchtopk import BATCHTOPK, BatchTopKSAE, BatchTopKSAEConfig
from .gated import GATED, GatedSAE, GatedSAEConfig
from .jumprelu import JUMPRELU, JumpReLUSAE, JumpReLUSAEConfig
from .matryoshka import (
    MATRYOSHKA_BATCHTOPK,
    MatryoshkaBatchTopKSAE,
    MatryoshkaBatchTopKSAEConfig,
)
from .registry import (
    ARCHITECTURES,
    Architecture,
    architecture,
    l0_knobs,
    register_architecture,
)
from .standard import STANDARD, StandardSAE, StandardSAEConfig
from .topk import TOPK, TopKSAE, TopKSAEConfig
from .validation import validate

for _arch in (STANDARD, GATED, TOPK, BATCHTOPK, JUMPRELU, MATRYOSHKA_BATCHTOPK):
    register_architecture(_arch)

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "BatchTopKSAE",
    "BatchTopKSAEConfig",
    "GatedSAE",
    "GatedSAEConfig",
    "JumpReLUSAE",
    "JumpReLUSAEConfig",
    "MatryoshkaBatchTopKSAE",
    "MatryoshkaBatchTopKSAEConfig",
    "SAEOutput",
    "SparseAutoencoder",
    "StandardSAE",
    "StandardSAEConfig",
    "TopKSAE",
    "TopKSAEConfig",
    "architecture",
    "build_sae",
    "l0_knobs",
    "register_architecture",
    "validate",
]

_SHARED = {f.name for f in fields(SAEConfig)}


def dictionary_size(cfg: SAEConfig, d_in: int) -> int:
    return cfg.d_sae if cfg.d_sae is not None else max(1, round(cfg.expansion_factor * d_in))


def architecture_options(cfg: SAEConfig) -> dict:
    """The architecture's own knobs (its config's fields beyond SAEConfig's) as keyword
    arguments of its model; a plain SAEConfig gets the architecture's defaults."""
    defaults = architecture(cfg.kind).config()
    return {
        f.name: getattr(cfg, f.name, getattr(defaults, f.name))
        for f in fields(defaults)
        if f.name not in _SHARED
    }


def build_sae(cfg: SAEConfig, d_in: int, seed: int) -> SparseAutoencoder:
    """A freshly initialised SAE on the CPU in float32 (move it with `.to`)."""
    generator = torch.Generator().manual_seed(seed)
    return architecture(cfg.kind).model(
        d_in,
        dictionary_size(cfg, d_in),
        decoder_init_norm=cfg.decoder_init_norm,
        encoder_init_transpose=cfg.encoder_init_transpose,
        generator=generator,
        **architecture_options(cfg),
    )
