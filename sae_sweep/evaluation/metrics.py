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


def l2_ratio(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of ||x_hat|| / ||x|| (SAEBench's l2_ratio; a ratio per token, then mean),
    over the tokens where the ratio is defined (`l2_ratio_terms`)."""
    total, count = l2_ratio_terms(x, x_hat)
    return total / count.clamp_min(1)


ZERO_NORM = 1e-6
"""A token whose norm is below this fraction of its batch's mean norm has no L2 ratio."""


def l2_ratio_terms(x: torch.Tensor, x_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of ||x_hat|| / ||x||, number of tokens summed). Tokens of (near) zero norm are
    left out: their ratio is undefined, and synthetic data draws all-zero tokens (no feature
    active), where the decoder bias alone once made the mean ratio about 1e9."""
    x_norm, x_hat_norm = x.norm(dim=-1), x_hat.norm(dim=-1)
    defined = x_norm > ZERO_NORM * x_norm.mean()
    ratio = torch.where(defined, x_hat_norm / torch.where(defined, x_norm, 1.0), 0.0)
    return ratio.sum(), defined.sum()


def firing_frequency(f: torch.Tensor) -> torch.Tensor:
    """(M,) fraction of tokens on which each latent is non-zero."""
    return (f != 0).float().mean(0)


DENSE_THRESHOLD = 0.1
"""A latent firing on more than this fraction of held-out tokens is dense."""


def mmcs(true_directions: torch.Tensor, W_dec: torch.Tensor, threshold: float = 0.9):
    """Ground-truth recovery: (mean max cosine similarity, fraction with max cosine > threshold).

    For each true feature, the best cosine similarity with any learned decoder column.
    """
    true = true_directions / true_directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
    learned = W_dec / W_dec.norm(dim=0, keepdim=True).clamp_min(1e-12)  # (d, M)
    best = (true.to(learned.dtype) @ learned).max(dim=1).values  # (G,)
    return best.mean(), (best > threshold).float().mean()


class StreamingMetrics:
    """Accumulates the sums behind L0, MSE, FVU, gamma, L2 ratio and firing, in float64.

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
        self.l2_ratio = z()
        self.l2_ratio_tokens = torch.zeros((), dtype=torch.int64, device=device)
        self.fires = torch.zeros(d_sae, dtype=torch.int64, device=device)  # tokens per latent

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
        ratios, tokens = l2_ratio_terms(x, x_hat)
        self.l2_ratio += ratios
        self.l2_ratio_tokens += tokens
        self.fires += nz.sum(0)

    def firing_frequency(self) -> torch.Tensor:
        """(M,) fraction of the tokens seen on which each latent fired."""
        return self.fires.double() / max(self.n, 1)

    def result(self) -> dict[str, float]:
        n = self.n
        variance = self.sq_x - self.sum_x.pow(2).sum() / n
        fvu_value = (self.sq_err / variance).item()
        frequency = self.firing_frequency()
        gamma = (self.sq_xhat / self.dot).item()
        return {
            "l0": (self.active / n).item(),
            "mse": (self.sq_err / n).item(),
            "fvu": fvu_value,
            "explained_variance": 1.0 - fvu_value,
            "shrinkage": gamma,
            "relative_reconstruction_bias": gamma,  # SAEBench's name for the same quantity
            "l2_ratio": (self.l2_ratio / self.l2_ratio_tokens.clamp_min(1)).item(),
            "dead_fraction": (frequency == 0).double().mean().item(),
            "alive_fraction": (frequency > 0).double().mean().item(),
            "dense_fraction": (frequency > DENSE_THRESHOLD).double().mean().item(),
            "dead_window_tokens": n,
        }
