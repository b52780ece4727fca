"""Recipe pieces: unit-norm constraint, dead-feature resampling, schedules."""

import pytest
import torch

from sae_sweep.config.schema import SAEConfig
from sae_sweep.losses import sae_loss
from sae_sweep.models import build_sae
from sae_sweep.penalties import L1Penalty
from sae_sweep.training.constraint import remove_parallel_grad_, unit_norm_decoder_
from sae_sweep.training.resampling import resample_dead_features_
from sae_sweep.training.schedules import lambda_at, lr_at


def _l1_step(sae, opt, x, constrained=True):
    loss = sae_loss(sae, x, sae(x), L1Penalty(), coefficient=0.1).total
    opt.zero_grad()
    loss.backward()
    if constrained:
        remove_parallel_grad_(sae.W_dec)
    opt.step()
    if constrained:
        unit_norm_decoder_(sae.W_dec)


def test_unit_norm_columns_hold_over_several_steps():
    sae = build_sae(SAEConfig(kind="standard", decoder_init_norm=1.0), d_in=8, seed=0)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for _ in range(10):
        _l1_step(sae, opt, torch.randn(32, 8))
        torch.testing.assert_close(sae.W_dec.norm(dim=0), torch.ones(sae.d_sae))


def test_parallel_gradient_component_is_removed():
    W = torch.nn.Parameter(torch.randn(8, 5))
    W.grad = torch.randn(8, 5)
    before = W.grad.clone()
    remove_parallel_grad_(W)
    u = W / W.norm(dim=0)
    torch.testing.assert_close((W.grad * u).sum(0), torch.zeros(5), atol=1e-6, rtol=0)
    # only the parallel part went: the orthogonal part is unchanged
    torch.testing.assert_close(W.grad, before - (before * u).sum(0) * u)


@pytest.mark.parametrize("kind", ["gated", "standard"])
def test_resampling_touches_exactly_the_dead_features(kind):
    sae = build_sae(SAEConfig(kind=kind, decoder_init_norm=0.5), d_in=8, seed=0)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    for _ in range(3):  # non-zero Adam moments everywhere
        _l1_step(sae, opt, torch.randn(32, 8), constrained=False)
    dead = torch.zeros(sae.d_sae, dtype=torch.bool)
    dead[[1, 5, 7]] = True
    params = {n: p.detach().clone() for n, p in sae.named_parameters()}
    moments = {n: {k: v.clone() for k, v in opt.state[p].items()}
               for n, p in sae.named_parameters()}  # fmt: skip
    alive_norm = sae.encoder_weight[~dead].norm(dim=1).mean()

    n = resample_dead_features_(sae, opt, dead, torch.randn(256, 8), 0.2,
                                torch.Generator().manual_seed(0))  # fmt: skip

    assert n == 3
    feature_axis = {name: axis for name, (_, axis) in sae.feature_params().items()}
    for name, p in sae.named_parameters():
        axis = feature_axis.get(name)
        if axis is None:  # b_dec: not per feature, untouched
            torch.testing.assert_close(p, params[name])
            torch.testing.assert_close(opt.state[p]["exp_avg"], moments[name]["exp_avg"])
            continue
        keep = (~dead).nonzero().squeeze(1)
        torch.testing.assert_close(
            p.index_select(axis, keep), params[name].index_select(axis, keep)
        )
        for m in ("exp_avg", "exp_avg_sq"):
            state = opt.state[p][m]
            assert torch.count_nonzero(state.index_select(axis, dead.nonzero().squeeze(1))) == 0
            torch.testing.assert_close(
                state.index_select(axis, keep), moments[name][m].index_select(axis, keep)
            )
    torch.testing.assert_close(sae.W_dec[:, dead].norm(dim=0), torch.ones(3))
    enc = sae.encoder_weight[dead]
    torch.testing.assert_close(enc.norm(dim=1), torch.full((3,), 0.2 * alive_norm.item()))
    # encoder row and decoder column point the same way (both the normalised input)
    torch.testing.assert_close(enc / enc.norm(dim=1, keepdim=True), sae.W_dec[:, dead].T)
    for name in ("b_gate", "r_mag", "b_mag", "b_enc"):
        if hasattr(sae, name):
            assert torch.count_nonzero(getattr(sae, name)[dead]) == 0


def test_resampling_prefers_badly_reconstructed_inputs():
    sae = build_sae(SAEConfig(kind="standard"), d_in=4, seed=0)
    with torch.no_grad():
        for p in sae.parameters():
            p.zero_()  # x_hat = 0: error = ||x||^2
    opt = torch.optim.Adam(sae.parameters())
    inputs = torch.zeros(100, 4)
    inputs[37] = torch.tensor([0.0, 3.0, 0.0, 0.0])  # the only input with any error
    dead = torch.ones(sae.d_sae, dtype=torch.bool)
    resample_dead_features_(sae, opt, dead, inputs, 0.2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        sae.W_dec.T, torch.tensor([[0.0, 1.0, 0.0, 0.0]]).expand(sae.d_sae, 4)
    )


def test_resampling_runs_its_forward_pass_in_chunks():
    """4 batches of inputs at once would hold 4 x (B, M) activations per intermediate."""
    sae = build_sae(SAEConfig(kind="gated"), d_in=8, seed=0)
    rows_seen = []
    sae.register_forward_hook(lambda module, args, out: rows_seen.append(len(args[0])))
    dead = torch.zeros(sae.d_sae, dtype=torch.bool)
    dead[:4] = True
    opt = torch.optim.Adam(sae.parameters())
    n = resample_dead_features_(sae, opt, dead, torch.randn(100, 8), 0.2,
                                torch.Generator().manual_seed(0), chunk_rows=32)  # fmt: skip
    assert n == 4 and rows_seen == [32, 32, 32, 4]


def test_lr_schedule_warmup_constant_decay():
    kw = dict(base_lr=1.0, steps=100, warmup_steps=10, decay_fraction=0.2)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(50, **kw) == 1.0
    assert lr_at(79, **kw) == 1.0
    assert lr_at(80, **kw) == pytest.approx(1.0)  # decay starts at the full rate...
    assert lr_at(90, **kw) == pytest.approx(0.5)
    assert lr_at(99, **kw) == pytest.approx(0.05)  # ...and reaches 0 after the last step
    assert lr_at(99, base_lr=1.0, steps=100, warmup_steps=0, decay_fraction=0.0) == 1.0


def test_lambda_warmup_is_linear_from_zero():
    assert lambda_at(0, coefficient=2.0, warmup_steps=100) == 0.0
    assert lambda_at(25, coefficient=2.0, warmup_steps=100) == pytest.approx(0.5)
    assert lambda_at(100, coefficient=2.0, warmup_steps=100) == 2.0
    assert lambda_at(0, coefficient=2.0, warmup_steps=0) == 2.0
