"""The training loop on the fast paths: same weights as the reference path; `auto` goes sparse."""

import pytest
import torch
from conftest import small_config

from sae_sweep.config.schema import SparsePath
from sae_sweep.data.synthetic import SyntheticData
from sae_sweep.models import build_sae
from sae_sweep.training.loop import TrainingRun, train
from sae_sweep.training.step import LossPath, Stepper, make_optimizer


class _Logger:
    def __init__(self):
        self.rows = []

    def log(self, metrics, step):
        self.rows.append((step, metrics))


def _train(cfg):
    source = SyntheticData(cfg.data, run_seed=cfg.seed, device=torch.device("cpu"))
    sae = build_sae(cfg.sae, d_in=source.d, seed=cfg.seed)
    logger = _Logger()
    train([TrainingRun(cfg, sae, source, logger, norm_scale=1.0, checkpoint_dir=None)], source)
    return sae, logger.rows


def _config(**overrides):
    base = {"train__steps": 12, "train__log_every": 4, "train__lr_decay_fraction": 0.0}
    return small_config(**{**base, **overrides})


@pytest.mark.parametrize("sparse_path", [SparsePath.off, SparsePath.on])
@pytest.mark.parametrize("kind", ["gated", "standard"])
def test_fast_loop_trains_the_same_weights_as_the_reference(kind, sparse_path):
    extra = {"sae__kind": kind}
    if kind == "standard":
        extra["sae__aux_decoder"] = None
    ref, ref_rows = _train(_config(train__fast_path=False, **extra))
    fast, rows = _train(_config(train__fast_path=True, train__sparse_path=sparse_path, **extra))
    for (name, a), (_, b) in zip(ref.named_parameters(), fast.named_parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    for (_, m_ref), (_, m) in zip(ref_rows, rows, strict=True):
        for key in ("loss", "recon", "sparse", "aux", "l0"):
            assert m[f"train/{key}"] == pytest.approx(m_ref[f"train/{key}"], rel=1e-4, abs=1e-6)
    assert all(m["train/sparse_path"] == float(sparse_path == SparsePath.on) for _, m in rows)


def test_auto_switches_to_sparse_once_l0_is_low():
    cfg = _config(train__sparse_density_threshold=1.0)  # any L0 qualifies
    _, rows = _train(cfg)
    assert [m["train/sparse_path"] for _, m in rows] == [0.0, 1.0, 1.0]


def test_auto_threshold_and_hysteresis():
    cfg = _config(train__sparse_density_threshold=0.05)
    sae = build_sae(cfg.sae, d_in=16, seed=0)  # d_sae = 64: the threshold is L0 = 3.2
    stepper = Stepper(cfg, sae, make_optimizer(sae, 1e-3, (0.9, 0.999)))
    assert stepper.path == LossPath.dense
    assert stepper.update_path(10.0) == LossPath.dense
    assert stepper.update_path(3.0) == LossPath.sparse
    assert stepper.update_path(5.0) == LossPath.sparse  # within the hysteresis band
    assert stepper.update_path(7.0) == LossPath.dense
    cfg.train.sparse_path = SparsePath.off
    assert Stepper(cfg, sae, make_optimizer(sae, 1e-3, (0.9, 0.999))).update_path(0.0) == (
        LossPath.dense
    )


@pytest.mark.parametrize(
    ("knobs", "path"),
    [
        ({"train__compile": True}, LossPath.compiled),
        ({"train__autocast": True, "train__fast_path": False}, LossPath.reference),
        ({"train__matmul_dtype": "bfloat16"}, LossPath.dense),
    ],
)
def test_gpu_knobs_smoke_on_cpu(knobs, path):
    """compile, bf16 autocast and bf16 products run on a CPU (tiny shapes); on a GPU they are
    the fast options."""
    cfg = _config(train__steps=2, train__log_every=1, **knobs)
    sae, rows = _train(cfg)
    assert len(rows) == 2 and all(torch.isfinite(p).all() for p in sae.parameters())
    assert Stepper(cfg, sae, make_optimizer(sae, 1e-3, (0.9, 0.999))).path == path


def test_auto_stays_dense_with_bf16_products():
    """The sparse kernels are float32 only: `auto` never switches to them from bf16 products."""
    cfg = _config(train__sparse_density_threshold=1.0, train__matmul_dtype="bfloat16")
    _, rows = _train(cfg)
    assert [m["train/sparse_path"] for _, m in rows] == [0.0, 0.0, 0.0]


@pytest.mark.gpu
def test_auto_stays_dense_on_cuda():
    """The switch threshold was tuned on CPU cores; on CUDA `auto` keeps the dense kernels."""
    cfg = _config(train__sparse_density_threshold=1.0, device="cuda")
    sae = build_sae(cfg.sae, d_in=16, seed=0).cuda()
    stepper = Stepper(cfg, sae, make_optimizer(sae, 1e-3, (0.9, 0.999)))
    assert stepper.update_path(0.0) == LossPath.dense
    cfg.train.sparse_path = SparsePath.on  # asked for explicitly: it runs
    assert Stepper(cfg, sae, make_optimizer(sae, 1e-3, (0.9, 0.999))).path == LossPath.sparse
