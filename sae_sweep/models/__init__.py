"""SAE architectures: one file each, one shared interface (`SparseAutoencoder`)."""

from __future__ import annotations

import torch

from ..config.schema import SAEConfig, SAEKind
from .base import SAEOutput, SparseAutoencoder
from .gated import GatedSAE
from .standard import StandardSAE

ARCHITECTURES: dict[SAEKind, type[SparseAutoencoder]] = {
    SAEKind.standard: StandardSAE,
    SAEKind.gated: GatedSAE,
}

__all__ = [
    "ARCHITECTURES",
    "GatedSAE",
    "SAEOutput",
    "SparseAutoencoder",
    "StandardSAE",
    "build_sae",
]


def dictionary_size(cfg: SAEConfig, d_in: int) -> int:
    return cfg.d_sae if cfg.d_sae is not None else max(1, round(cfg.expansion_factor * d_in))


def build_sae(cfg: SAEConfig, d_in: int, seed: int) -> SparseAutoencoder:
    """A freshly initialised SAE on the CPU in float32 (move it with `.to`)."""
    generator = torch.Generator().manual_seed(seed)
    return ARCHITECTURES[SAEKind(cfg.kind)](
        d_in,
        dictionary_size(cfg, d_in),
        decoder_init_norm=cfg.decoder_init_norm,
        encoder_init_transpose=cfg.encoder_init_transpose,
        generator=generator,
    )
