"""Shared fixtures: small configs and SAEs that run in milliseconds on a CPU."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")  # no test may need a W&B account
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sae_sweep.config.schema import (  # noqa: E402
    AuxDecoder,
    Config,
    LoggerConfig,
    LoggerMode,
    NormGrad,
    PenaltyConfig,
    PenaltyKind,
    SyntheticDataConfig,
    TrainConfig,
)
from sae_sweep.models import GatedSAEConfig  # noqa: E402

# The tests' models are tiny: a second thread speeds no op up, and on a busy machine (a CI
# runner, or jobs beside the suite) two threads per op wait on each other (measured: a tiny
# job 5x slower in CPU time). Tests of the thread budget set the count they test.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture
def sweep_env(monkeypatch):
    """A sweep run in this process with a fake launcher: no sweep variables inherited, no
    GPUs to publish; the sweep's outcome taken afterwards, so the next test starts clean."""
    from sae_sweep.sweep import lifecycle

    for key in [k for k in os.environ if k.startswith("SAE_SWEEP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SAE_SWEEP_GPUS", "")  # nothing to publish
    yield
    lifecycle.take_exit_code()


def small_config(**overrides) -> Config:
    """A valid gated/decoder_norm config on tiny synthetic data (about a second to train)."""
    cfg = Config(
        sae=GatedSAEConfig(expansion_factor=4, aux_decoder=AuxDecoder.frozen),
        penalty=PenaltyConfig(
            kind=PenaltyKind.decoder_norm, coefficient=3.0, decoder_norm_grad=NormGrad.live
        ),
        data=SyntheticDataConfig(d=16, n_features=32, mean_active=3, n_eval=2048),
        logger=LoggerConfig(mode=LoggerMode.disabled),
        train=TrainConfig(steps=60, batch_size=128, log_every=20, checkpoint_every=30),
        device="cpu",
    )
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    return cfg


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run whenever CUDA is available and are skipped (reported) otherwise."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def killed_after_checkpoint(monkeypatch, run, at: int = 30) -> None:
    """Call `run()` as a job killed right after its checkpoint at step `at`: the training loop
    raises KeyboardInterrupt once that checkpoint is written (then saving is restored)."""
    import sae_sweep.training.loop as loop

    real_save = loop.save_checkpoint

    def save_then_die(directory, *, step: int, **kw):
        real_save(directory, step=step, **kw)
        if step == at:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(loop, "save_checkpoint", real_save)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """(model folder, stories .jsonl): a small Llama (3 blocks, d=32) trained for a few seconds
    on the stories, with a BPE tokenizer, all made here: the Llama path runs on any machine (no
    hub, no ../shared). The model trains on the stories it is later evaluated on."""
    from data_fixtures import save_tiny_llama, write_chain_text, write_jsonl

    root = tmp_path_factory.mktemp("llama")
    stories = write_chain_text(root / "stories.txt")
    return save_tiny_llama(root / "llama", stories), write_jsonl(root / "stories.jsonl", stories)


SHARED_SWEEP = ["variant=gated_original,gated_dn_frozen_detached", "lambda_multiplier=0.25,1,4",
                "seed=0,1", "hydra.sweeper.analysis=true"]  # fmt: skip
"""The shared sweep's grid: 2 variants x 3 lambdas x 2 seeds of tiny jobs, then its analysis."""


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory):
    """The folder of a finished `sae-sweep +sweep=quick` (SHARED_SWEEP, on sweep_fixtures'
    tiny jobs, ended by its analysis: report, plots, tables), run in this process once per
    test run. Tests that only read a finished sweep share it; a test that changes it works on
    a copy (shutil.copytree)."""
    from sweep_fixtures import run_sweep_in_process

    root = tmp_path_factory.mktemp("finished_sweep")
    with pytest.MonkeyPatch.context() as mp:
        r = run_sweep_in_process(mp, None, root / "sweep", *SHARED_SWEEP, cwd=root)
    assert r.returncode == 0, r.stdout[-3000:]
    return root / "sweep"
