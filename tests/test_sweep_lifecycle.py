"""A sweep's lifecycle (sweep/lifecycle.py) in this process, with a fake launcher: start,
batches, the end whatever the launcher does, the exit status. No training."""

from __future__ import annotations

import json
import os

import pytest
from omegaconf import OmegaConf

from sae_sweep.record import layout
from sae_sweep.sweep import lifecycle
from sae_sweep.sweep.lifecycle import Sweep
from sae_sweep.sweep.running.task import ENV_LAUNCH_ID


class Loader:
    """Composes every job alike: Sweep.launch only needs its folder name and `pack`."""

    def load_sweep_config(self, master, overrides):
        return OmegaConf.create({"hydra": {"sweep": {"subdir": "job"}, "job": {"num": 0}},
                                 "pack": 1})  # fmt: skip


class Launcher:
    """Records each launch; each job leaves the job.json a finished sweep job leaves, or the
    launch raises `fail_with` once `fail_at` jobs were launched (a launcher's failure, Ctrl-C)."""

    def __init__(self, sweep_dir, fail_at=None, fail_with=KeyboardInterrupt):
        self.sweep_dir, self.fail_at, self.fail_with = sweep_dir, fail_at, fail_with
        self.calls = []

    def launch(self, jobs, initial_job_idx):
        self.calls.append((len(jobs), initial_job_idx))
        if self.fail_at is not None and initial_job_idx >= self.fail_at:
            raise self.fail_with()
        for n in range(initial_job_idx, initial_job_idx + len(jobs)):
            record = {"job": n, "dir": f"j{n}", "outcome": "done", "status": "done",
                      "launch_id": os.environ[ENV_LAUNCH_ID]}  # fmt: skip
            (self.sweep_dir / f"j{n}").mkdir(parents=True)
            (self.sweep_dir / f"j{n}" / layout.JOB).write_text(json.dumps(record))
        return []


def _sweep(tmp_path, launcher, **options):
    config = OmegaConf.create({
        "sweep": "unit", "l0_targets": [],
        "hydra": {"sweep": {"dir": str(tmp_path)}, "launcher": {"_target_": "basic"},
                  "overrides": {"task": ["seed=0,1", "lambda_multiplier=1,2"]}},
    })  # fmt: skip
    return Sweep(config, launcher, Loader(), analysis=False, **options)


pytestmark = pytest.mark.usefixtures("sweep_env")


def test_a_grid_in_batches_ends_with_its_table_and_a_clean_exit(tmp_path, capsys):
    launcher = Launcher(tmp_path)
    _sweep(tmp_path, launcher, max_batch_size=3).run(["seed=0,1", "lambda_multiplier=1,2"])
    assert launcher.calls == [(3, 0), (1, 3)]  # job numbers continue across batches
    manifest = json.loads((tmp_path / layout.MANIFEST).read_text())
    assert manifest["n_jobs"] == 4 and manifest["grid"] == {
        "seed": ["0", "1"],
        "lambda_multiplier": ["1", "2"],
    }
    assert manifest["launches"][0]["jobs"] == {"done": 4, "failed": 0, "skipped": 0}
    assert (tmp_path / layout.TABLE_MD).read_text().startswith("4 jobs: 4 done")
    assert capsys.readouterr().out.rstrip().endswith("sweep complete: all 4 jobs have a result")
    assert lifecycle.take_exit_code() == 0


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_a_launch_cut_short_still_ends_the_sweep_and_exits_non_zero(tmp_path, capsys, error):
    """Hydra skips its end-of-multirun callbacks when the launcher raises: the sweep ends
    itself, so the records say what ran and the exit status says that some job did not."""
    launcher = Launcher(tmp_path, fail_at=2, fail_with=error)
    with pytest.raises(error):
        _sweep(tmp_path, launcher, max_batch_size=2).run(["seed=0,1", "lambda_multiplier=1,2"])
    out = capsys.readouterr().out
    assert "sweep incomplete (2 never reported of 4 jobs; exit status 1)" in out
    manifest = json.loads((tmp_path / layout.MANIFEST).read_text())
    assert manifest["ended"] and manifest["launches"][0]["jobs"]["done"] == 2
    assert lifecycle.take_exit_code() == 1
    assert lifecycle.take_exit_code() == 0  # taken once: a later run in this process is clean


def test_a_grid_its_rounds_cannot_refine_fails_before_the_sweep_starts(tmp_path):
    config = OmegaConf.create({
        "sweep": "unit", "l0_targets": [8], "l0_tolerance": 0.1, "l0_max_rounds": 2,
        "hydra": {"sweep": {"dir": str(tmp_path / "s"), "subdir": "${seed}"},
                  "launcher": {"_target_": "basic"}, "overrides": {"task": []}},
    })  # fmt: skip
    launcher = Launcher(tmp_path)
    sweep = Sweep(config, launcher, Loader(), analysis=False)
    with pytest.raises(ValueError, match="lambda_multiplier=1 penalty.coefficient="):
        sweep.run(["lambda_multiplier=1,2", "penalty.coefficient=0.1"])
    assert launcher.calls == [] and not (tmp_path / "s").exists()
    assert lifecycle.take_exit_code() == 0
