"""`sae-analysis SWEEP --sync` on a small sweep of real offline W&B runs: one `wandb sync` per
folder, run in that folder (where the jobs' SAE artifacts are referenced from), progress in
wandb_sync.json, and a second sync after a failure goes on with what is left (the upload
replaced in the test process, tests/wandb_server.py). And W&B's own `wandb sync` for real,
against a W&B server on a local port (tests/wandb_http.py): a job folder moved after it
ran uploads its run and its SAE artifact's files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from wandb_http import WandbHTTPServer
from wandb_server import FakeWandbServer

import analysis.sync
from analysis.cli import main
from analysis.sync import sync_sweep
from sae_sweep.record import layout

GROUP = "quick-20240601-120000-ab12"


@pytest.fixture(scope="module")
def offline_sweep(tmp_path_factory):
    """Three job folders and a report folder, each with a real offline W&B run."""
    import os

    import wandb

    root = tmp_path_factory.mktemp("sweep")
    saved = os.environ.get("WANDB_SILENT")
    os.environ["WANDB_SILENT"] = "true"
    try:
        for sub, job_type in (("a/lam1.0_seed0", "train"), ("a/lam2.0_seed0", "train"),
                              ("b/lam1.0_seed0", "train"), (".", "analysis")):  # fmt: skip
            folder = root / sub
            folder.mkdir(parents=True, exist_ok=True)
            run = wandb.init(
                mode="offline", dir=str(folder), group=GROUP, job_type=job_type,
                project="sae-sweep", settings=wandb.Settings(console="off"),
            )  # fmt: skip
            run.log({"l0": 3.0})
            run.finish()
        wandb.teardown()
    finally:
        os.environ.pop("WANDB_SILENT") if saved is None else os.environ.update(WANDB_SILENT=saved)
    return root


@pytest.fixture
def sweep(offline_sweep, tmp_path):
    """A fresh copy: syncing marks runs."""
    import shutil

    return shutil.copytree(offline_sweep, tmp_path / "sweep")


def test_sync_uploads_every_offline_run_from_its_folder_and_resumes(sweep, monkeypatch, capsys):
    server = FakeWandbServer()
    server.down = True
    monkeypatch.setattr(analysis.sync, "wandb_sync", server.wandb_sync)
    assert main([str(sweep), "--sync"]) == 1
    out = capsys.readouterr().out
    # three folders failing in a row: the cause is not theirs, the rest is not tried
    assert ("4 offline runs, 0 uploaded now, 0 earlier, 3 failed, 1 not tried (stopped after 3 "
            "failures in a row)") in out  # fmt: skip
    assert "network is unreachable" in out and "run the same command again" in out
    # one `wandb sync` per folder, in that folder, on its run folders
    assert [cwd.relative_to(sweep).as_posix() for _, cwd in server.syncs] == [
        "a/lam1.0_seed0", "a/lam2.0_seed0", "b/lam1.0_seed0"]  # fmt: skip
    for paths, cwd in server.syncs:
        (path,) = paths
        assert path.startswith("wandb/offline-run-") and (cwd / path).is_dir()

    # the network is back for two folders' worth, then fails again
    server.down, server.syncs = False, []
    real = server.wandb_sync

    def flaky(paths, cwd):
        server.down = len(server.syncs) >= 2
        return real(paths, cwd)

    monkeypatch.setattr(analysis.sync, "wandb_sync", flaky)
    res = sync_sweep(sweep, flaky)
    assert len(res.synced) == 2 and len(res.failed) == 2 and not res.ok
    progress = json.loads((sweep / layout.WANDB_SYNC).read_text())
    assert sorted(progress["synced"]) == sorted(res.synced)

    # the next sync uploads only what is left
    server.down, server.syncs = False, []
    monkeypatch.setattr(analysis.sync, "wandb_sync", server.wandb_sync)
    assert main([str(sweep), "--sync"]) == 0
    assert "4 offline runs, 2 uploaded now, 2 earlier, 0 failed" in capsys.readouterr().out
    assert len(server.syncs) == 2
    assert {r.group for r in server.runs} == {GROUP}
    assert sorted(r.job_type for r in server.runs) == ["analysis", "train", "train", "train"]
    assert main([str(sweep), "--sync"]) == 0  # nothing left: nothing run
    assert len(server.syncs) == 2


def test_wandb_sync_takes_the_run_folders_it_is_given(sweep):
    """W&B's own command, run as the sync runs it (in the job folder, on the relative run
    folder), finds the run; a dry run sends nothing."""
    job = sweep / "a" / "lam1.0_seed0"
    (run,) = [p.relative_to(job).as_posix() for p in job.glob("wandb/offline-run-*")]
    out = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", run], cwd=job,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Would sync 1 run(s)" in out.stdout + out.stderr


def test_sync_needs_a_sweep_folder(tmp_path, capsys):
    assert main(["--wandb", "e/p", "--sync"]) == 2
    assert "--sync needs the SWEEP_DIR" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), "--sync"]) == 2


def test_a_sweep_without_offline_runs_says_there_is_nothing_to_upload(tmp_path, capsys):
    (tmp_path / "job").mkdir()  # a job run with logger=disabled: no wandb/ folder
    assert main([str(tmp_path), "--sync"]) == 0
    assert "Nothing to upload" in capsys.readouterr().out


def test_a_moved_sweep_uploads_its_jobs_sae_artifacts_through_wandb_sync(tmp_path, monkeypatch):
    """The real `wandb sync` (wandb-core) run as the sync runs it, against a W&B server on a
    local port: the run lands in the instance's group and every file of the SAE artifact is
    uploaded from the job folder, after the sweep folder was moved."""
    import wandb
    from conftest import small_config

    from sae_sweep.config.schema import LoggerMode
    from sae_sweep.job import run_job

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = small_config(train__steps=10, variant="gated_original")
    cfg.logger.mode, cfg.logger.group = LoggerMode.offline, GROUP
    run_job(cfg, tmp_path / "here" / "s" / "job")
    wandb.teardown()
    moved = tmp_path / "elsewhere" / "s"
    moved.parent.mkdir()
    (tmp_path / "here" / "s").rename(moved)

    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    with WandbHTTPServer() as server:
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        res = sync_sweep(moved)
        assert res.ok and len(res.synced) == 1, res.describe()
        (upsert, *_) = server.named("UpsertBucket")
        assert upsert["groupName"] == GROUP
        assert upsert["displayName"] == "gated_original coef=3 seed0"
        saelens = moved / "job" / "saelens"
        assert {name: server.uploads.get(name) for name in ("cfg.json", "sae_weights.safetensors",
                                                             "sparsity.safetensors")} == {
            p.name: p.stat().st_size for p in saelens.iterdir()}  # fmt: skip
        assert len(server.named("CommitArtifact")) == 1
        # synced once: a second sync sends nothing
        sent = len(server.operations)
        again = sync_sweep(moved)
        assert again.ok and again.earlier == res.synced and not again.synced
        assert len(server.operations) == sent
