"""`sae-sweep-status` on a sweep folder whose records the test writes itself."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from sae_sweep.record.progress import PROGRESS_FILE, Progress
from sae_sweep.sweep.bookkeeping.status import main, sweep_status


def _json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _progress(job_dir: Path, done: int, *, now: float, age_s: float, l0=None, fvu=None, **extra):
    """A running job's progress.json, as its JobProgress writes it, last updated age_s ago."""
    p = Progress(job_dir.name, total=400, unit="step", path=None, scale=128, scaled="tokens")
    p.update(done, {"metrics": "train", "l0": l0, "fvu": fvu})
    snap = {**p.snapshot(), "eta_s": 60.0, "updated_unix": now - age_s, **extra}
    _json(job_dir / PROGRESS_FILE, snap)


@pytest.fixture
def sweep(tmp_path) -> tuple[Path, float]:
    """(sweep folder, the time its records were written): 7 jobs launched, 2 done, 1 failed,
    1 running, 1 stale (killed), 2 not started."""
    now = time.time()
    d = tmp_path / "sweep"
    _json(d / "sweep.json", {"name": "quick", "n_jobs": 7, "started": "2024-06-01T12:00:00"})
    for i, (lam, l0, fvu) in enumerate([("0.5", 150.9, 0.0062), ("1.0", 123.2, 0.0028)]):
        job = d / f"gated_original/lam{lam}_seed0"
        _json(job / "job.json", {"job": i, "outcome": "done", "started": now - 500 + 50 * i,
                                 "wall_s": 100.0})  # fmt: skip
        _json(job / "summary.json", {"status": "done", "steps": 400, "l0": l0, "fvu": fvu,
                                     "wall_s": 95.0})  # fmt: skip
        (job / ".hydra").mkdir()
        (job / ".hydra" / "config.yaml").write_text("{}")
    failed = d / "gated_original/lam2.0_seed0"
    _json(failed / "job.json", {"job": 2, "outcome": "failed", "started": now - 300,
                                "wall_s": 20.0})  # fmt: skip
    _json(failed / "summary.json", {
        "status": "failed", "error": "TrainingDivergedError: the loss became non-finite\n...",
        "traceback": "Traceback ...",
    })  # fmt: skip
    running = d / "gated_original/lam4.0_seed0"
    _json(running / "job.json", {"job": 3, "outcome": "running", "started": now - 40})
    _progress(running, 100, now=now, age_s=5.0, l0=31.5, fvu=0.12)
    stale = d / "gated_dn_frozen_live/lam0.5_seed0"
    _json(stale / "job.json", {"job": 4, "outcome": "running", "started": now - 3000})
    _progress(stale, 250, now=now, age_s=1800.0, l0=40.0, fvu=0.2, host="node7", pid=4242)
    return d, now


def test_status_table_and_counts(sweep):
    sweep, now = sweep
    status = sweep_status(sweep, stale_after_s=600, now=now)
    assert status["counts"] == {"done": 2, "running": 1, "stale": 1, "stopped": 0, "failed": 1,
                                "interrupted": 0, "unreadable": 0, "conflict": 0,
                                "not started": 2}  # fmt: skip
    rows = {r["dir"]: r for r in status["jobs"]}
    assert len(rows) == 5  # Hydra's .hydra folders are not jobs
    done = rows["gated_original/lam0.5_seed0"]
    assert (done["state"], done["step"], done["l0"], done["fvu"]) == ("done", 400, 150.9, 0.0062)
    failed = rows["gated_original/lam2.0_seed0"]
    assert failed["state"] == "failed"
    assert failed["note"] == "TrainingDivergedError: the loss became non-finite"
    running = rows["gated_original/lam4.0_seed0"]
    assert (running["state"], running["step"], running["steps"]) == ("running", 100, 400)
    assert running["l0"] == 31.5 and running["eta_s"] == pytest.approx(55.0)  # 60 s, 5 s ago
    stale = rows["gated_dn_frozen_live/lam0.5_seed0"]
    assert stale["state"] == "stale" and stale["eta_s"] is None
    assert "node7:4242" in stale["note"] and "30:00" in stale["note"]
    # Left: the running job's 55 s, and 2 jobs of 100 s (the finished ones' median), at the
    # parallelism the finished jobs showed (the two done jobs overlapped: 2 at once).
    assert status["eta_s"] == pytest.approx((55 + 2 * 100) / 2)

    # A longer tolerance: the killed job counts as running again.
    relaxed = sweep_status(sweep, stale_after_s=3600, now=now)["counts"]
    assert relaxed["running"] == 2 and relaxed["stale"] == 0


def test_status_command_prints_the_table(sweep, capsys):
    sweep, _ = sweep  # written just now: the running job is fresh (5 s), the killed one not
    assert main([str(sweep), "--stale-after", "600"]) == 0
    out = capsys.readouterr().out
    assert "sweep quick:" in out
    assert "7 jobs: 2 done, 1 running, 1 stale, 1 failed, 2 not started; about" in out
    lines = {line.split()[1]: line for line in out.splitlines()[3:]}
    assert lines["gated_original/lam4.0_seed0"].split()[2:4] == ["running", "100/400"]
    assert "TrainingDivergedError: the loss became" in lines["gated_original/lam2.0_seed0"]
    assert "re-run the sweep to resume" in lines["gated_dn_frozen_live/lam0.5_seed0"]

    assert main([str(sweep), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["failed"] == 1


def test_watch_stops_when_no_job_is_left(sweep, capsys):
    sweep, _ = sweep
    for job in ("gated_original/lam4.0_seed0", "gated_dn_frozen_live/lam0.5_seed0"):
        _json(sweep / job / "summary.json", {"status": "done", "steps": 400})
    _json(sweep / "sweep.json", {"name": "quick", "n_jobs": 5})
    assert main([str(sweep), "--watch", "0.01"]) == 0  # returns: nothing left to watch
    assert "5 jobs: 4 done, 1 failed; finished" in capsys.readouterr().out


def test_a_folder_without_a_sweep_is_an_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "holds no sweep" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2
