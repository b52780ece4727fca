"""The original recipe's unit-norm decoder constraint (used with the l1 penalty)."""

from __future__ import annotations

import torch


@torch.no_grad()
def remove_parallel_grad_(W_dec: torch.nn.Parameter) -> None:
    """Before the step: drop the gradient component parallel to each decoder column.

    W_dec is (d, M); for column w_i with unit direction u_i: grad_i -= (grad_i . u_i) u_i.
    """
    if W_dec.grad is None:
        return
    u = W_dec / W_dec.norm(dim=0, keepdim=True).clamp_min(1e-12)
    W_dec.grad -= (W_dec.grad * u).sum(0, keepdim=True) * u


@torch.no_grad()
def unit_norm_decoder_(W_dec: torch.nn.Parameter) -> None:
    """After the step: renormalise every decoder column to norm 1."""
    W_dec /= W_dec.norm(dim=0, keepdim=True).clamp_min(1e-12)
