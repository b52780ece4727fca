"""Real multiruns of a tiny sweep into tmp_path with each launcher: every job's record,
the sweep manifest and end table, contained failures, re-runs, and one GPU per job."""

import json

import pytest

from tests.sweep_fixtures import assert_complete_record, jobs, run_sweep, summary

GRID = ["variant=gated_original,gated_dn_trainable_live", "lambda_multiplier=1,2"]
FOLDERS = {f"{v}/lam{m}_seed0" for v in ("gated_original", "gated_dn_trainable_live")
           for m in ("1.0", "2.0")}  # fmt: skip


def _check_sweep(sweep_dir, out, n_done):
    assert set(jobs(sweep_dir)) == FOLDERS
    for folder in FOLDERS:
        assert_complete_record(sweep_dir / folder)
        assert summary(sweep_dir / folder)["sweep"] == "quick"
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    assert manifest["name"] == "quick" and manifest["n_jobs"] == 4
    assert manifest["grid"]["variant"] == ["gated_original", "gated_dn_trainable_live"]
    assert manifest["git_commit"] and manifest["started"] and manifest["ended"]
    assert f"4 jobs: {n_done} done, 0 failed, {4 - n_done} skipped" in out
    assert (sweep_dir / "jobs.md").read_text().startswith("4 jobs:")


def test_basic_launcher_then_a_rerun_skips_every_finished_job(tmp_path):
    d = tmp_path / "sweep"
    r = run_sweep(d, *GRID, cwd=tmp_path)
    assert r.returncode == 0, r.stdout
    _check_sweep(d, r.stdout, n_done=4)

    r = run_sweep(d, *GRID, cwd=tmp_path)  # the same command into the same folder
    assert r.returncode == 0, r.stdout
    _check_sweep(d, r.stdout, n_done=0)
    assert {j["action"] for j in jobs(d).values()} == {"skip_done"}
    assert len(json.loads((d / "sweep.json").read_text())["launches"]) == 2


def test_joblib_launcher(tmp_path):
    d = tmp_path / "sweep"
    r = run_sweep(d, *GRID, "hydra.launcher.n_jobs=2", launcher="joblib", cwd=tmp_path)
    assert r.returncode == 0, r.stdout
    _check_sweep(d, r.stdout, n_done=4)
    assert len({j["pid"] for j in jobs(d).values()}) >= 2  # ran in worker processes


def test_submitit_local_launcher_spreads_jobs_over_gpus(tmp_path):
    """Three fake GPUs: submitit_local alone would give every job CUDA_VISIBLE_DEVICES=""."""
    d = tmp_path / "sweep"
    r = run_sweep(
        d, *GRID, "device=auto", launcher="submitit_local", cwd=tmp_path,
        extra_env={"CUDA_VISIBLE_DEVICES": "4,5,6"},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout
    _check_sweep(d, r.stdout, n_done=4)
    for record in jobs(d).values():
        i = record["job"]
        k = i % 3
        want = {"gpu": str(4 + k), "index": k, "device": f"cuda:{k}"}
        assert record["gpu"] == {**want, "cuda_visible_devices": "4,5,6"}
    assert sorted(j["job"] for j in jobs(d).values()) == [0, 1, 2, 3]


def test_a_failing_job_is_contained_recorded_and_rerun_only_when_asked(tmp_path):
    d = tmp_path / "sweep"
    grid = ["variant=gated_dn_trainable_live", "lambda_multiplier=1", "train.grad_clip=null",
            "train.lr=0.003,1e30", "hydra.sweep.subdir=lr${train.lr}"]  # fmt: skip
    r = run_sweep(d, *grid, cwd=tmp_path)
    assert r.returncode == 0, r.stdout  # the sweep itself completes
    assert_complete_record(d / "lr0.003")
    failed = summary(d / "lr1e+30")
    assert failed["status"] == "failed" and "TrainingDivergedError" in failed["error"]
    assert "Traceback" in failed["traceback"] and "loop.py" in failed["traceback"]
    assert "2 jobs: 1 done, 1 failed, 0 skipped" in r.stdout
    assert "| failed | new | failed |" in (d / "jobs.md").read_text()
    assert "rerun_failed=true" in r.stdout

    r = run_sweep(d, *grid, cwd=tmp_path)
    assert "2 jobs: 0 done, 0 failed, 2 skipped" in r.stdout  # failures are not retried...
    r = run_sweep(d, *grid, "rerun_failed=true", cwd=tmp_path)
    assert "2 jobs: 0 done, 1 failed, 1 skipped" in r.stdout  # ...unless asked
    assert jobs(d)["lr1e+30"]["action"] == "rerun"
    assert jobs(d)["lr0.003"]["action"] == "skip_done"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.lr=1e30", "train.grad_clip=null"], "TrainingDivergedError"),
        (["penalty=l1", "penalty.decoder_norm_grad=live"], "has no effect"),
    ],
)
def test_a_single_run_that_fails_exits_non_zero(tmp_path, overrides, message):
    import subprocess
    import sys

    from tests.sweep_fixtures import TINY, env

    cmd = [sys.executable, "-m", "sae_sweep", *TINY[:-1], *overrides,
           f"hydra.run.dir={tmp_path}/run"]  # fmt: skip
    r = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert message in r.stderr + r.stdout
