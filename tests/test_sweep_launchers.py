"""Real multiruns of a tiny sweep into tmp_path with each launcher: every job's record,
the sweep manifest and end table, contained failures and re-runs (GPU claims: test_gpus.py)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from sae_sweep.record import layout
from sae_sweep.sweep.bookkeeping.status import sweep_status
from sae_sweep.sweep.running.threads import machine_cores
from tests.sweep_fixtures import (
    assert_complete_record,
    jobs,
    run_sweep,
    run_sweep_in_process,
    summary,
)

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
    # the sweep instance is the W&B group of every job (a second run of `quick` gets its own)
    assert manifest["id"].startswith("quick-")
    for folder in FOLDERS:
        assert layout.read_config(sweep_dir / folder)["logger"]["group"] == manifest["id"]
    return manifest


def test_basic_launcher_then_a_rerun_skips_every_finished_job(tmp_path, monkeypatch, capfd):
    d = tmp_path / "sweep"
    r = run_sweep_in_process(monkeypatch, capfd, d, *GRID, cwd=tmp_path)
    assert r.returncode == 0, r.stdout
    first = _check_sweep(d, r.stdout, n_done=4)

    # the same command into the same folder: the same sweep instance
    r = run_sweep_in_process(monkeypatch, capfd, d, *GRID, cwd=tmp_path)
    assert r.returncode == 0, r.stdout
    assert _check_sweep(d, r.stdout, n_done=0)["id"] == first["id"]
    assert {j["action"] for j in jobs(d).values()} == {"skip_done"}
    assert len(json.loads((d / "sweep.json").read_text())["launches"]) == 2


def test_joblib_launcher_packed_and_not_with_each_job_its_share_of_the_cores(tmp_path):
    """n_jobs=1: one job at a time, each on every core; n_jobs=2 with pack=2: two packs of two
    SAEs at once, each on half the cores, ending with the same records."""
    cores = machine_cores()
    alone, packed = tmp_path / "alone", tmp_path / "packed"
    # threads=0: the budget under test, not the one thread of the other tiny sweeps
    r = run_sweep(alone, *GRID, "threads=0", "hydra.launcher.n_jobs=1", launcher="joblib",
                  cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout
    _check_sweep(alone, r.stdout, n_done=4)
    assert {j["threads"] for j in jobs(alone).values()} == {cores}
    assert {summary(alone / f)["threads"] for f in FOLDERS} == {cores}

    r = run_sweep(packed, *GRID, "threads=0", "hydra.launcher.n_jobs=2", "pack=2",
                  launcher="joblib", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout
    _check_sweep(packed, r.stdout, n_done=4)
    records = jobs(packed)
    assert {j["threads"] for j in records.values()} == {max(cores // 2, 1)}
    assert len({j["pid"] for j in records.values()}) == 2  # two packed jobs, in two workers
    assert sorted(j["job"] for j in records.values()) == [0, 1, 2, 3]  # grid numbers
    assert len(list((packed / "packs").rglob("*.json"))) == 2
    for folder in FOLDERS:
        a, b = summary(alone / folder), summary(packed / folder)
        assert (a["l0"], a["fvu"], a["mse"]) == (b["l0"], b["fvu"], b["mse"]), folder
        wa, wb = (load_file(str(d / folder / "sae.safetensors")) for d in (alone, packed))
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-6, atol=1e-7)
    assert not {"pack", "threads", "rerun_failed"} & set(summary(packed / folder)["knobs"])


def test_submitit_local_launcher_without_cuda_claims_no_gpu(tmp_path):
    """GPUs listed but no CUDA (submitit_local also rewrites CUDA_VISIBLE_DEVICES): the jobs
    train on the CPU at once, none waits on a GPU lock (tests/test_gpus.py: the claiming)."""
    d = tmp_path / "sweep"
    r = run_sweep(
        d, *GRID, "device=auto", launcher="submitit_local", cwd=tmp_path,
        extra_env={"CUDA_VISIBLE_DEVICES": "4,5,6", "SAE_SWEEP_GPU_LOCKS": str(tmp_path)},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout
    _check_sweep(d, r.stdout, n_done=4)
    assert all("gpu" not in record for record in jobs(d).values())
    assert {summary(d / folder)["device"] for folder in FOLDERS} == {"cpu"}
    assert not list(tmp_path.glob("gpu-*.lock"))


def test_a_failing_job_is_contained_recorded_and_rerun_only_when_asked(tmp_path, monkeypatch,
                                                                       capfd):  # fmt: skip
    d = tmp_path / "sweep"
    grid = ["variant=gated_dn_trainable_live", "lambda_multiplier=1", "train.grad_clip=null",
            "train.lr=0.003,1e30", "hydra.sweep.subdir=lr${train.lr}"]  # fmt: skip
    r = run_sweep_in_process(monkeypatch, capfd, d, *grid, cwd=tmp_path)
    # the sweep runs every job, then reports the failure in its exit status and last line
    assert r.returncode == 1, r.stdout
    assert "sweep incomplete (1 failed of 2 jobs" in r.stdout.strip().splitlines()[-1]
    assert_complete_record(d / "lr0.003")
    failed = summary(d / "lr1e+30")
    assert failed["status"] == "failed" and "TrainingDivergedError" in failed["error"]
    assert "Traceback" in failed["traceback"] and "loop.py" in failed["traceback"]
    assert "2 jobs: 1 done, 1 failed, 0 skipped" in r.stdout
    assert "| failed | new | failed |" in (d / "jobs.md").read_text()
    assert "rerun_failed=true" in r.stdout
    rows = {r["dir"]: r for r in sweep_status(d)["jobs"]}
    assert rows["lr0.003"]["state"] == "done" and rows["lr1e+30"]["state"] == "failed"
    assert rows["lr1e+30"]["note"].startswith("TrainingDivergedError: the loss became")

    r = run_sweep_in_process(monkeypatch, capfd, d, *grid, cwd=tmp_path)
    assert "2 jobs: 0 done, 0 failed, 2 skipped" in r.stdout  # failures are not retried...
    r = run_sweep_in_process(monkeypatch, capfd, d, *grid, "rerun_failed=true", cwd=tmp_path)
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
def test_a_single_run_that_fails_exits_non_zero(tmp_path, overrides, message, monkeypatch,
                                                capfd):  # fmt: skip
    from tests.sweep_fixtures import TINY, run_cli_in_process

    code, out = run_cli_in_process(monkeypatch, capfd, *TINY[:-1], *overrides,
                                   f"hydra.run.dir={tmp_path}/run")  # fmt: skip
    assert code != 0
    assert message in out


def test_lambda_calibration_on_a_real_calibration_sweep(tmp_path, monkeypatch, capfd):
    """`+sweep=calibrate` (here 2 variants x 4 lambdas, packed into one job), then
    `python -m sae_sweep.sweep.calibrate <dir>`: a scale and exponent per variant that put
    the measured lambdas of the target L0 range at the ends of the multiplier grid."""
    from sae_sweep.sweep import calibrate

    d = tmp_path / "calibrate"
    r = run_sweep_in_process(monkeypatch, capfd, d, "variant=gated_original,standard_dn",
                             "lambda_multiplier=0.1,0.4,1.6,6.4", "train.steps=60", "pack=8",
                             sweep="calibrate", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout
    assert "8 jobs: 8 done" in r.stdout
    points = calibrate.load_points(d)
    assert sorted(points) == ["gated_original", "standard_dn"]
    for pts in points.values():
        assert len(pts) == 4
        assert pts[0][1] > pts[-1][1]  # L0 falls as lambda grows
        # an L0 range inside the measured one: its high end is reached at the smallest lambda
        low_l0, high_l0 = sorted((pts[-1][1] * 1.1, pts[0][1] / 1.1))
        fit = calibrate.fit(pts, (low_l0, high_l0), (0.5, 4.0))
        assert fit["covers_range"] and fit["lambda_exponent"] > 0
        for l0, m in ((high_l0, 0.5), (low_l0, 4.0)):
            lam, inside = calibrate.lambda_at_l0(pts, l0)
            assert inside and fit["lambda_scale"] * m ** fit["lambda_exponent"] == pytest.approx(
                lam
            )
    calibrate.main([str(d), "--l0", "2", "20"])
    out = capfd.readouterr().out
    assert out.count("lambda_scale:") == 2 and "measured (lambda, L0)" in out


def test_a_bad_override_in_any_job_fails_the_sweep_before_a_job_runs(tmp_path, monkeypatch,
                                                                      capfd):  # fmt: skip
    # Only the jobs that hold every override value are composed up front (covering_jobs);
    # the bad value sits in the grid's second job, not its first.
    from tests.sweep_fixtures import TINY, run_cli_in_process

    d = tmp_path / "sweep"
    code, out = run_cli_in_process(monkeypatch, capfd, *TINY, "hydra.mode=MULTIRUN",
                                   "seed=0,1", "train.steps=20,twenty",
                                   f"hydra.sweep.dir={d}")  # fmt: skip
    assert code != 0
    assert "twenty" in out
    assert not list(d.glob("**/summary.json")) and not list(d.glob("**/job.json"))


def test_the_covering_jobs_hold_every_override_of_a_grid():
    from sae_sweep.sweep.planning.grid import covering_jobs

    grid = [[f"variant={v}", f"lambda_multiplier={m}", f"seed={s}"]
            for v in "abcd" for m in (1, 2, 4) for s in (0, 1, 2)]  # fmt: skip
    chosen = covering_jobs(grid)
    assert chosen == [0, 9, 18, 27]  # of 36: one per variant; integers of a key compose alike
    # A target-L0 round: a lambda of its own per job, seeds, one variant -> one job composed.
    lambdas = [["variant=a", f"lambda_multiplier={m}", f"seed={s}"]
               for m in (1.37, 2.9, 5.13) for s in (0, 1, 2)]  # fmt: skip
    assert covering_jobs(lambdas) == [0]
    # A value of another kind for the same key is composed: a string, or a real for an int.
    mixed = [["train.steps=20", "seed=0"], ["train.steps=30", "seed=1"],
             ["train.steps=2.5", "seed=0"], ["train.steps=twenty", "seed=0"]]  # fmt: skip
    assert covering_jobs(mixed) == [0, 2, 3]
