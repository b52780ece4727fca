"""Synthetic activations with known ground-truth features (Sharkey et al. 2022).

G unit-norm random directions in R^d, G > d (superposition). Feature i fires with
probability p_i proportional to (i + 1)^-alpha, scaled so that on average `mean_active`
fire per sample. Firing is correlated through a Gaussian copula: a latent z ~ N(0, C) with
C = c * F F^T + (1 - c) I (F: G x r, unit-norm rows), and feature i fires when
z_i < Phi^-1(p_i), so its marginal rate stays p_i. Active coefficients are U(0, 1).
x = sum_i coef_i * direction_i + noise.

Each training batch is drawn from a generator seeded by (data seed, run seed, step), on the
training device: on a GPU the batch never crosses the bus, and on the CPU the batches are
the ones this module has always drawn. A GPU draws other (equally distributed) batches than
the CPU for the same seeds, the same on every run. The held-out split and the features are
drawn on the CPU, so they are the same on every device. The held-out split keeps its
coefficients (the true feature activations, `eval_batches_with_truth`) for the ground-truth
metrics.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator

import torch

from ..config.schema import SyntheticDataConfig

_EVAL_STREAM = 1 << 40  # the held-out split's seed offset: far from any training step's


class SyntheticData:
    """The built-in generator as an activation source (`GroundTruthSource`)."""

    def __init__(self, cfg: SyntheticDataConfig, run_seed: int, device: torch.device):
        if cfg.n_features < 1 or cfg.d < 1:
            raise ValueError("data.d and data.n_features must be positive")
        if not 0.0 <= cfg.correlation < 1.0:
            raise ValueError(f"data.correlation={cfg.correlation} must lie in [0, 1)")
        if not 0.0 < cfg.mean_active <= cfg.n_features:
            raise ValueError(f"data.mean_active={cfg.mean_active} must lie in (0, data.n_features]")
        self.cfg = cfg
        self.d = cfg.d
        self.device = device
        self._run_seed = run_seed
        self._train_gen = torch.Generator(device)
        self.firing_prob, self._process, self._eval, self._eval_coef = _drawn(
            _key(cfg), str(device)
        )
        self.ground_truth = self._process[self._train_gen.device][0]

    def train_batch(self, step: int, batch_size: int) -> torch.Tensor:
        # Seeded by (data seed, run seed, step): batches are reproducible and resumable.
        seed = (self.cfg.seed * 1_000_003 + self._run_seed) * 1_000_000_007 + step
        return self._sample(batch_size, self._train_gen.manual_seed(seed % (1 << 62)))

    def close(self) -> None:
        """Nothing to release (the ActivationSource interface)."""

    def eval_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        yield from self._eval.split(batch_size)

    def eval_batches_with_truth(
        self, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`eval_batches`' chunks with their (rows, G) coefficients (GroundTruthSource)."""
        start = 0
        for x in self.eval_batches(batch_size):
            # stored sparse (about mean_active of G non-zero per row); dense chunk by chunk
            coef = self._eval_coef.narrow_copy(0, start, len(x))
            start += len(x)
            yield x, coef.to_dense().to(x.device)

    def _sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return _sample(self.cfg, self._process, n, gen)[0]


def _sample(
    cfg: SyntheticDataConfig, process: dict, n: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n samples, their (n, G) feature coefficients) drawn from `gen`, on its device."""
    G, c = cfg.n_features, cfg.correlation
    truth, factor, threshold = process[gen.device]
    draw = dict(generator=gen, device=gen.device)
    shared = torch.randn(n, cfg.correlation_rank, **draw)
    own = torch.randn(n, G, **draw)
    z = math.sqrt(c) * shared @ factor.T + math.sqrt(1.0 - c) * own  # (n, G), unit var
    coef = torch.rand(n, G, **draw) * (z < threshold)
    x = coef @ truth  # (n, d)
    if cfg.noise_std > 0:
        x = x + cfg.noise_std * torch.randn(n, cfg.d, **draw)
    return x, coef


@functools.lru_cache(maxsize=4)
def _drawn(key: tuple, device: str):
    """(firing probabilities, {device: (truth, factor, threshold)}, held-out split, its
    coefficients as a sparse (n_eval, G) CPU tensor) of one data-generating process. Kept
    per process: a sweep worker's next job on the same data would draw them again, bit for
    bit (0.2 s a job at the defaults). Read-only to callers."""
    cfg = SyntheticDataConfig(**dict(key))
    gen = torch.Generator().manual_seed(cfg.seed)
    G, r = cfg.n_features, cfg.correlation_rank
    directions = torch.randn(G, cfg.d, generator=gen)
    truth = directions / directions.norm(dim=1, keepdim=True)  # (G, d)
    firing_prob = _power_law_probs(G, cfg.power_law_exponent, cfg.mean_active)
    factor = torch.randn(G, r, generator=gen)
    factor = factor / factor.norm(dim=1, keepdim=True)  # (G, r)
    normal = torch.distributions.Normal(0.0, 1.0)
    threshold = normal.icdf(firing_prob.clamp(1e-7, 1 - 1e-7))  # (G,)
    # the process on the CPU (for the held-out split) and on the training device
    train_device = torch.Generator(torch.device(device)).device
    process = {torch.device("cpu"): (truth, factor, threshold)}
    process[train_device] = tuple(t.to(train_device) for t in (truth, factor, threshold))
    held_out, coef = _sample(cfg, process, cfg.n_eval, _generator(cfg.seed + _EVAL_STREAM))
    return firing_prob, process, held_out.to(train_device), coef.to_sparse()


def _key(cfg: SyntheticDataConfig) -> tuple:
    return tuple(sorted(dataclasses.asdict(cfg).items()))


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _power_law_probs(n: int, exponent: float, mean_active: float) -> torch.Tensor:
    """Per-feature firing probabilities ~ (i + 1)^-exponent with sum = mean_active, each <= 1."""
    weights = torch.arange(1, n + 1, dtype=torch.float64) ** -exponent
    probs = weights / weights.sum() * mean_active
    for _ in range(100):  # clipping at 1 loses mass: give it back to the unclipped features
        clipped = probs.clamp(max=1.0)
        deficit = mean_active - clipped.sum()
        free = clipped < 1.0
        if deficit <= 1e-9 or not free.any():
            break
        probs = torch.where(free, clipped * (1 + deficit / clipped[free].sum()), clipped)
    return probs.clamp(max=1.0).float()
