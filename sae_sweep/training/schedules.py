"""Learning-rate and lambda schedules: pure functions of the step (0-based)."""

from __future__ import annotations


def lr_at(step: int, *, base_lr: float, steps: int, warmup_steps: int, decay_fraction: float):
    """Linear warm-up, then constant, then linear decay to 0 over the final fraction."""
    # 1) warm-up: base_lr / warmup_steps at step 0, base_lr from step warmup_steps - 1 on
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    # 2) decay: linear from base_lr at the decay's first step towards 0 after the last step
    decay_steps = int(round(decay_fraction * steps))
    decay_start = steps - decay_steps
    if decay_steps > 0 and step >= decay_start:
        return base_lr * (steps - step) / decay_steps
    # 3) constant
    return base_lr


def lambda_at(step: int, *, coefficient: float, warmup_steps: int) -> float:
    """Sparsity coefficient, rising linearly from 0 at step 0 to `coefficient` at warmup_steps."""
    if step < warmup_steps:
        return coefficient * step / warmup_steps
    return coefficient
