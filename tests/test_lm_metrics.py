"""Loss recovered: the SAE spliced into a tiny random GPT-2 at the hooked site."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sae_sweep.data.hf_model import load_model  # noqa: E402
from sae_sweep.evaluation.lm import lm_metrics, mean_ce, sae_reconstruction  # noqa: E402

try:
    from data_fixtures import FixedSAE, save_tiny_gpt2
except ImportError:
    from tests.data_fixtures import FixedSAE, save_tiny_gpt2


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    folder = save_tiny_gpt2(tmp_path_factory.mktemp("m") / "gpt2", n_layer=3, init_range=0.3)
    # large random weights: every sublayer matters, so zero ablation moves the loss
    return load_model(str(folder), "cpu", "float32")


def tokens(n=6, t=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 33, (n, t), generator=gen)
    ids[:, 0] = 0  # BOS
    return ids


@pytest.mark.parametrize("site", ["transformer.h.1", "transformer.h.1.mlp", "transformer.h.1.attn"])
def test_identity_splice_recovers_all_the_loss_and_zero_recovers_none(lm, site):
    ids = tokens()
    scale = 7.3  # the reconstruction is taken in normalised units and scaled back
    identity = lm_metrics(lm, site, ids, sae_reconstruction(FixedSAE(True), scale), [0], 4)
    assert identity["ce_zero"] != pytest.approx(identity["ce_clean"], abs=1e-4)
    assert identity["loss_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert identity["delta_lm_loss"] == pytest.approx(0.0, abs=1e-6)
    assert identity["ce_sae"] == pytest.approx(identity["ce_clean"], abs=1e-6)
    zero = lm_metrics(lm, site, ids, sae_reconstruction(FixedSAE(False), scale), [0], 4)
    assert zero["loss_recovered"] == pytest.approx(0.0, abs=1e-6)
    assert zero["ce_sae"] == pytest.approx(zero["ce_zero"], abs=1e-6)
    assert zero["delta_lm_loss"] == pytest.approx(zero["ce_zero"] - zero["ce_clean"], abs=1e-6)


def test_clean_ce_matches_the_model_loss(lm):
    ids = tokens()
    expected = lm.model(input_ids=ids, labels=ids).loss.item()
    assert mean_ce(lm.model, ids, batch_size=4) == pytest.approx(expected, rel=1e-5)


def test_excluded_positions_are_not_spliced(lm):
    ids = tokens(n=4)
    ids[1, 5] = 0  # a separator inside a sequence is excluded too
    received = []

    def reconstruct(h):  # (positions, d)
        received.append(h.shape[0])
        return h

    lm_metrics(lm, "transformer.h.0", ids, reconstruct, exclude_ids=[0], batch_size=2)
    assert sum(received) == ids.numel() - 4 - 1  # every position but the five BOS tokens


def _direct(lm, site_name, ids, replace_rows, exclude=0):
    """CE and per-token KL(P_clean || P) computed here, with the rows of h at non-excluded
    positions replaced by replace_rows(h_rows); nothing shared with evaluation/lm.py."""
    site = dict(lm.model.named_modules())[site_name]
    keep = ids != exclude

    def hook(_m, _i, out):
        h = out[0] if isinstance(out, tuple) else out
        h = h.clone()
        h[keep] = replace_rows(h[keep])
        return (h, *out[1:]) if isinstance(out, tuple) else h

    clean = lm.model(input_ids=ids).logits[:, :-1]
    handle = site.register_forward_hook(hook)
    try:
        logits = lm.model(input_ids=ids).logits[:, :-1]
    finally:
        handle.remove()
    targets = ids[:, 1:].reshape(-1)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets)
    kl = torch.nn.functional.kl_div(
        logits.log_softmax(-1), clean.log_softmax(-1), log_target=True, reduction="none"
    ).sum(-1)
    return ce.item(), kl.mean().item()


def test_mean_ablation_and_kl_match_a_direct_computation(lm):
    site = "transformer.h.1"
    ids = tokens(n=6)
    with torch.no_grad():
        hs = dict(lm.model.named_modules())[site]
        captured = []
        handle = hs.register_forward_hook(
            lambda m, i, o: captured.append(o[0] if isinstance(o, tuple) else o)
        )
        lm.model(input_ids=ids)
        handle.remove()
        mu = captured[0][ids != 0].mean(0)  # over the spliced positions only (BOS excluded)

        def shrink(h):
            return 0.6 * h + 0.1

        r = lm_metrics(lm, site, ids, shrink, exclude_ids=[0], batch_size=4)  # 2 batches
        ce_sae, kl_sae = _direct(lm, site, ids, shrink)
        ce_mean, kl_mean = _direct(lm, site, ids, lambda h: mu.expand_as(h))
        ce_zero, kl_zero = _direct(lm, site, ids, torch.zeros_like)
        ce_clean, kl_clean = _direct(lm, site, ids, lambda h: h)
    assert kl_clean == pytest.approx(0.0, abs=1e-6)
    assert r["ce_sae"] == pytest.approx(ce_sae, rel=1e-5)
    assert r["ce_mean"] == pytest.approx(ce_mean, rel=1e-5)
    assert r["kl_div"] == pytest.approx(kl_sae, rel=1e-4)
    assert r["kl_mean"] == pytest.approx(kl_mean, rel=1e-4)
    assert r["kl_zero"] == pytest.approx(kl_zero, rel=1e-4)
    assert r["loss_recovered_mean"] == pytest.approx(
        (ce_mean - ce_sae) / (ce_mean - ce_clean), rel=1e-4
    )
    assert r["kl_score"] == pytest.approx((kl_zero - kl_sae) / kl_zero, rel=1e-4)
    # the mean is a real ablation here, distinct from zero ablation and from clean
    assert abs(ce_mean - ce_zero) > 1e-3 and abs(ce_mean - ce_clean) > 1e-3
    assert 0 < kl_sae < kl_zero


def test_the_splice_applies_the_normalisation_scalar_both_ways(lm):
    """A real SAE with biases and ReLU: x_hat(h s) / s differs from x_hat(h), so a splice that
    ignored s would change CE_sae."""
    from sae_sweep.config.schema import SAEConfig
    from sae_sweep.models import build_sae

    site, ids, s = "transformer.h.1", tokens(n=4), 0.05
    sae = build_sae(SAEConfig(kind="standard"), d_in=32, seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(-0.2)
        sae.b_dec.normal_(0, 0.5)
        r = lm_metrics(lm, site, ids, sae_reconstruction(sae, s), exclude_ids=[0], batch_size=4)
        right, _ = _direct(lm, site, ids, lambda h: sae(h * s).x_hat / s)
        wrong, _ = _direct(lm, site, ids, lambda h: sae(h).x_hat)
    assert r["ce_sae"] == pytest.approx(right, rel=1e-5)
    assert abs(right - wrong) > 1e-2
