"""Closed-loop L0 control: lambda steered to a target L0 during a control phase, then frozen.

With `train.l0_target` set, a penalty-based SAE (standard, gated, JumpReLU) does not keep
`penalty.coefficient` fixed: from the end of the lambda warm-up to `train.l0_control_fraction`
of training, every `UPDATE_EVERY` steps the controller reads the running mean L0 of those
training steps and moves log lambda (a PI controller in velocity form, on logs):

    log lambda += gain x (log L0 - log target) + DAMPING x (log L0 - log L0_previous)

clipped to +-MAX_MOVE per update, the gain rising linearly from GAIN_START at the start of
the phase to GAIN_END at its end. L0 falls as lambda grows, so too many active features
raise lambda; the second term holds lambda back while L0 is already moving the right way.
Working in logs makes the step the same for a target of 4 as of 400 and keeps lambda
positive and finite by construction; log lambda is also held within `MAX_FACTOR` of the
starting coefficient. At the end of the phase lambda is frozen, and the rest of training is
an ordinary fixed-lambda run at the lambda the controller found.

The penalty's warm-up (`lambda_at`) scales the controlled lambda as it scales a fixed one;
the controller acts only after it (during warm-up the L0 answers a smaller lambda). Its whole
state is a few floats (`state_dict`), saved in the checkpoint, so that a job resumed in the
middle of the control phase freezes at the same lambda as one never interrupted.

Why velocity form with damping: the L0 of an SAE answers a change of lambda only after its
encoder has moved, tens of optimizer steps later, and at fixed lambda it keeps falling for
much of a short run. A pure integral controller winds up on that lag (lambda rises while L0
is still on its way down, then overshoots); the damping term stops it. Why the gain rises:
early, a fresh SAE's L0 is far above any target and falls on its own; a high gain then
drives lambda far past the lambda of the target, and the SAE keeps the features that
overshoot killed (at the same L0 it was up to 7% worse in FVU than a fixed-lambda SAE, and a
start nearer the right lambda made it worse: 22%). Late, L0 drifts down at a steady rate that
lambda must follow down, and an integral controller follows a drift with an error of about
(the drift per update) / gain: at a low gain the SAEs ended 10-14% below the target. Why the
phase ends late (0.9 by default): frozen early, L0 drifts on below the target. The gains,
the interval and the fraction were chosen on the quick sweep's variants, and the gate checks
the result (docs/design.md, "L0 control"; bench/l0_control_gate.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .schedules import lambda_at

UPDATE_EVERY = 5
"""Steps between controller updates, each on the mean L0 of its steps: one read of the
device per update."""
GAIN_START, GAIN_END = 0.1, 0.4
"""Integral gain (change of log lambda per update per unit of log L0 error) at the start and
at the end of the control phase; linear in between."""
DAMPING = 0.8
"""Change of log lambda per unit change of log L0 since the previous update: while L0 is
already falling towards the target, lambda rises less (no wind-up while the encoder lags)."""
MAX_MOVE = 0.25
"""Largest change of log lambda in one update (a factor exp(0.25) = 1.28)."""
MAX_FACTOR = 1e4
"""Lambda stays within this factor of penalty.coefficient either way."""
MIN_L0 = 0.05
"""L0 floor in the log error: an SAE whose features all went silent lowers lambda at the
largest step instead of taking the log of zero."""
TRAJECTORY_POINTS = 64
"""At most this many (step, lambda, L0) points of the trajectory are kept in the record."""


@dataclass
class L0Controller:
    """Lambda for each step of one SAE's training; see the module docstring."""

    target: float
    coefficient: float
    """penalty.coefficient: lambda where control starts."""
    warmup_steps: int
    """penalty.warmup_steps: control starts once the warm-up is over."""
    control_end: int
    """Lambda is frozen from this step on."""
    log_scale: float = 0.0
    """log(lambda / coefficient), the controlled quantity."""
    l0_mean: float | None = None
    """The mean training L0 of the last update's steps (None before the first update)."""
    trajectory: list[list[float]] = field(default_factory=list)
    """[step, lambda, mean L0 of the update's steps] per update (thinned: TRAJECTORY_POINTS)."""
    _sum: torch.Tensor | None = field(default=None, repr=False)
    _n: int = field(default=0, repr=False)

    @classmethod
    def from_config(cls, cfg) -> L0Controller | None:
        """The controller of a config with `train.l0_target`, else None."""
        tr, pen = cfg.train, cfg.penalty
        if tr.l0_target is None:
            return None
        end = int(round(tr.l0_control_fraction * tr.steps))
        return cls(float(tr.l0_target), float(pen.coefficient), int(pen.warmup_steps), end)

    @property
    def lam(self) -> float:
        """The controlled lambda (before any warm-up scaling)."""
        return self.coefficient * math.exp(self.log_scale)

    def coefficient_at(self, step: int) -> float:
        """Lambda of `step`: the warm-up schedule applied to the controlled lambda."""
        return lambda_at(step, coefficient=self.lam, warmup_steps=self.warmup_steps)

    def controlling(self, step: int) -> bool:
        return self.warmup_steps <= step < self.control_end

    def gain(self, step: int) -> float:
        """The integral gain after `step`: GAIN_START at the start of control, GAIN_END at
        its end."""
        span = max(self.control_end - self.warmup_steps, 1)
        progress = min(max((step + 1 - self.warmup_steps) / span, 0.0), 1.0)
        return GAIN_START + (GAIN_END - GAIN_START) * progress

    def observe(self, step: int, l0: torch.Tensor) -> None:
        """After `step`'s optimizer step: its batch's mean L0 (a 0-dim tensor, on the device).
        Every UPDATE_EVERY observed steps (and at the last step of control) one update."""
        if not self.controlling(step):
            return
        self._sum = l0.detach().double() if self._sum is None else self._sum + l0.detach()
        self._n += 1
        if self._n >= UPDATE_EVERY or step + 1 == self.control_end:
            measured = self._sum.item() / self._n  # the update's one read of the device
            self._sum, self._n = None, 0
            self.update(step, measured)

    def update(self, step: int, measured: float) -> None:
        """Move log lambda after `step`, given the mean L0 measured since the last update."""
        if not math.isfinite(measured):
            return  # a divergence: the logging window reports it; lambda is left as it was
        log_l0 = math.log(max(measured, MIN_L0))
        trend = 0.0 if self.l0_mean is None else log_l0 - math.log(max(self.l0_mean, MIN_L0))
        self.l0_mean = measured
        move = self.gain(step) * (log_l0 - math.log(self.target)) + DAMPING * trend
        move = min(max(move, -MAX_MOVE), MAX_MOVE)
        bound = math.log(MAX_FACTOR)
        self.log_scale = min(max(self.log_scale + move, -bound), bound)
        self.trajectory.append([step + 1, self.lam, self.l0_mean])
        if len(self.trajectory) > TRAJECTORY_POINTS:  # keep the first, every other, the last
            self.trajectory = self.trajectory[:-1:2] + [self.trajectory[-1]]

    def state_dict(self) -> dict:
        """Everything a resume needs (JSON-able). Saved at checkpoints, which fall between
        updates only when `train.checkpoint_every` is not a multiple of UPDATE_EVERY: the
        partial sum then goes along too."""
        partial = None if self._sum is None else self._sum.item()
        return {
            "log_scale": self.log_scale,
            "l0_mean": self.l0_mean,
            "trajectory": self.trajectory,
            "partial_sum": partial,
            "partial_n": self._n,
        }

    def load_state_dict(self, state: dict) -> None:
        self.log_scale, self.l0_mean = float(state["log_scale"]), state["l0_mean"]
        self.trajectory = [list(p) for p in state["trajectory"]]
        partial = state.get("partial_sum")
        self._sum = None if partial is None else torch.tensor(partial, dtype=torch.float64)
        self._n = int(state.get("partial_n") or 0)

    def record(self, held_out_l0: float | None, tolerance: float) -> dict:
        """The summary's `l0_control`: target, final lambda, trajectory, and whether the
        held-out L0 lies within `tolerance` (relative) of the target."""
        within = None
        if held_out_l0 is not None and math.isfinite(held_out_l0):
            within = abs(held_out_l0 - self.target) <= tolerance * self.target
        return {
            "target": self.target,
            "start_lambda": self.coefficient,
            "final_lambda": self.lam,
            "frozen_at_step": self.control_end,
            "train_l0_at_freeze": self.l0_mean,
            "held_out_l0": held_out_l0,
            "tolerance": tolerance,
            "within_tolerance": within,
            "trajectory": self.trajectory,
        }
