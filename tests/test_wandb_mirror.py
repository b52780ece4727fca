"""The W&B mirror of a job: its named run in the sweep instance's group, its SAE artifact
(staged offline, movable with the record) and the summary the analysis reads."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import small_config
from wandb_log import offline_run

from analysis.load import load_runs, load_wandb_runs
from sae_sweep.config.schema import LoggerMode
from sae_sweep.job import run_job
from sae_sweep.record.run_logger import sae_artifact_name
from sae_sweep.record.wandb_run import run_name


def test_an_offline_job_stages_its_saelens_folder_as_an_artifact(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = small_config(train__steps=20, variant="gated_original", sweep="quick")
    cfg.logger.mode = LoggerMode.offline
    cfg.logger.group = "quick-20240601-120000-ab12"
    run = tmp_path / "job"
    summary = run_job(cfg, run)
    import wandb

    wandb.teardown()  # the W&B service writes the run's log asynchronously: let it finish

    run_id = (run / "wandb_run_id.txt").read_text().strip()
    assert summary["sae_artifact"] == sae_artifact_name(run_id)
    assert (run / "saelens" / "cfg.json").is_file()
    # what `wandb sync` will upload: a named run of the sweep instance's group
    sent = offline_run(run)
    assert sent["run"].display_name == "gated_original coef=3 seed0"
    assert sent["run"].run_group == "quick-20240601-120000-ab12"
    assert sent["run"].job_type == "train"
    assert {"variant=gated_original", "sweep=quick"} <= set(sent["run"].tags)
    # The artifact's files are referenced in the record itself, relative to the job folder,
    # so `wandb sync` run there uploads them, also after the sweep folder moved.
    (artifact,) = sent["artifacts"]
    assert artifact.name == sae_artifact_name(run_id)
    entries = {e.path: e.local_path for e in artifact.manifest.contents}
    assert set(entries) == {"cfg.json", "sae_weights.safetensors", "sparsity.safetensors"}
    moved = tmp_path / "elsewhere" / "job"
    moved.parent.mkdir()
    run.rename(moved)
    for name, local in entries.items():
        assert not Path(local).is_absolute(), local
        assert (moved / local).read_bytes() == (moved / "saelens" / name).read_bytes()
    # per-run work a sweep job does not need stays off: no package list, no machine scan
    (files,) = moved.glob("wandb/offline-run-*/files")
    assert not (files / "requirements.txt").exists()
    assert not (files / "wandb-metadata.json").exists()


def test_run_names_tell_variant_target_knob_and_seed_apart():
    from sae_sweep.models.topk import TopKSAEConfig

    cfg = small_config(variant="gated_original", lambda_multiplier=2.0, seed=1)
    assert run_name(cfg) == "gated_original lam2 seed1"
    cfg.l0_target = 8.0
    assert run_name(cfg) == "gated_original L0=8 lam2 seed1"
    cfg.train.l0_target = 8.0  # placed by L0 control: every target shares the preset's lam
    assert run_name(cfg) == "gated_original L0=8 controlled seed1"
    topk = small_config(variant="topk", seed=2)
    topk.sae = TopKSAEConfig(k=12)
    assert run_name(topk) == "topk k=12 seed2"


class _FakeWandbRun:
    """Records what RunLogger sends, with W&B's summary rule: the last logged value of each key,
    overwritten by explicit summary updates."""

    def __init__(self, config: dict, group: str | None):
        self.id, self.config, self.group = "r1", config, group
        self.offline = True
        self.logged: dict = {}
        self.summary = SimpleNamespace(update=self._update)
        self.explicit: dict = {}
        self.artifacts: list = []

    def _update(self, d: dict) -> None:
        self.explicit.update(d)

    def log(self, metrics: dict, step: int) -> None:
        self.logged.update(metrics)

    def log_artifact(self, artifact) -> None:
        self.artifacts.append(artifact)

    def finish(self, exit_code: int = 0) -> None:
        self.state = "finished" if exit_code == 0 else "failed"

    def as_api_run(self) -> SimpleNamespace:
        summary = {**self.logged, **self.explicit}
        return SimpleNamespace(id=self.id, url=f"https://wandb.ai/e/p/runs/{self.id}",
                               group=self.group, state=self.state, job_type=None,
                               config=self.config, summary=summary)  # fmt: skip


def test_what_a_job_sends_to_wandb_is_what_the_analysis_reads_back(tmp_path, monkeypatch):
    import wandb

    sent: list[_FakeWandbRun] = []

    def fake_init(**kwargs):
        sent.append(_FakeWandbRun(kwargs["config"], kwargs.get("group")))
        return sent[-1]

    monkeypatch.setattr(wandb, "init", fake_init)
    cfg = small_config(train__steps=20)
    cfg.logger.mode = LoggerMode.offline
    run_job(cfg, tmp_path / "s" / "0")
    (fake,) = sent
    assert [a.name for a in fake.artifacts] == [sae_artifact_name("r1")]

    local = load_runs(tmp_path / "s").iloc[0]
    api = SimpleNamespace(runs=lambda path, filters=None: [fake.as_api_run()])
    remote = load_wandb_runs("e/p", api=api).iloc[0]
    summary = json.loads((tmp_path / "s" / "0" / "summary.json").read_text())
    metrics = [k for k, v in summary.items() if isinstance(v, float)]
    assert {"l0", "fvu", "alive_fraction", "dense_fraction", "l2_ratio"} <= set(metrics)
    for m in metrics:
        assert remote[m] == pytest.approx(local[m], nan_ok=True), m
    for knob in local.index:
        if "." in knob and not knob.startswith("versions."):
            assert str(remote.get(knob)) == str(local[knob]), knob
    assert remote["status"] == "done"


def test_a_failed_artifact_upload_leaves_the_job_done(tmp_path, monkeypatch):
    import wandb

    class Failing(_FakeWandbRun):
        def log_artifact(self, artifact):
            raise ConnectionError("upload refused")

    monkeypatch.setattr(wandb, "init", lambda **k: Failing(k["config"], None))
    cfg = small_config(train__steps=20)
    cfg.logger.mode = LoggerMode.offline
    summary = run_job(cfg, tmp_path / "job")
    assert summary["status"] == "done" and summary["sae_artifact"] is None
    assert (tmp_path / "job" / "sae.safetensors").is_file()
