"""The papers' and reference trainers' conventions, checked against float64 references built
from the papers' formulas: AuxK's weight against reconstruction (Gao et al.'s trainer, and
SAELens's), JumpReLU's lambda in this project's input units, and a JumpReLU threshold that
trains as itself (with weights of earlier versions, trained as log theta, still loading)."""

import json
import math

import pytest
import torch
from conftest import small_config
from safetensors.torch import load_file, save_file

from sae_sweep.config.schema import PenaltyConfig, PenaltyKind
from sae_sweep.job import run_job
from sae_sweep.losses import sae_loss
from sae_sweep.models import architecture, build_sae
from sae_sweep.models.jumprelu import rectangle
from sae_sweep.models.topk import AuxKWeighting
from sae_sweep.penalties import make_penalty
from sae_sweep.record import layout
from sae_sweep.record.weights import load_sae

NO_PENALTY = make_penalty(PenaltyConfig(kind=PenaltyKind.none, coefficient=0.0))
L0 = PenaltyKind.l0


def _topk_with_dead_latents(weighting, d=6, M=24, k=3, k_aux=4, seed=0):
    cfg = architecture("topk").config(
        d_sae=M, k=k, k_aux=k_aux, dead_tokens=10, aux_weighting=weighting
    )
    sae = build_sae(cfg, d_in=d, seed=seed).double()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.1)
    sae.tokens_since_fired[::2] = 100  # half the latents are dead
    # far from unit variance, so that a missing 1/V_x shows: V_x is about 9 d here
    x = 3.0 * torch.randn(32, d, generator=gen, dtype=torch.float64) + 1.0
    return sae, x


def _paper_terms(sae, x, alpha):
    """Gao et al.'s trainer in float64, written from its formula: (normalised MSE of the
    reconstruction, alpha x normalised MSE of the dead latents' reconstruction of the
    residual), each an element-mean ratio as in openai/sparse_autoencoder's train.py."""
    pre = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    top = pre.topk(sae.k, dim=1)
    f = torch.zeros_like(pre).scatter(1, top.indices, top.values.relu())
    x_hat = f @ sae.W_dec.T + sae.b_dec
    recon = (x_hat - x).pow(2).mean() / (x - x.mean(0)).pow(2).mean()
    dead = sae.dead_latents()
    picked = pre.detach().masked_fill(~dead, -math.inf).topk(sae.k_aux, dim=1).indices
    z = torch.zeros_like(pre).scatter(1, picked, pre.gather(1, picked).relu())
    e = (x - x_hat).detach()
    e_hat = z @ sae.W_dec.T
    aux = alpha * (e_hat - e).pow(2).mean() / (e - e.mean(0)).pow(2).mean()
    return recon, aux


def _grad(loss, sae) -> torch.Tensor:
    grads = torch.autograd.grad(loss, list(sae.parameters()), allow_unused=True, retain_graph=True)
    return torch.cat([
        (g if g is not None else torch.zeros_like(p)).reshape(-1)
        for g, p in zip(grads, sae.parameters(), strict=True)
    ])  # fmt: skip


def test_auxk_against_reconstruction_is_weighted_as_in_gao_et_al():
    sae, x = _topk_with_dead_latents(AuxKWeighting.normalised_mse)
    ours = sae_loss(sae, x, sae(x), NO_PENALTY, 0.0)
    paper_recon, paper_aux = _paper_terms(sae, x, sae.aux_coefficient)
    assert ours.aux.item() > 0 and paper_aux.item() > 0
    v_x = (x - x.mean(0)).pow(2).sum() / x.shape[0]

    ratio_ours = _grad(ours.aux, sae).norm() / _grad(ours.recon, sae).norm()
    ratio_paper = _grad(paper_aux, sae).norm() / _grad(paper_recon, sae).norm()
    assert ratio_ours.item() == pytest.approx(ratio_paper.item(), rel=1e-10)
    # the whole loss is the paper's times V_x: the same direction in every parameter
    torch.testing.assert_close(
        _grad(ours.total, sae), v_x * _grad(paper_recon + paper_aux, sae), rtol=1e-10, atol=1e-12
    )

    # the earlier convention: AuxK 1/V_x as strong (V_x is ~80 here, so this test can fail)
    sae.aux_weighting = AuxKWeighting.residual_variance
    old = sae_loss(sae, x, sae(x), NO_PENALTY, 0.0)
    ratio_old = _grad(old.aux, sae).norm() / _grad(old.recon, sae).norm()
    assert v_x.item() > 50
    assert ratio_old.item() == pytest.approx(ratio_paper.item() / v_x.item(), rel=1e-10)


def test_saelens_weighting_equals_saelens_topk_aux_loss():
    """SAELens's TopK training SAE computes the same AuxK from the same weights."""
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    sae, x = _topk_with_dead_latents(AuxKWeighting.saelens, k_aux=None)
    sae.aux_coefficient = 1.0  # SAELens's default aux_loss_coefficient
    dead = sae.dead_latents()
    with torch.no_grad():  # SAELens applies no ReLU to the dead latents' pre-activations
        sae.b_enc[dead] += 30.0  # here they are all positive: ReLU or not, the same
    cfg = TopKTrainingSAEConfig(
        d_in=sae.d_in, d_sae=sae.d_sae, k=sae.k, dtype="float64", aux_loss_coefficient=1.0,
        rescale_acts_by_decoder_norm=False,
    )  # fmt: skip
    theirs = TopKTrainingSAE(cfg)
    with torch.no_grad():
        theirs.W_enc.copy_(sae.W_enc.T), theirs.W_dec.copy_(sae.W_dec.T)
        theirs.b_enc.copy_(sae.b_enc), theirs.b_dec.copy_(sae.b_dec)
        out = sae(x)
        pre = sae.pre_activations(x)
        assert (pre[:, dead] > 0).all()
        ours = sae_loss(sae, x, out, NO_PENALTY, 0.0).aux
        want = theirs.calculate_topk_aux_loss(x, out.x_hat, pre, dead)
    assert ours.item() > 0
    assert ours.item() == pytest.approx(want.item(), rel=1e-10)


def _jumprelu(d, M, seed=0, **options):
    cfg = architecture("jumprelu").config(d_sae=M, **options)
    return build_sae(cfg, d_in=d, seed=seed).double()


def _paper_jumprelu_grad(W_enc, b_enc, W_dec, b_dec, theta, eps, lam, x):
    """The paper's loss ||x - x_hat||^2 + lambda ||f||_0 on inputs in its units, and its
    gradient in theta from the paper's pseudo-derivatives (rectangle kernel), in float64."""
    pre = (x - b_dec) @ W_enc.T + b_enc
    on = (pre > theta).double()
    f = pre * on
    x_hat = f @ W_dec.T + b_dec
    B = x.shape[0]
    loss = (x - x_hat).pow(2).sum() / B + lam * on.sum() / B
    K = rectangle((pre - theta) / eps)
    dL_df = 2 * (x_hat - x) @ W_dec / B
    d_theta = (dL_df * -(theta / eps) * K).sum(0) + lam / B * (-(1 / eps) * K).sum(0)
    return loss, d_theta


def test_jumprelu_lambda_here_is_the_papers_lambda_times_d():
    """Inputs here are the paper's times c = sqrt(d) (E||x||^2 = 1 there, E||x|| = sqrt(d)
    here). With every length scaled by c (biases, theta, bandwidth), f scales by c, L_recon
    by d and the L0 term not at all: the paper's trade-off is lambda_here = d lambda_paper,
    and then L_here = d L_paper and dL/dtheta_here = c dL/dtheta_paper."""
    d, M, lam_paper = 16, 48, 0.02
    c = math.sqrt(d)
    sae = _jumprelu(d, M, bandwidth=0.05, threshold_init=0.05)
    gen = torch.Generator().manual_seed(3)
    x_paper = torch.randn(256, d, generator=gen, dtype=torch.float64) / c  # E||x||^2 = 1
    with torch.no_grad():
        sae.b_enc.copy_(0.1 * torch.randn(M, generator=gen, dtype=torch.float64))
        sae.b_dec.copy_(0.1 * torch.randn(d, generator=gen, dtype=torch.float64))
        pre = (c * x_paper - sae.b_dec) @ sae.W_enc.T + sae.b_enc
        sae.threshold.copy_(pre.abs().quantile(0.7, dim=0))  # many inputs near each threshold
    assert sae.epsilon == pytest.approx(0.05 * c)  # bandwidth: given in the paper's units
    theta_paper, eps_paper = sae.threshold.detach() / c, sae.epsilon / c
    loss_paper, d_theta_paper = _paper_jumprelu_grad(
        sae.W_enc.detach(), sae.b_enc.detach() / c, sae.W_dec.detach(), sae.b_dec.detach() / c,
        theta_paper, eps_paper, lam_paper, x_paper,
    )  # fmt: skip
    assert torch.count_nonzero(d_theta_paper) > M // 2

    def here(lam):
        sae.zero_grad(set_to_none=True)
        x = c * x_paper
        penalty = make_penalty(PenaltyConfig(kind=L0, coefficient=lam))
        terms = sae_loss(sae, x, sae(x), penalty, lam)
        terms.total.backward()
        return terms.total.detach(), sae.threshold.grad.clone()

    loss_here, d_theta_here = here(d * lam_paper)
    assert loss_here.item() == pytest.approx(d * loss_paper.item(), rel=1e-10)
    torch.testing.assert_close(d_theta_here, c * d_theta_paper, rtol=1e-10, atol=1e-12)
    # the paper's lambda unconverted: a different trade-off (the penalty d times weaker)
    _, d_theta_unconverted = here(lam_paper)
    assert not torch.allclose(d_theta_unconverted, c * d_theta_paper, rtol=1e-2)


def test_one_adam_step_moves_a_jumprelu_threshold_by_lr():
    """Trained as itself, theta moves by about lr on Adam's first step (as log theta it
    moved by theta x lr: 2.4e-5 from the paper's init at d = 64), and never goes below 0."""
    d, M, lr = 64, 128, 3e-3
    sae = _jumprelu(d, M).float()  # the paper's init: theta = 0.001 sqrt(d)
    x = torch.randn(512, d)  # pre ~ N(0, 1): some fall in each threshold's window
    before = sae.threshold.detach().clone()
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    penalty = make_penalty(PenaltyConfig(kind=L0, coefficient=1.0))
    terms = sae_loss(sae, x, sae(x), penalty, 1.0)
    terms.total.backward()
    moved = sae.threshold.grad != 0
    assert moved.sum() > M // 4
    opt.step()
    sae.after_step_((sae(x).f > 0).sum(0), x.shape[0])
    step = (sae.threshold.detach() - before)[moved].abs()
    assert step.min().item() > 0.5 * lr and step.max().item() < 1.5 * lr
    with torch.no_grad():
        sae.threshold[:3] = -0.1  # a step that overshoots below 0 is projected back
    sae.after_step_((sae(x).f > 0).sum(0), x.shape[0])
    assert (sae.threshold >= 0).all() and (sae.threshold[:3] == 0).all()


def _as_earlier_versions_saved_it(path):
    """Rewrite a safetensors file the way versions that trained log(theta) wrote it."""
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.endswith("threshold"))
    tensors[key.replace("threshold", "log_threshold")] = tensors.pop(key).log()
    save_file(tensors, str(path))


def test_jumprelu_weights_and_checkpoints_of_earlier_versions_load_and_export(tmp_path):
    import sae_lens

    from sae_sweep.export.run import export_run
    from sae_sweep.training.checkpoint import load_checkpoint, save_checkpoint

    cfg = small_config(
        sae=architecture("jumprelu").config(expansion_factor=4),
        penalty=PenaltyConfig(kind=L0, coefficient=0.5),
        train__steps=40,
    )
    run_job(cfg, tmp_path / "job")
    now, _ = load_sae(tmp_path / "job")
    _as_earlier_versions_saved_it(tmp_path / "job" / layout.WEIGHTS)
    assert "log_threshold" in load_file(str(tmp_path / "job" / layout.WEIGHTS))

    before, config = load_sae(tmp_path / "job")
    x = torch.randn(256, before.d_in) * 2
    with torch.no_grad():
        want = now(x)
        assert (want.f != 0).float().mean() > 0.01
        torch.testing.assert_close(before.threshold, now.threshold, rtol=1e-6, atol=0)
        torch.testing.assert_close(before(x).f, want.f, rtol=1e-5, atol=1e-5)
    folder = export_run(tmp_path / "job", tmp_path / "export")
    theirs = sae_lens.SAE.load_from_disk(str(folder))
    s = config["norm_scale"]
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x / s), want.f, rtol=1e-5, atol=1e-5)
    assert json.loads((folder / "cfg.json").read_text())["architecture"] == "jumprelu"

    # a checkpoint of an earlier version resumes: the thresholds come back as theta
    opt = torch.optim.Adam(now.parameters())
    save_checkpoint(tmp_path / "ckpt", step=7, sae=now, optimizer=opt, tensors={}, meta={})
    _as_earlier_versions_saved_it(tmp_path / "ckpt" / layout.CHECKPOINT_STATE)
    meta = tmp_path / "ckpt" / layout.CHECKPOINT_META  # earlier versions had no file manifest
    meta.write_text(json.dumps({"step": 7}))
    fresh = build_sae(cfg.sae, d_in=now.d_in, seed=1)
    step, _, _ = load_checkpoint(tmp_path / "ckpt", fresh, torch.optim.Adam(fresh.parameters()))
    assert step == 7
    torch.testing.assert_close(fresh.threshold, now.threshold, rtol=1e-6, atol=0)
