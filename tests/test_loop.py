"""The training loop (training/loop.py), called as a job calls it: the schedules it applies,
resampling at its steps, one batch per step for a whole pack, and a failing SAE leaving the
pack while the others end as when each trains alone. Through whole jobs (records, resume,
checkpoints): test_job.py, test_packing.py, test_faults.py."""

import gc
import weakref

import pytest
import torch
from conftest import small_config

from sae_sweep.config.schema import NormGrad
from sae_sweep.data.synthetic import SyntheticData
from sae_sweep.models import StandardSAEConfig, build_sae
from sae_sweep.training.divergence import TrainingDivergedError
from sae_sweep.training.loop import TrainingRun, train
from sae_sweep.training.schedules import lambda_at, lr_at


class _Logger:
    def __init__(self):
        self.rows = []

    def log(self, metrics, step):
        self.rows.append((step, metrics))

    def logged(self, key):
        """{step: value} of every row that logged `key`."""
        return {step: m[key] for step, m in self.rows if key in m}


class _CountingSource(SyntheticData):
    """Synthetic data that remembers the step of every batch drawn."""

    def __init__(self, cfg):
        super().__init__(cfg.data, run_seed=cfg.seed, device=torch.device("cpu"))
        self.drawn = []

    def train_batch(self, step, batch_size):
        self.drawn.append(step)
        return super().train_batch(step, batch_size)


def _run(cfg, source):
    sae = build_sae(cfg.sae, d_in=source.d, seed=cfg.seed)
    return TrainingRun(cfg, sae, source, _Logger(), norm_scale=1.0, checkpoint_dir=None)


def _config(**overrides):
    return small_config(**{"train__steps": 12, "train__log_every": 1, **overrides})


def test_each_step_trains_at_its_scheduled_lr_and_lambda():
    cfg = _config(train__lr=1e-3, train__lr_warmup_steps=3, train__lr_decay_fraction=0.5,
                  penalty__warmup_steps=6)  # fmt: skip
    run = _run(cfg, _CountingSource(cfg))
    train([run], run.source)
    tr, pen = cfg.train, cfg.penalty
    want_lr = {step + 1: lr_at(step, base_lr=tr.lr, steps=12, warmup_steps=3, decay_fraction=0.5)
               for step in range(12)}  # fmt: skip
    want_lambda = {step + 1: lambda_at(step, coefficient=pen.coefficient, warmup_steps=6)
                   for step in range(12)}  # fmt: skip
    assert run.logger.logged("train/lr") == pytest.approx(want_lr)
    assert run.logger.logged("train/coefficient") == pytest.approx(want_lambda)
    assert len(set(want_lr.values())) > 3 and len(set(want_lambda.values())) > 3
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(want_lr[12])  # Adam's own lr


def test_dead_features_are_resampled_at_the_configured_steps():
    cfg = _config(resample__enabled=True, resample__at_steps=[4, 9], resample__dead_window_steps=1)
    run = _run(cfg, _CountingSource(cfg))
    (result,) = train([run], run.source)
    resampled = run.logger.logged("train/resampled")
    assert list(resampled) == [4, 9] and resampled[9] > 0  # by step 9 some features are dead
    assert result.steps == 12 and result.resumed_from_step == 0


def test_a_pack_draws_each_batch_once_and_a_failing_sae_leaves_it_alone():
    """The diverging SAE is second: the ones after it keep their place and their batches."""
    configs = [
        _config(penalty__coefficient=1.0),
        _config(train__lr=1e30, train__grad_clip=None),  # diverges
        _config(sae=StandardSAEConfig(expansion_factor=4), penalty__coefficient=0.5),
        _config(penalty__coefficient=3.0, penalty__decoder_norm_grad=NormGrad.detached),
    ]
    source = _CountingSource(configs[0])
    runs = [_run(cfg, source) for cfg in configs]
    failures = []
    results = train(runs, source, lambda i, exc: failures.append((i, exc)))

    assert source.drawn == list(range(12))  # one batch per step for the whole pack
    assert [(i, type(exc)) for i, exc in failures] == [(1, TrainingDivergedError)]
    assert results[1] is None
    for i in (0, 2, 3):
        alone = _run(configs[i], _CountingSource(configs[i]))
        (alone_result,) = train([alone], alone.source)
        for (name, a), b in zip(
            alone.sae.named_parameters(), runs[i].sae.parameters(), strict=True
        ):
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=name)
        for key in ("train/loss", "train/l0", "train/fvu", "train/dead_fraction"):
            assert runs[i].logger.logged(key) == pytest.approx(alone.logger.logged(key)), key
        assert results[i].steps == alone_result.steps == 12
        assert results[i].loss_paths == alone_result.loss_paths


def test_a_failed_sae_gives_its_memory_back_to_the_pack():
    """Out of memory in one SAE of a pack must not keep its weights and Adam moments alive
    (in the run, or in the frames of the traceback its record was written from)."""
    configs = [_config(), _config(train__lr=1e30, train__grad_clip=None)]  # the second diverges
    source = _CountingSource(configs[0])
    runs = [_run(cfg, source) for cfg in configs]
    failed_sae = weakref.ref(runs[1].sae)
    failures = []
    results = train(runs, source, lambda i, exc: failures.append((i, exc)))
    gc.collect()
    assert [i for i, _ in failures] == [1] and results[1] is None
    assert failed_sae() is None
    assert failures[0][1].__traceback__ is not None  # the record still had its traceback
    assert results[0].steps == 12


def test_without_on_failure_a_failure_is_raised():
    cfg = _config(train__lr=1e30, train__grad_clip=None)
    run = _run(cfg, _CountingSource(cfg))
    with pytest.raises(TrainingDivergedError, match="train.lr"):
        train([run], run.source)


def test_saes_of_one_stream_must_share_the_batch_size():
    cfg, other = _config(), _config(train__batch_size=64)
    source = _CountingSource(cfg)
    with pytest.raises(ValueError, match="train.batch_size"):
        train([_run(cfg, source), _run(other, source)], source)
