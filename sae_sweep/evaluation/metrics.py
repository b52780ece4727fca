"""Metric definitions (docs/design.md, "Metrics") as pure functions, and their streaming
form for evaluation.

Shapes: x, x_hat (N, d); f (N, M); W_dec (d, M); true_directions (G, d).
"""

from __future__ import annotations

import torch


def l0(f: torch.Tensor) -> torch.Tensor:
    """Mean number of non-zero features per token."""
    return (f != 0).sum(-1).float().mean()


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of ||x - x_hat||^2."""
    return (x - x_hat).pow(2).sum(-1).mean()


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained: E||x - x_hat||^2 / E||x - E[x]||^2 (about the mean)."""
    return (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()


def shrinkage(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Relative reconstruction bias gamma = E||x_hat||^2 / E[x_hat . x]; < 1 means shrinkage."""
    return x_hat.pow(2).sum() / (x_hat * x).sum()


def mmcs(true_directions: torch.Tensor, W_dec: torch.Tensor, threshold: float = 0.9):
    """Ground-truth recovery: (mean max cosine similarity, fraction with max cosine > threshold).

    For each true feature, the best cosine similarity with any learned decoder column.
    """
    true = true_directions / true_directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
    learned = W_dec / W_dec.norm(dim=0, keepdim=True).clamp_min(1e-12)  # (d, M)
    best = (true.to(learned.dtype) @ learned).max(dim=1).values  # (G,)
    return best.mean(), (best > threshold).float().mean()


DENSE_FIRING = 0.1
"""A latent that fires on more than this fraction of tokens is dense."""


class StreamingMetrics:
    """Accumulates the sums behind L0, MSE, FVU, gamma and firing over batches, in float64.

    FVU needs the mean of x over the whole set, so it keeps sum x and sum ||x||^2:
    sum ||x - mean||^2 = sum ||x||^2 - N ||mean||^2.
    """

    def __init__(self, d_sae: int, device: torch.device):
        z = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        self.n = 0
        self.active = z()
        self.sq_err = z()
        self.sq_x = z()
        self.sum_x = None
        self.sq_xhat = z()
        self.dot = z()
        self.fired = torch.zeros(d_sae, dtype=torch.bool, device=device)
        self.fire_count = torch.zeros(d_sae, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, x: torch.Tensor, x_hat: torch.Tensor, f: torch.Tensor) -> None:
        x, x_hat = x.double(), x_hat.double()
        nz = f != 0
        self.n += x.shape[0]
        self.active += nz.sum()
        self.sq_err += (x - x_hat).pow(2).sum()
        self.sq_x += x.pow(2).sum()
        sum_x = x.sum(0)
        self.sum_x = sum_x if self.sum_x is None else self.sum_x + sum_x
        self.sq_xhat += x_hat.pow(2).sum()
        self.dot += (x_hat * x).sum()
        self.fired |= nz.any(0)
        self.fire_count += nz.sum(0)

    def result(self) -> dict[str, float]:
        n = self.n
        variance = self.sq_x - self.sum_x.pow(2).sum() / n
        fvu_value = (self.sq_err / variance).item()
        return {
            "l0": (self.active / n).item(),
            "mse": (self.sq_err / n).item(),
            "fvu": fvu_value,
            "explained_variance": 1.0 - fvu_value,
            "shrinkage": (self.sq_xhat / self.dot).item(),
            "dead_fraction": 1.0 - self.fired.float().mean().item(),
            "dense_fraction": (self.fire_count / n > DENSE_FIRING).float().mean().item(),
            "dead_window_tokens": n,
        }
