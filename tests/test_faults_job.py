"""Fault injection, the job's side: a run folder belongs to one configuration, checkpoints
prove their consistency, signals end a job with a resumable record, memory is checked
before it runs out, and inputs that cannot give the intended run are refused.

The launcher's side (sweep locks, workers killed under a sweep, records read defensively)
is in test_faults_sweep.py; the original fault cases in test_faults.py. Jobs are tiny
(d=16, tens of steps); a real process and a real signal are used wherever the behaviour
depends on them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import killed_after_checkpoint, small_config

from sae_sweep.job import run_job
from sae_sweep.record.config_match import ConfigMismatchError
from sae_sweep.training.checkpoint import DAMAGED_SUFFIX, CheckpointError

try:
    from sweep_fixtures import env
except ImportError:  # run from the repository root as a package
    from tests.sweep_fixtures import env

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def summary(job_dir: Path) -> dict:
    return json.loads((Path(job_dir) / "summary.json").read_text())


def job_process(code: str, *args: str) -> subprocess.Popen:
    """A Python process running `code` (with `small_config` and `run_job` imported and
    `sys.argv[1:]` = args); its output goes to a pipe."""
    prelude = "import sys\nfrom conftest import small_config\nfrom sae_sweep.job import run_job\n"
    return subprocess.Popen(
        [sys.executable, "-c", prelude + textwrap.dedent(code), *map(str, args)],
        cwd=TESTS, env=env(PYTHONPATH=f"{TESTS}{os.pathsep}{REPO}"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until `path` exists (the process reached the point under test)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the process ended ({proc.returncode}) first:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


# -- a run folder belongs to one configuration (defect 1) --------------------------------


def test_single_run_refuses_a_folder_made_with_other_knobs(tmp_path):
    """The second run would continue the first's checkpoint and claim its own knobs for the
    result: it is refused, naming the knobs, and the first run's record stays as it was."""
    first = run_job(small_config(train__steps=30), tmp_path)
    config_before = (tmp_path / "config.yaml").read_text()
    other = small_config(train__steps=60, penalty__coefficient=50.0)
    with pytest.raises(ConfigMismatchError) as refused:
        run_job(other, tmp_path)
    message = str(refused.value)
    assert "penalty.coefficient: 3.0 recorded, 50.0 now" in message
    assert "train.steps: 30 recorded, 60 now" in message
    assert "hydra.run.dir" in message and "restart=true" in message
    assert summary(tmp_path) == first and (tmp_path / "config.yaml").read_text() == config_before
    # the same knobs (logging and device aside) still resume their own folder
    assert run_job(small_config(train__steps=30), tmp_path)["resumed_from_step"] == 30


def test_single_run_command_refuses_other_knobs_and_restarts_when_told(tmp_path):
    def sae_sweep(*overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sae_sweep", f"hydra.run.dir={tmp_path}", "logger=disabled",
             "train.steps=20", "train.batch_size=64", "data.d=16", "data.n_features=32",
             "data.n_eval=256", "train.eval_batch_size=256", "train.norm_estimate_batches=2",
             "sae.expansion_factor=2", *overrides],
            cwd=tmp_path, env=env(PYTHONPATH=str(REPO)), capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip

    run_job(small_config(penalty__coefficient=3.0), tmp_path)
    refused = sae_sweep("penalty.coefficient=50")
    assert refused.returncode != 0
    assert "penalty.coefficient: 3.0 recorded, 50.0 now" in refused.stderr
    assert "restart=true" in refused.stderr
    assert summary(tmp_path)["knobs"]["penalty.coefficient"] == 3.0

    restarted = sae_sweep("penalty.coefficient=50", "restart=true")
    assert restarted.returncode == 0, restarted.stderr
    s = summary(tmp_path)
    assert s["status"] == "done" and s["resumed_from_step"] == 0 and s["steps"] == 20
    assert s["knobs"]["penalty.coefficient"] == 50


# -- checkpoints prove their consistency (defects 2 and 8) -------------------------------


def test_checkpoint_whose_state_and_meta_differ_in_step_is_damaged(tmp_path, monkeypatch):
    """meta.json of step 30 beside the state of step 60 (a write killed between the two
    files): never resumed as if it were step 30's, but named and kept aside."""
    killed_after_checkpoint(monkeypatch, lambda: run_job(small_config(), tmp_path))
    meta_30 = (tmp_path / "checkpoint" / "meta.json").read_text()
    run_job(small_config(), tmp_path)  # resumes, and checkpoints step 60
    (tmp_path / "checkpoint" / "meta.json").write_text(meta_30)
    (tmp_path / "summary.json").unlink()

    with pytest.raises(CheckpointError, match="after step 60 but meta.json names step 30"):
        run_job(small_config(), tmp_path)
    assert summary(tmp_path)["status"] == "failed"
    (kept,) = tmp_path.glob(f"checkpoint{DAMAGED_SUFFIX}*")
    assert (kept / "state.safetensors").is_file() and not (tmp_path / "checkpoint").exists()
    assert run_job(small_config(), tmp_path)["resumed_from_step"] == 0


def test_truncated_checkpoint_state_is_damaged(tmp_path, monkeypatch):
    """A state file cut short (here by a byte at its end: safetensors would read it) differs
    from its manifest's size."""
    killed_after_checkpoint(monkeypatch, lambda: run_job(small_config(), tmp_path))
    state = tmp_path / "checkpoint" / "state.safetensors"
    state.write_bytes(state.read_bytes() + b" ")
    with pytest.raises(CheckpointError, match="state.safetensors holds .* bytes, its manifest"):
        run_job(small_config(), tmp_path)


def test_temporary_files_of_a_killed_checkpoint_write_are_removed_next_start(tmp_path):
    """A job killed (SIGKILL) in the middle of writing its checkpoint leaves the temp file;
    the next start removes it and trains on."""
    marker = tmp_path / "writing"
    proc = job_process(
        """
        from pathlib import Path
        import time
        import sae_sweep.training.checkpoint as checkpoint
        def slow_save(tensors, path, metadata=None):
            Path(path).write_bytes(b"x" * 100_000)  # half-written
            Path(sys.argv[2]).touch()
            time.sleep(600)
        checkpoint.save_file = slow_save
        run_job(small_config(), Path(sys.argv[1]))
        """,
        tmp_path / "run", marker,
    )  # fmt: skip
    wait_for(marker, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = tmp_path / "run" / "checkpoint"
    assert [p.name for p in ckpt.iterdir() if p.name.endswith(".tmp")], "no temp file to clean"

    assert run_job(small_config(), tmp_path / "run")["status"] == "done"
    assert not [p.name for p in ckpt.iterdir() if p.name.endswith(".tmp")]
