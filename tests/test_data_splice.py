"""Loss recovered: the SAE spliced into a tiny random GPT-2 at the hooked site."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sae_sweep.data.hf_model import load_model  # noqa: E402
from sae_sweep.data.splice import loss_recovered, mean_ce, sae_reconstruction  # noqa: E402
from sae_sweep.models.base import SAEOutput  # noqa: E402

try:
    from data_fixtures import save_tiny_gpt2
except ImportError:
    from tests.data_fixtures import save_tiny_gpt2


class Fixed(torch.nn.Module):
    """A stand-in SAE whose reconstruction is x (identity) or 0 (zero)."""

    def __init__(self, identity: bool):
        super().__init__()
        self.identity = identity
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        x_hat = x.clone() if self.identity else torch.zeros_like(x)
        return SAEOutput(x_hat=x_hat, f=x, g=x)


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
    identity = loss_recovered(lm, site, ids, sae_reconstruction(Fixed(True), scale), [0], 4)
    assert identity["ce_zero"] != pytest.approx(identity["ce_clean"], abs=1e-4)
    assert identity["loss_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert identity["delta_lm_loss"] == pytest.approx(0.0, abs=1e-6)
    assert identity["ce_sae"] == pytest.approx(identity["ce_clean"], abs=1e-6)
    zero = loss_recovered(lm, site, ids, sae_reconstruction(Fixed(False), scale), [0], 4)
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

    loss_recovered(lm, "transformer.h.0", ids, reconstruct, exclude_ids=[0], batch_size=2)
    assert sum(received) == ids.numel() - 4 - 1  # every position but the five BOS tokens
