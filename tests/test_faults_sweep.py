"""Faults of a sweep's launcher and of the records it leaves: a worker killed by a signal, the
launcher told to stop, two launches into one folder, a launcher that died, and records with
a malformed field (issue 30, the launcher and records side; test_faults.py holds the job's).

Where the behaviour depends on processes and signals, real ones are used: a joblib sweep of
two tiny jobs whose worker gets a real SIGKILL, a launcher that gets a real SIGTERM, a lock
holder that is killed. The rest runs in this process on tiny records.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import small_config

from sae_sweep.job import run_job
from sae_sweep.record import layout
from sae_sweep.record.liveness import pid_alive
from sae_sweep.sweep.bookkeeping.lock import LaunchLock, launcher_alive
from sae_sweep.sweep.bookkeeping.status import main as status_main
from sae_sweep.sweep.bookkeeping.status import sweep_status

try:
    from sweep_fixtures import env, jobs, run_sweep_in_process, summary, sweep_cmd
except ImportError:  # run from the repository root as a package
    from tests.sweep_fixtures import env, jobs, run_sweep_in_process, summary, sweep_cmd

REPO = Path(__file__).resolve().parent.parent
# Two jobs of one variant, long enough to be killed mid-training, trained side by side.
TWO_JOBS = ["variant=gated_original", "lambda_multiplier=1.0", "seed=0,1",
            "hydra.launcher.n_jobs=2", "train.checkpoint_every=100"]  # fmt: skip
ONE_JOB = ["variant=gated_original", "lambda_multiplier=1.0", "train.steps=20"]


def _start(sweep_dir: Path, cwd: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        sweep_cmd(sweep_dir, *overrides, launcher="joblib"), cwd=cwd, env=env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def _training(sweep_dir: Path, proc: subprocess.Popen, n: int, timeout=240) -> list[dict]:
    """Wait until `n` jobs are training past their checkpoint at step 100 (progress.json, and
    the checkpoint's manifest: progress reaches step 100 before the checkpoint is written, and
    a job killed in between rightly resumes from step 0); their progress."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [layout.read_json(p) or {} for p in sorted(sweep_dir.rglob(layout.PROGRESS))]
        found = [p for p in found if p.get("state") == "running" and p.get("done", 0) >= 100
                 and _checkpoint_step(sweep_dir / str(p.get("label"))) >= 100]  # fmt: skip
        if len(found) >= n:
            return found
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no {n} jobs training after {timeout} s: {proc.communicate()[0][-3000:]}")


def _checkpoint_step(job_dir: Path) -> int:
    meta = layout.read_json(job_dir / layout.CHECKPOINT_DIR / layout.CHECKPOINT_META) or {}
    return int(meta.get("step") or 0)


# -- a worker killed by a signal (defect 3) ----------------------------------------------


def test_worker_killed_by_sigkill_fails_its_job_alone_and_the_other_finishes(tmp_path):
    """SIGKILL to one job's process, what the out-of-memory killer sends: loky breaks its
    pool (TerminatedWorkerError, which ended the whole sweep with no record); now that job
    fails, its record naming the signal, and the other, killed by loky, resumes and ends."""
    sweep_dir = tmp_path / "sweep"
    proc = _start(sweep_dir, tmp_path, *TWO_JOBS, "train.steps=600")
    victim = _training(sweep_dir, proc, n=1)[0]
    os.kill(victim["pid"], signal.SIGKILL)
    out = proc.communicate(timeout=300)[0]
    if proc.returncode == 0:
        # The watcher did not see the deaths in order (a loaded machine; worker_deaths.py):
        # which worker died first is unknown, so the jobs were launched again one at a time,
        # as documented, and both resumed from their checkpoints: nothing lost, none failed.
        assert "launching 1 job(s) of the batch again" in out, out[-3000:]
        rows = jobs(sweep_dir).values()
        assert [r["outcome"] for r in rows] == ["done", "done"], out[-3000:]
        # the killed job resumed from its checkpoint; the other may have been killed by loky
        # before its first one (it was still preparing): it started again from step 0
        assert summary(sweep_dir / victim["label"])["resumed_from_step"] > 0
        return
    assert proc.returncode == 1, out[-3000:]  # one job has no result
    records = {r["pid"] == victim["pid"]: r for r in jobs(sweep_dir).values()}
    assert set(records) == {True, False}, (victim, list(jobs(sweep_dir).values()), out[-3000:])
    killed, other = records[True], records[False]
    assert killed["outcome"] == "failed" and "killed by SIGKILL" in killed["error"]
    s = summary(sweep_dir / killed["dir"])
    assert s["status"] == "failed" and s["signal"] == signal.SIGKILL
    assert "out-of-memory" in s["error"] and "rerun_failed=true" in s["error"]
    assert other["outcome"] == "done", out[-3000:]
    assert summary(sweep_dir / other["dir"])["status"] == "done"
    assert "1 done, 1 failed" in (sweep_dir / layout.TABLE_MD).read_text()


@pytest.mark.slow
def test_worker_sent_sigterm_records_its_job_interrupted_and_the_other_finishes(tmp_path):
    """`kill -TERM` of one job's process, the issue's case: the job records `interrupted` at
    its step (a re-run resumes it) and the sweep goes on with the other job, which joblib's
    abort took down with it."""
    sweep_dir = tmp_path / "sweep"
    proc = _start(sweep_dir, tmp_path, *TWO_JOBS, "train.steps=600")
    victim = _training(sweep_dir, proc, n=1)[0]
    os.kill(victim["pid"], signal.SIGTERM)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, out[-3000:]
    records = {r["pid"] == victim["pid"]: r for r in jobs(sweep_dir).values()}
    stopped, other = records[True], records[False]
    assert stopped["outcome"] == "interrupted" and "SIGTERM" in stopped["error"], stopped
    assert summary(sweep_dir / stopped["dir"])["status"] == "interrupted"
    assert other["outcome"] == "done", out[-3000:]
    assert "1 done, 0 failed, 1 interrupted" in (sweep_dir / layout.TABLE_MD).read_text()


# -- the launcher told to stop (defect 5) -------------------------------------------------


def test_sigterm_to_the_launcher_stops_its_workers_and_writes_the_records(tmp_path):
    """SIGTERM to the launching process (a scheduler, `kill`): it used to exit 143 at once,
    its joblib workers training on under PID 1, with no jobs table and no end in sweep.json."""
    sweep_dir = tmp_path / "sweep"
    proc = _start(sweep_dir, tmp_path, *TWO_JOBS, "train.steps=6000")
    workers = [p["pid"] for p in _training(sweep_dir, proc, n=2)]
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    time.sleep(0.5)
    assert not [pid for pid in workers if pid_alive(pid)], "workers outlived their launcher"
    table = json.loads((sweep_dir / layout.TABLE_JSON).read_text())
    assert table["counts"]["interrupted"] == 2, table  # the next launch resumes them
    manifest = json.loads((sweep_dir / layout.MANIFEST).read_text())
    assert manifest["ended"] and manifest["launches"][-1]["ended"]
    assert "sweep stopped by SIGTERM" in out


def test_sigterm_during_the_analysis_exits_nonzero_with_the_records_written(
    tmp_path, monkeypatch, capfd
):
    import analysis

    def told_to_stop(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("SIGTERM did not stop the analysis")

    monkeypatch.setattr(analysis, "run_analysis", told_to_stop)
    handler = signal.getsignal(signal.SIGTERM)
    sweep_dir = tmp_path / "sweep"
    done = run_sweep_in_process(monkeypatch, capfd, sweep_dir, *ONE_JOB, "seed=0",
                                "hydra.sweeper.analysis=true", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 128 + signal.SIGTERM, done.stdout[-3000:]
    assert json.loads((sweep_dir / layout.TABLE_JSON).read_text())["counts"]["done"] == 1
    assert json.loads((sweep_dir / layout.MANIFEST).read_text())["ended"]
    assert signal.getsignal(signal.SIGTERM) == handler  # the sweep's handler is taken back


# -- one launcher per sweep folder (defect 7) ---------------------------------------------


# A launcher as the lock sees it (sweep/bookkeeping/lock.py): a process holding an exclusive
# flock on sweep.lock, which names it. Plain Python: it starts in a fraction of a second.
_HOLD_LOCK = """
import fcntl, json, os, sys, time
os.makedirs(sys.argv[1], exist_ok=True)
handle = open(os.path.join(sys.argv[1], "sweep.lock"), "a+")
fcntl.flock(handle, fcntl.LOCK_EX)
handle.write(json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                         "started": "2026-01-01T00:00:00+00:00", "command": "sae-sweep"}))
handle.flush()
print("held", flush=True)
time.sleep(600)
"""


def _lock_holder(sweep_dir: Path) -> subprocess.Popen:
    """A process that holds the sweep folder's lock, as a running launcher does."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(sweep_dir)], env=env(),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_launch_into_a_locked_folder_refuses_naming_the_holder(
    tmp_path, monkeypatch, capfd
):
    """Two launches into one folder both trained every job; now the second refuses before
    it writes anything, naming the first's pid and start."""
    sweep_dir = tmp_path / "sweep"
    holder = _lock_holder(sweep_dir)
    try:
        second = run_sweep_in_process(monkeypatch, capfd, sweep_dir, *ONE_JOB, "seed=0",
                                      cwd=tmp_path)  # fmt: skip
        assert launcher_alive(sweep_dir) is True
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode != 0
    assert f"pid {holder.pid} on" in second.stdout and "another launch is running" in second.stdout
    assert "hydra.sweeper.wait_for_lock=true" in second.stdout
    assert not (sweep_dir / layout.MANIFEST).exists() and not jobs(sweep_dir)
    assert launcher_alive(sweep_dir) is False  # the kernel let go of a killed holder's lock


def test_status_of_a_sweep_whose_launcher_died_says_stopped_not_finished(tmp_path, capsys):
    """A launcher killed with its jobs 7 minutes ago: status said "2 running; finished"."""
    sweep_dir = tmp_path / "sweep"
    holder = _lock_holder(sweep_dir)
    holder.kill()
    holder.wait()
    then = time.time() - 420
    (sweep_dir / layout.MANIFEST).write_text(json.dumps({
        "name": "quick", "n_jobs": 2, "started": "then", "ended": None,
        "launches": [{"id": "holder", "ended": None}]}))  # fmt: skip
    for seed in (0, 1):
        job = sweep_dir / f"gated/seed{seed}"
        job.mkdir(parents=True)
        record = {"job": seed, "pid": holder.pid, "host": socket.gethostname(),
                  "started": then - 60, "outcome": "running"}  # fmt: skip
        (job / layout.JOB).write_text(json.dumps(record))
        (job / layout.PROGRESS).write_text(json.dumps({
            "state": "running", "done": 50, "total": 100, "eta_s": 60, "updated_unix": then,
            "pid": holder.pid, "host": socket.gethostname()}))  # fmt: skip
    status = sweep_status(sweep_dir)
    assert status["launcher"] == "stopped"
    assert status["counts"]["stopped"] == 2 and status["counts"]["running"] == 0
    assert status_main([str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "finished" not in out and "2 stopped; stopped: its launcher (pid" in out


# -- records read defensively (defects 9-11) -----------------------------------------------


@pytest.fixture(scope="module")
def two_done_jobs(tmp_path_factory):
    """A sweep folder of two finished tiny jobs (two penalty coefficients)."""
    sweep_dir = tmp_path_factory.mktemp("records")
    (sweep_dir / layout.MANIFEST).write_text(json.dumps({"name": "records", "n_jobs": 2}))
    for coefficient in (1.0, 3.0):
        run_job(small_config(train__steps=20, penalty__coefficient=coefficient),
                sweep_dir / f"c{coefficient}")  # fmt: skip
    return sweep_dir


def _copy(sweep_dir: Path, to: Path) -> Path:
    subprocess.run(["cp", "-r", str(sweep_dir), str(to)], check=True)
    return to


def _edit_summary(job_dir: Path, **fields) -> None:
    s = summary(job_dir)
    s.update(fields)
    (job_dir / layout.SUMMARY).write_text(json.dumps(s))


def test_knobs_as_text_makes_one_record_unreadable_not_the_analysis(two_done_jobs, tmp_path):
    from analysis.load import load_runs
    from sae_sweep.export.cli import main as export_main

    sweep_dir = _copy(two_done_jobs, tmp_path / "sweep")
    _edit_summary(sweep_dir / "c1.0", knobs="not a mapping")
    runs = load_runs(sweep_dir).set_index("path")
    bad = runs.loc[str(sweep_dir / "c1.0")]
    assert bad["status"] == "failed"
    assert "summary.json" in bad["error"] and "field `knobs`" in bad["error"]
    assert runs.loc[str(sweep_dir / "c3.0"), "status"] == "done"
    assert export_main([str(sweep_dir), str(tmp_path / "out"), "--all"]) == 0
    assert len(list((tmp_path / "out").glob("*/cfg.json"))) == 1


def test_l0_as_text_is_named_by_status_and_export_never_dropped_silently(
    two_done_jobs, tmp_path, capsys
):
    from sae_sweep.export.cli import main as export_main

    sweep_dir = _copy(two_done_jobs, tmp_path / "sweep")
    _edit_summary(sweep_dir / "c1.0", l0="many")
    rows = {r["dir"]: r for r in sweep_status(sweep_dir)["jobs"]}
    assert rows["c1.0"]["state"] == "unreadable" and "field `l0`" in rows["c1.0"]["note"]
    assert status_main([str(sweep_dir)]) == 0
    capsys.readouterr()
    assert export_main([str(sweep_dir), str(tmp_path / "out"), "--all"]) == 0
    err = capsys.readouterr().err
    assert f"left out: {sweep_dir / 'c1.0'} (failed: unreadable" in err and "`l0`" in err


def test_export_refuses_a_failed_job_and_a_non_empty_folder(two_done_jobs, tmp_path, capsys):
    from sae_sweep.export.cli import main as export_main

    sweep_dir = _copy(two_done_jobs, tmp_path / "sweep")
    _edit_summary(sweep_dir / "c1.0", status="failed", error="NonFiniteMetricsError: fvu=nan")
    assert export_main([str(sweep_dir / "c1.0"), str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "says 'failed', not 'done': NonFiniteMetricsError" in err
    assert not (tmp_path / "a").exists()

    assert export_main([str(sweep_dir / "c3.0"), str(tmp_path / "b")]) == 0
    assert export_main([str(sweep_dir / "c3.0"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--overwrite" in err
    assert export_main([str(sweep_dir / "c3.0"), str(tmp_path / "b"), "--overwrite"]) == 0


def test_corrupt_sweep_json_is_kept_aside_and_a_refused_launch_changes_nothing(
    tmp_path, monkeypatch, capfd
):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / layout.MANIFEST).write_text('{"name": "quick", "launches": [{"id": "first"')
    done = run_sweep_in_process(monkeypatch, capfd, sweep_dir, *ONE_JOB, "seed=0", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    kept = list(sweep_dir.glob(f"{layout.MANIFEST}.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_text().startswith('{"name": "quick", "launches"')
    assert kept[0].name in done.stdout
    before = (sweep_dir / layout.MANIFEST).read_bytes()
    assert len(json.loads(before)["launches"]) == 1

    # a swept value that does not compose: found by the sweep, after Hydra's own compose
    refused = run_sweep_in_process(monkeypatch, capfd, sweep_dir, *ONE_JOB, "seed=0",
                                   "train.lr=1e-3,fast", cwd=tmp_path)  # fmt: skip
    assert refused.returncode != 0 and "train.lr" in refused.stdout
    assert (sweep_dir / layout.MANIFEST).read_bytes() == before  # not even its `fixed` values


# -- inputs (item 7) and SAELens folders ---------------------------------------------------


def test_overlong_value_in_a_folder_name_is_refused_naming_the_override(
    tmp_path, monkeypatch, capfd
):
    long = "x" * 5000
    refused = run_sweep_in_process(
        monkeypatch, capfd, tmp_path / "sweep", *ONE_JOB, "seed=0", f"logger.group={long}",
        "hydra.sweep.subdir=${variant}/${logger.group}", cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "5000 bytes long" in refused.stdout and "logger.group=xxx" in refused.stdout
    assert "hydra.sweep.subdir" in refused.stdout and "OSError" not in refused.stdout


def test_saelens_folder_whose_cfg_disagrees_with_its_weights_is_refused(two_done_jobs, tmp_path):
    from sae_sweep.export.run import export_run
    from sae_sweep.export.saelens import ExportError
    from sae_sweep.record.weights import load_sae

    folder = export_run(two_done_jobs / "c3.0", tmp_path / "saelens")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["d_sae"] = cfg["d_sae"] * 2
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match=r"cfg.json disagrees with .*d_sae=128 but the weights"):
        load_sae(folder)


def test_a_launch_told_to_wait_starts_when_the_running_one_ends(tmp_path):
    """hydra.sweeper.wait_for_lock=true: the second launch blocks until the first's process
    ends (here killed), then holds the lock and names itself in it."""
    holder = _lock_holder(tmp_path)
    threading.Timer(0.5, holder.kill).start()
    waiting = LaunchLock(tmp_path, "second")
    start = time.monotonic()
    waiting.acquire(wait=True)
    try:
        assert time.monotonic() - start >= 0.4 and holder.wait(timeout=5) is not None
        named = json.loads((tmp_path / layout.LAUNCH_LOCK).read_text())
        assert (named["launch_id"], named["pid"]) == ("second", os.getpid())
        assert launcher_alive(tmp_path) is True
    finally:
        waiting.release()
    assert launcher_alive(tmp_path) is False
