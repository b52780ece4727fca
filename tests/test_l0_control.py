"""L0 control (training/l0_control.py): lambda steered to a target L0, then frozen.

The controller is driven by a fake L0(lambda) relation that is monotone, steep, lagged and
noisy, as an SAE's is; then through real jobs: the record, resume in the middle of the
control phase, and the knob combinations that cannot be controlled.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import killed_after_checkpoint, small_config

from sae_sweep.config.validation import ConfigError
from sae_sweep.job import run_job
from sae_sweep.models import validate
from sae_sweep.training.l0_control import MAX_FACTOR, L0Controller

STEPS, WARMUP, END, TARGET = 400, 20, 360, 8.0
L0_AT_1, SLOPE = 40.0, 3.0
"""The fake SAE: at equilibrium L0 = 40 lambda^-3 (lambda 1.71 gives L0 8)."""


def equilibrium_l0(lam: float) -> float:
    return L0_AT_1 * max(lam, 1e-12) ** -SLOPE


def drive(ctrl: L0Controller, seed: int = 0, lag: float = 0.05, noise: float = 0.05) -> list:
    """Train the fake SAE: its log L0 moves `lag` of the way to equilibrium each step (an
    encoder answers lambda tens of steps later) and is measured with lognormal noise; returns
    lambda per step."""
    rng = np.random.default_rng(seed)
    log_l0, lams = math.log(300.0), []  # a fresh SAE: most features fire
    for step in range(STEPS):
        lam = ctrl.coefficient_at(step)
        lams.append(lam)
        log_l0 += lag * (math.log(equilibrium_l0(lam)) - log_l0)
        ctrl.observe(step, torch.tensor(math.exp(log_l0 + noise * rng.normal())))
    return lams


@pytest.mark.parametrize("start", [0.3, 1.0, 6.0], ids=["lambda-low", "lambda-near", "lambda-high"])
@pytest.mark.parametrize("seed", [0, 1])
def test_controller_reaches_the_target_and_freezes(start, seed):
    """From a lambda 6x too low (L0 1500) or 3.5x too high (L0 0.2): at the end of the control
    phase lambda puts the fake SAE within 10% of the target, and lambda stays there."""
    ctrl = L0Controller(TARGET, start, WARMUP, END)
    lams = drive(ctrl, seed)
    assert abs(equilibrium_l0(ctrl.lam) - TARGET) <= 0.1 * TARGET, (ctrl.lam, ctrl.trajectory)
    assert all(lam == ctrl.lam for lam in lams[END:])  # frozen: a fixed-lambda run from here
    assert lams[:WARMUP] == [start * s / WARMUP for s in range(WARMUP)]  # the warm-up, unchanged
    assert ctrl.trajectory[-1][0] == END
    ctrl.observe(END, torch.tensor(1e6))  # an L0 after the phase moves nothing
    assert ctrl.lam == lams[-1]


@pytest.mark.parametrize(
    "l0s",
    [[0.0] * 400, [1e38] * 400, [math.nan] * 400, [math.inf, 0.0] * 200, [1e-30, 1e30] * 200],
    ids=["silent", "huge", "nan", "inf-zero", "alternating"],
)
def test_lambda_is_never_negative_nor_non_finite(l0s):
    ctrl = L0Controller(TARGET, 0.5, 0, STEPS)
    for step, l0 in enumerate(l0s):
        ctrl.observe(step, torch.tensor(l0, dtype=torch.float64))
        lam = ctrl.coefficient_at(step + 1)
        assert math.isfinite(lam) and lam > 0, (step, lam)
        assert 0.5 / MAX_FACTOR * (1 - 1e-9) <= lam <= 0.5 * MAX_FACTOR * (1 + 1e-9)


def _controlled(**overrides):
    return small_config(**{"train__l0_target": 6.0, "train__l0_control_fraction": 0.8, **overrides})


def test_record_keeps_the_trajectory_final_lambda_and_the_tolerance_verdict(tmp_path):
    summary = run_job(_controlled(), tmp_path / "job")
    c = summary["l0_control"]
    assert c["target"] == 6.0 and c["start_lambda"] == 3.0 and c["frozen_at_step"] == 48
    assert c["final_lambda"] == c["trajectory"][-1][1] and c["final_lambda"] != 3.0
    assert [p[0] for p in c["trajectory"]] == list(range(5, 48, 5)) + [48]
    assert c["held_out_l0"] == summary["l0"]
    assert c["within_tolerance"] == (abs(summary["l0"] - 6.0) <= 0.1 * 6.0)
    assert run_job(small_config(), tmp_path / "plain")["l0_control"] is None


def test_resume_in_the_control_phase_freezes_at_the_same_lambda(tmp_path, monkeypatch):
    """Killed after the checkpoint at step 27, between two updates (a partial mean of 2
    steps), in the control phase that ends at 48: the resumed job ends exactly as one never
    interrupted."""
    cfg = _controlled(train__checkpoint_every=27)
    full = run_job(cfg, tmp_path / "full")["l0_control"]
    killed_after_checkpoint(monkeypatch, lambda: run_job(cfg, tmp_path / "resumed"), at=27)
    summary = run_job(cfg, tmp_path / "resumed")
    assert summary["resumed_from_step"] == 27
    assert summary["l0_control"]["final_lambda"] == full["final_lambda"]
    assert summary["l0_control"]["trajectory"] == full["trajectory"]


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"penalty__coefficient": 0.0}, "penalty.coefficient=0.0: the controller"),
        ({"train__l0_control_fraction": 0.0}, "train.l0_control_fraction=0.0 must lie in (0, 1]"),
        ({"penalty__warmup_steps": 50}, "the control phase ends at step 48"),
        ({"train__l0_target": -1.0}, "train.l0_target=-1.0 must be positive"),
    ],
)
def test_uncontrollable_combinations_are_rejected_with_the_reason(overrides, needle):
    with pytest.raises(ConfigError) as err:
        validate(_controlled(**overrides))
    assert needle in str(err.value)


def test_topk_reaches_a_target_through_k_not_l0_target():
    from sae_sweep.config.schema import PenaltyConfig, PenaltyKind
    from sae_sweep.models.topk import TopKSAEConfig

    cfg = _controlled(sae=TopKSAEConfig(k=4), penalty=PenaltyConfig(PenaltyKind.none, 0.0))
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "its L0 is set by sae.k. Fix: sae.k=6 train.l0_target=null" in str(err.value)
