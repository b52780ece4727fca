"""A checkpoint restores the optimizer where its update reads it, and resumes bit for bit."""

import pytest
import torch
from conftest import small_config

from sae_sweep.models import build_sae
from sae_sweep.training.checkpoint import load_checkpoint, save_checkpoint
from sae_sweep.training.step import Stepper, make_optimizer


def _sae_and_optimizer(device="cpu", dtype=torch.float32, fused=True):
    cfg = small_config()
    sae = build_sae(cfg.sae, d_in=16, seed=0).to(device, dtype)
    if fused:
        optimizer = make_optimizer(sae, 1e-2, (0.9, 0.999))
    else:
        optimizer = torch.optim.Adam(sae.parameters(), lr=1e-2)
    return cfg, sae, optimizer


def _train(cfg, sae, optimizer, steps, first=0):
    stepper = Stepper(cfg, sae, optimizer)
    for step in range(first, first + steps):
        gen = torch.Generator().manual_seed(step)
        x = torch.randn(32, 16, generator=gen).to(sae.W_dec.device, sae.W_dec.dtype)
        stepper.step(x, 1e-2, 0.5)


def _save(directory, sae, optimizer, step):
    save_checkpoint(directory, step=step, sae=sae, optimizer=optimizer, tensors={}, meta={})


def assert_state_where_the_update_reads_it(sae, optimizer):
    """Moments on the parameter's device and dtype; `step` where this Adam variant keeps it."""
    group = optimizer.param_groups[0]
    on_device = group.get("fused") or group.get("capturable")
    for name, param in sae.named_parameters():
        state = optimizer.state[param]
        assert set(state) == {"step", "exp_avg", "exp_avg_sq"}, name
        for key in ("exp_avg", "exp_avg_sq"):
            assert state[key].device == param.device, (name, key)
            assert state[key].dtype == param.dtype, (name, key)
        step = state["step"]
        assert step.device == (param.device if on_device else torch.device("cpu")), name
        assert step.dtype == torch.float32, name


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "foreach"])
def test_optimizer_state_lands_on_the_parameters_device_and_dtype(tmp_path, fused):
    """Saved from float32, loaded into a float64 SAE: a hand-copied state would keep float32
    moments (and a CPU `step` that fused CUDA Adam cannot read)."""
    cfg, sae, optimizer = _sae_and_optimizer(fused=fused)
    _train(cfg, sae, optimizer, 2)
    _save(tmp_path, sae, optimizer, 2)
    _, wide, wide_optimizer = _sae_and_optimizer(dtype=torch.float64, fused=fused)
    assert load_checkpoint(tmp_path, wide, wide_optimizer)[0] == 2
    assert_state_where_the_update_reads_it(wide, wide_optimizer)
    for param, wide_param in zip(sae.parameters(), wide.parameters(), strict=True):
        want = optimizer.state[param]["exp_avg_sq"].double()
        torch.testing.assert_close(wide_optimizer.state[wide_param]["exp_avg_sq"], want)


def resumed_equals_unbroken(tmp_path, device):
    """Train 3 steps, checkpoint, 3 more; a fresh SAE loading the checkpoint ends the same."""
    cfg, sae, optimizer = _sae_and_optimizer(device)
    _train(cfg, sae, optimizer, 3)
    _save(tmp_path, sae, optimizer, 3)
    _train(cfg, sae, optimizer, 3, first=3)

    _, resumed, resumed_optimizer = _sae_and_optimizer(device)
    assert load_checkpoint(tmp_path, resumed, resumed_optimizer)[0] == 3
    assert_state_where_the_update_reads_it(resumed, resumed_optimizer)
    _train(cfg, resumed, resumed_optimizer, 3, first=3)
    for (name, a), b in zip(sae.named_parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)


def test_resumed_training_equals_the_unbroken_run(tmp_path):
    resumed_equals_unbroken(tmp_path, "cpu")


@pytest.mark.gpu
def test_resumed_cuda_training_equals_the_unbroken_run(tmp_path):
    """Fused CUDA Adam reads `step` on the device: a resume that left it on the CPU crashed."""
    resumed_equals_unbroken(tmp_path, "cuda")


def _weights(sae):
    return {k: v.clone() for k, v in sae.state_dict().items()}


@pytest.mark.parametrize("killed", ["before the new state", "before the manifest"])
def test_a_write_killed_midway_resumes_from_the_checkpoint_before_it(tmp_path, monkeypatch,
                                                                     killed):  # fmt: skip
    """A SIGKILL between a checkpoint's files (the out-of-memory killer, a scheduler) must not
    cost the run: the state the manifest names is kept until the new manifest is written,
    and the next load resumes from it, the same weights, step and optimizer."""
    import sae_sweep.training.checkpoint as checkpoint

    cfg, sae, optimizer = _sae_and_optimizer(fused=False)
    _train(cfg, sae, optimizer, 3)
    _save(tmp_path, sae, optimizer, 3)
    at_3 = _weights(sae)
    _train(cfg, sae, optimizer, 2, first=3)

    class KilledError(Exception):
        pass

    def die(*args, **kwargs):
        raise KilledError

    monkeypatch.setattr(checkpoint, "save_file" if killed == "before the new state"
                        else "atomic_write_text", die)  # fmt: skip
    with pytest.raises(KilledError):
        _save(tmp_path, sae, optimizer, 5)
    monkeypatch.undo()

    _, fresh, fresh_optimizer = _sae_and_optimizer(fused=False)
    step, _, _ = load_checkpoint(tmp_path, fresh, fresh_optimizer)
    assert step == 3
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, at_3[name]), name
    assert not (tmp_path / "state.previous.safetensors").exists()
    _save(tmp_path, fresh, fresh_optimizer, 4)  # and checkpoints go on as before
    assert load_checkpoint(tmp_path, *_sae_and_optimizer(fused=False)[1:])[0] == 4
