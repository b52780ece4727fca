"""Every architecture through the registry: exact gradients, its sparsity rule, its fast kernel,
a plug-in without kernels, and save/reload."""

import dataclasses
from dataclasses import dataclass

import pytest
import torch
from conftest import small_config

from sae_sweep.config import ConfigError
from sae_sweep.config.schema import NormGrad, PenaltyConfig, PenaltyKind
from sae_sweep.job import run_job
from sae_sweep.kernels import Workspace
from sae_sweep.kernels.topk import batch_topk
from sae_sweep.losses import sae_loss
from sae_sweep.models import (
    ARCHITECTURES,
    Architecture,
    GatedSAE,
    StandardSAE,
    StandardSAEConfig,
    architecture,
    build_sae,
    l0_knobs,
    register_architecture,
)
from sae_sweep.models.jumprelu import rectangle
from sae_sweep.models.topk import AuxKWeighting
from sae_sweep.penalties import make_penalty
from sae_sweep.record.weights import load_sae, save_sae

KINDS = ["standard", "gated", "topk", "batchtopk", "jumprelu", "matryoshka_batchtopk"]
# one penalty each, with no stop-gradient, so that finite differences see the whole loss
PENALTY = {
    "standard": (PenaltyKind.decoder_norm, NormGrad.live),
    "gated": (PenaltyKind.decoder_norm, NormGrad.live),
    "topk": (PenaltyKind.none, None),
    "batchtopk": (PenaltyKind.none, None),
    "jumprelu": (PenaltyKind.l0, None),
    "matryoshka_batchtopk": (PenaltyKind.none, None),
}
OPTIONS = {
    "gated": {"aux_decoder": "trainable"},
    "topk": {"k": 3},
    "batchtopk": {"k": 3},
    "jumprelu": {"bandwidth": 0.05},
    "matryoshka_batchtopk": {"k": 3, "prefix_fractions": [0.25, 0.5, 1.0]},
}


def penalty_of(kind, coefficient=0.3):
    pen, norm = PENALTY[kind]
    return make_penalty(PenaltyConfig(kind=pen, coefficient=coefficient, decoder_norm_grad=norm))


def random_sae(kind, d=6, M=16, seed=0, dtype=torch.float64, **options):
    cfg = architecture(kind).config(d_sae=M, decoder_init_norm=0.5, **OPTIONS.get(kind, {}))
    for name, value in options.items():
        setattr(cfg, name, value)
    sae = build_sae(cfg, d_in=d, seed=seed).to(dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=dtype) * 0.1)
    return sae


def loss_of(sae, x, penalty, coefficient=0.3):
    return sae_loss(sae, x, sae(x), penalty, coefficient)


def finite_difference_check(sae, loss_fn, coords, h=1e-6):
    """Autograd's gradient against central differences, at the given (name, index) coords."""
    sae.zero_grad(set_to_none=True)
    loss_fn().backward()
    params = dict(sae.named_parameters())
    for name, index in coords:
        p = params[name]
        with torch.no_grad():
            p[index] += h
            up = loss_fn().item()
            p[index] -= 2 * h
            down = loss_fn().item()
            p[index] += h
        numeric = (up - down) / (2 * h)
        analytic = p.grad[index].item() if p.grad is not None else 0.0
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-7), (name, index)


def _coords(sae, names, n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = dict(sae.named_parameters())
    out = []
    for name in names:
        shape = params[name].shape
        for _ in range(n):
            out.append((name, tuple(torch.randint(s, (1,), generator=gen).item() for s in shape)))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_loss_gradients_match_float64_finite_differences(kind):
    sae = random_sae(kind)
    x = torch.randn(8, 6, dtype=torch.float64)
    penalty = penalty_of(kind)
    # JumpReLU's thresholds learn through the estimator, not the true (zero) derivative
    names = [n for n, _ in sae.named_parameters() if n != "threshold"]
    finite_difference_check(sae, lambda: loss_of(sae, x, penalty).total, _coords(sae, names))


@pytest.mark.parametrize("kind", ["topk", "batchtopk"])
def test_auxk_gradients_on_dead_latents_match_finite_differences(kind):
    """The parameters of latents outside the selection do not move x_hat, so the AuxK target
    (a stop-gradient of the residual) is constant along them: differences see all of AuxK."""
    sae = random_sae(kind, dead_tokens=10, k_aux=4)
    x = torch.randn(8, 6, dtype=torch.float64)
    out = sae(x)
    selected = (out.f != 0).any(0)
    sae.tokens_since_fired.masked_fill_(~selected, 100)  # the unselected latents are dead
    terms = loss_of(sae, x, penalty_of(kind))
    assert terms.aux.item() > 0
    dead = (~selected).nonzero().squeeze(1)[:4].tolist()
    coords = [("W_enc", (i, j)) for i in dead for j in (0, 3)] + [("b_enc", (i,)) for i in dead]
    coords += [("W_dec", (j, i)) for i in dead for j in (1, 4)]
    finite_difference_check(sae, lambda: loss_of(sae, x, penalty_of(kind)).total, coords)


def test_topk_l0_is_k_exactly():
    sae = random_sae("topk", d=16, M=64, dtype=torch.float32, k=5)
    out = sae(torch.randn(32, 16))
    assert ((out.f != 0).sum(-1) == 5).all()


def test_batchtopk_trains_at_mean_l0_k_and_evaluates_with_its_threshold():
    sae = random_sae("batchtopk", d=16, M=64, dtype=torch.float32, k=5)
    x = torch.randn(32, 16)
    out = sae(x)  # training mode: the batch's 5 x 32 largest
    per_row = (out.f != 0).sum(-1)
    assert per_row.float().mean().item() == 5.0 and per_row.min() < per_row.max()
    sae.after_step_((out.f > 0).sum(0), x.shape[0])
    smallest_kept = out.f[out.f > 0].min()
    torch.testing.assert_close(sae.threshold, smallest_kept)  # the first estimate
    sae.eval()
    pre = sae.pre_activations(x)
    torch.testing.assert_close(sae(x).f, pre * (pre > smallest_kept))


def test_jumprelu_threshold_gets_the_papers_estimator_gradient():
    sae = random_sae("jumprelu", d=6, M=16)
    x = torch.randn(64, 6, dtype=torch.float64)
    eps, lam = sae.epsilon, 0.3
    with torch.no_grad():  # put each threshold within the kernel's window of some inputs
        pre = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
        sae.threshold.copy_(pre[0].abs().clamp_min(1e-3))
    out = sae(x)
    terms = sae_loss(sae, x, out, penalty_of("jumprelu"), lam)
    terms.total.backward()

    theta = sae.threshold.detach()
    K = rectangle((pre - theta) / eps)
    assert K.sum() > 0
    dL_df = 2 * (out.x_hat - x).detach() @ sae.W_dec.detach() / x.shape[0]  # (B, M)
    d_theta = (dL_df * -(theta / eps) * K).sum(0) + lam / x.shape[0] * (-(1 / eps) * K).sum(0)
    torch.testing.assert_close(sae.threshold.grad, d_theta)

    sae.zero_grad()
    with torch.no_grad():  # every pre-activation far from its threshold: no gradient at all
        sae.threshold.fill_(150.0)
    loss_of(sae, x, penalty_of("jumprelu")).total.backward()
    assert torch.count_nonzero(sae.threshold.grad) == 0


def _loss_and_grads(sae, fn):
    sae.zero_grad(set_to_none=True)
    terms, counts = fn()
    terms.total.backward()
    return terms, counts, {n: p.grad.clone() for n, p in sae.named_parameters()}


@pytest.mark.parametrize("weighting", list(AuxKWeighting), ids=lambda w: w.value)
@pytest.mark.parametrize("dead", [False, True], ids=["alive", "dead-latents"])
@pytest.mark.parametrize("kind", ["topk", "batchtopk", "matryoshka_batchtopk"])
def test_topk_kernel_matches_the_reference(kind, dead, weighting):
    sae = random_sae(kind, d=16, M=64, dtype=torch.float32, k=4, k_aux=8, dead_tokens=50,
                     aux_weighting=weighting)  # fmt: skip
    if dead:
        sae.tokens_since_fired[::3] = 100
    x = torch.randn(48, 16)
    penalty = penalty_of(kind)

    def reference():
        out = sae(x)
        return sae_loss(sae, x, out, penalty, 0.0), (out.f > 0).sum(0)

    want = _loss_and_grads(sae, reference)
    kernel = architecture(kind).kernels["sparse"]
    got = _loss_and_grads(sae, lambda: kernel(sae, x, penalty, 0.0, Workspace()))
    for a, b in zip(got[0], want[0], strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
    assert (got[0].aux.item() > 0) == dead
    torch.testing.assert_close(got[1].to(want[1].dtype), want[1])
    for name in want[2]:
        torch.testing.assert_close(got[2][name], want[2][name], rtol=1e-4, atol=1e-6, msg=name)


@dataclass
class DummySAEConfig(StandardSAEConfig):
    kind: str = "dummy"


class DummySAE(StandardSAE):
    """A plug-in: the standard SAE under another name, with no kernels of its own."""

    kind = "dummy"


@pytest.fixture
def dummy_architecture():
    register_architecture(
        Architecture(
            name="dummy",
            config=DummySAEConfig,
            model=DummySAE,
            penalties=(PenaltyKind.l1, PenaltyKind.decoder_norm),
        )
    )
    yield
    del ARCHITECTURES["dummy"]


def test_a_taken_name_cannot_be_registered_again(dummy_architecture):
    other = Architecture(name="gated", config=DummySAEConfig, model=DummySAE, penalties=())
    with pytest.raises(ValueError, match="'gated' is already registered") as info:
        register_architecture(other)
    assert "sae_sweep.models.gated.GatedSAE" in str(info.value) and "Fix:" in str(info.value)
    assert architecture("gated").model is GatedSAE  # the built-in one is kept


def test_the_same_architecture_registers_again_as_a_module_reload_does(dummy_architecture):
    dummy = architecture("dummy")
    assert register_architecture(dummy) is dummy  # the same object
    reloaded = dataclasses.replace(dummy)  # an equal definition from the same class
    assert register_architecture(reloaded) is reloaded and architecture("dummy") is reloaded


def test_an_unknown_kind_names_the_registered_architectures_and_the_fix():
    with pytest.raises(ConfigError) as info:
        build_sae(StandardSAEConfig(kind="gatd"), d_in=4, seed=0)
    assert str(info.value) == (
        "sae.kind='gatd' is not a registered architecture (registered: batchtopk, gated, "
        "jumprelu, matryoshka_batchtopk, standard, topk). Fix: sae=<one of them>, or register "
        "a plug-in with sae_sweep.models.register_architecture before the config is composed"
    )


def test_the_l0_knobs_are_those_of_the_registered_architectures(dummy_architecture):
    assert l0_knobs() == ("sae.k",)  # TopK's and BatchTopK's, once
    register_architecture(dataclasses.replace(architecture("dummy"), l0_knob="sae.d_sae"))
    assert l0_knobs() == ("sae.d_sae", "sae.k")


def test_a_plugin_without_kernels_trains_on_the_reference_path(tmp_path, dummy_architecture):
    cfg = small_config(train__steps=20, train__log_every=10, train__checkpoint_every=0)
    cfg.sae = DummySAEConfig(expansion_factor=4)
    summary = run_job(cfg, tmp_path)
    assert summary["status"] == "done" and summary["loss_paths"] == ["reference"]
    sae, config = load_sae(tmp_path)
    assert isinstance(sae, DummySAE) and config["kind"] == "dummy"


@pytest.mark.parametrize("kind", KINDS)
def test_saved_and_reloaded_sae_gives_identical_outputs(kind, tmp_path):
    sae = random_sae(kind, d=8, M=32, dtype=torch.float32)
    x = torch.randn(16, 8)
    out = sae(x)  # a training-mode pass sets the state evaluation needs (BatchTopK's theta)
    sae.after_step_((out.f > 0).sum(0), x.shape[0])
    save_sae(tmp_path, sae, kind, {"norm_scale": 1.0})
    loaded, config = load_sae(tmp_path)
    assert type(loaded) is type(sae) and config["options"] == sae.options
    sae.eval(), loaded.eval()
    for a, b in zip(sae(x), loaded(x), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for (name, a), (_, b) in zip(
        sae.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("kind", ["topk", "batchtopk", "matryoshka_batchtopk"])
def test_topk_training_on_the_kernel_gives_the_reference_weights(kind):
    from sae_sweep.data.synthetic import SyntheticData
    from sae_sweep.training.loop import TrainingRun, train

    def trained(fast_path):
        cfg = small_config(train__steps=8, train__log_every=4, train__fast_path=fast_path)
        cfg.sae = architecture(kind).config(expansion_factor=4, k=3, dead_tokens=512)
        cfg.penalty = PenaltyConfig(kind=PenaltyKind.none, coefficient=0.0)
        source = SyntheticData(cfg.data, run_seed=0, device=torch.device("cpu"))
        sae = build_sae(cfg.sae, d_in=source.d, seed=0)
        run = TrainingRun(cfg, sae, source, _NullLogger(), norm_scale=1.0, checkpoint_dir=None)
        (result,) = train([run], source)
        return sae, result.loss_paths

    ref, ref_paths = trained(False)
    fast, fast_paths = trained(True)
    assert (ref_paths, fast_paths) == (["reference"], ["sparse"])
    assert fast.kind == kind
    # Adam divides by |g|: a gradient entry at fp32 rounding level (a latent kept once with a
    # tiny activation) moves its weight by a visible fraction of lr in either path
    for (name, a), (_, b) in zip(ref.state_dict().items(), fast.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=2e-4, msg=name)


class _NullLogger:
    def log(self, metrics, step):
        pass


@pytest.mark.parametrize("row_scale", [0.0, 100.0], ids=["even-rows", "one-row-holds-most"])
def test_batch_topk_selection_is_exact(row_scale):
    pre = torch.randn(64, 48)
    pre[3] += row_scale  # then row 3 holds more than its 4k candidates of the batch's top k x B
    active = batch_topk(pre, k=2)
    want = pre.reshape(-1).topk(2 * 64).indices.sort().values
    torch.testing.assert_close(active.rows * 48 + active.cols, want)
    assert active.offsets[-1] == 128 and (active.rows.diff() >= 0).all()
