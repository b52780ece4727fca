"""OmegaConf resolvers used by variant presets and sweep files.

    ${lambda_of:scale,m,g}   scale * m ** g: a variant's penalty.coefficient at multiplier m
    ${step_at:steps,frac}    round(steps * frac) as an int, e.g. lambda warm-up over 5% of training
    ${k_of:scale,m,g}        max(1, round(scale / m ** g)): a TopK variant's sae.k at multiplier
                             m (a larger multiplier is sparser, as with lambda)

They are registered whenever `sae_sweep.main` is imported (also in launcher workers), and are
resolved before a job's config is recorded, so the records never need them.
"""

from __future__ import annotations

from omegaconf import OmegaConf


def lambda_of(scale: float, multiplier: float, exponent: float) -> float:
    return float(scale) * float(multiplier) ** float(exponent)


def step_at(steps: int, frac: float) -> int:
    return int(round(int(steps) * float(frac)))


def k_of(scale: float, multiplier: float, exponent: float) -> int:
    return max(1, int(round(float(scale) / float(multiplier) ** float(exponent))))


def register_resolvers() -> None:
    for name, fn in (("lambda_of", lambda_of), ("step_at", step_at), ("k_of", k_of)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
