"""`bench/gpu_check.sh --dry-run`: every step of the GPU check is wired (its scripts and
options exist and run at toy sizes on the CPU) and the summary lists each step."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("gpu_tests", "step_memory", "step_speed", "loader", "sweep", "sweep_status")


@pytest.mark.slow
def test_gpu_check_dry_run_passes_every_step(tmp_path):
    out = tmp_path / "check"
    run = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    summary = (out / "summary.md").read_text()
    assert run.returncode == 0, summary + run.stderr
    for step in STEPS:
        assert f"| {step} | passed |" in summary, step
        assert (out / "logs" / f"{step}.log").is_file()
    assert "tests collected" in (out / "logs" / "gpu_tests.log").read_text()
    assert (out / "sweep" / "jobs.json").is_file()


def test_gpu_check_refuses_an_unknown_argument(tmp_path):
    run = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-rnu"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2
    assert "unknown argument '--dry-rnu'" in run.stderr
