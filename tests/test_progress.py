"""Live progress: log lines and progress.json of a job, a bar on a terminal, cache builds."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading

import pytest
from conftest import small_config
from filelock import FileLock

from sae_sweep.data import cache as cache_module
from sae_sweep.job import run_job
from sae_sweep.record import progress as progress_module
from sae_sweep.record.progress import PROGRESS_FILE, Progress, read_progress
from sae_sweep.training.progress import JobProgress


@pytest.fixture
def written(monkeypatch):
    """Every progress.json content written, in order."""
    seen: list[dict] = []
    real = progress_module.atomic_write_json

    def record(path, obj):
        seen.append(json.loads(json.dumps(obj)))
        real(path, obj)

    monkeypatch.setattr(progress_module, "atomic_write_json", record)
    return seen


def test_job_without_a_terminal_logs_progress_lines_and_writes_progress_json(
    tmp_path, monkeypatch, caplog, written
):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: lines, no bar
    caplog.set_level(logging.INFO, logger="sae_sweep.progress")
    cfg = small_config(logger__progress_every_s=0.0)  # report at every step
    summary = run_job(cfg, tmp_path)

    lines = [r.getMessage() for r in caplog.records if r.name == "sae_sweep.progress"]
    line = next(x for x in lines if "running step 40/60" in x)
    for part in ("(67%)", "tokens 5120", "l0 ", "fvu ", "tokens/s ", "elapsed ", "ETA "):
        assert part in line, (part, line)
    assert lines[-1].startswith(f"{tmp_path.name}: done step 60/60 (100%)")
    assert "\r" not in sys.stderr.getvalue()  # no bar was drawn

    states = [w["state"] for w in written]
    assert states[0] == "preparing" and states[-2:] == ["evaluating", "done"]
    running = [w for w in written if w["state"] == "running"]
    assert [w["done"] for w in running] == list(range(0, 61))
    assert running[19].get("l0") is None and running[20]["l0"] > 0  # first window at step 20
    assert all(w["eta_s"] is not None for w in running[1:])

    final = read_progress(tmp_path / PROGRESS_FILE)
    assert final == written[-1]
    assert final["state"] == summary["status"] == "done"
    assert final["done"] == final["total"] == summary["steps"] == 60
    assert final["tokens"] == 60 * cfg.train.batch_size
    assert final["metrics"] == "held-out"
    assert final["l0"] == summary["l0"] and final["fvu"] == summary["fvu"]
    assert final["tokens_per_s"] == summary["activations_per_s"]
    assert final["elapsed_s"] == summary["train_wall_s"] and final["eta_s"] == 0.0


def test_progress_is_reported_every_interval_not_every_step(tmp_path):
    now = [0.0]
    p = Progress("job", total=100, unit="step", path=tmp_path / PROGRESS_FILE, mode="lines",
                 every_s=10.0, clock=lambda: now[0])  # fmt: skip
    reports = []
    p.report = lambda real=p.report: reports.append(real())
    for step in range(1, 101):
        now[0] = step * 0.5  # 2 steps per second: a report every 20 steps
        p.update(step, {"l0": 3.0} if step % 25 == 0 else None)
    # every 10 s, and at once when the first figures (the first logged window) arrive
    assert [r["done"] for r in reports] == [20, 25, 45, 65, 85]
    assert reports[0]["rate_per_s"] == pytest.approx(2.0)
    assert reports[0]["eta_s"] == pytest.approx(40.0)
    assert reports[2]["l0"] == 3.0  # the figures of the last window are kept


def test_failed_job_leaves_failed_progress_with_the_error(tmp_path):
    cfg = small_config(train__lr=1e30, train__grad_clip=None, penalty__coefficient=1e30)
    with pytest.raises(Exception, match="non-finite"):
        run_job(cfg, tmp_path)
    final = read_progress(tmp_path / PROGRESS_FILE)
    assert final["state"] == "failed" and final["error"].startswith("TrainingDivergedError")


def test_bar_on_a_terminal(tmp_path, monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    run_job(small_config(logger__progress="bar"), tmp_path)
    assert "60/60" in err.getvalue() and "\r" in err.getvalue()  # tqdm redraws in place
    assert read_progress(tmp_path / PROGRESS_FILE)["state"] == "done"


def test_cache_build_reports_progress_and_waiting_jobs_say_what_they_wait_for(
    tmp_path, monkeypatch, caplog, written
):
    from data_fixtures import save_tiny_gpt2, write_text

    from sae_sweep.config.schema import HFDataConfig

    monkeypatch.setattr(cache_module, "PROGRESS_EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="sae_sweep")
    model, text = save_tiny_gpt2(tmp_path / "gpt2"), write_text(tmp_path / "stories.txt")
    cfg = HFDataConfig(model=str(model), site="transformer.h.0", dataset=str(text),
                       context_length=32, n_tokens=1000, eval_sequences=4,
                       cache_dir=str(tmp_path / "cache"))  # fmt: skip
    cache = cache_module.open_cache(cfg)

    lines = [r.getMessage() for r in caplog.records if r.name == "sae_sweep.progress"]
    assert any("running token" in x and "tokens/s" in x and "ETA" in x for x in lines), lines
    assert "done token 1,000/1,000 (100%)" in lines[-1]
    done = [w["done"] for w in written if w["state"] == "running"]
    assert done == sorted(done) and done[-1] == 1000 and len(done) > 2
    assert not (cache.folder / PROGRESS_FILE).exists()  # only the manifest's files are left

    # Another job arrives while the lock is held by a build at 40%.
    folder = cache.folder.with_name("other--site--key")
    build = Progress(f"activation cache {folder.name}", total=3000, unit="token",
                     path=folder.with_name(f"{folder.name}.tmp-1-ab") / PROGRESS_FILE)  # fmt: skip
    build.update(1200)
    build.report()
    holder = FileLock(str(folder) + ".lock", thread_local=False)  # released by the timer
    holder.acquire()
    threading.Timer(0.5, holder.release).start()
    monkeypatch.setattr(cache_module, "PROGRESS_EVERY_S", 0.1)
    caplog.clear()
    job = JobProgress(small_config(), tmp_path / "job", "job")  # written at once: a new note
    with cache_module._build_lock(folder.parent, folder):
        pass
    # The waiting job's own progress.json is kept fresh and says what it waits for, so that
    # sae-sweep-status does not take a long wait for a dead job.
    waiting = read_progress(tmp_path / "job" / PROGRESS_FILE)
    assert waiting["state"] == "preparing"
    assert waiting["note"] == "waiting for the activation cache other--site--key"
    job.start(0)
    assert "note" not in read_progress(tmp_path / "job" / PROGRESS_FILE)
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for")]
    assert waits and all("being built by" in w for w in waits)
    assert "token 1,200/3,000 (40%)" in waits[0]


def test_negative_progress_interval_is_rejected_before_anything_is_written(tmp_path):
    from sae_sweep.config.validation import ConfigError

    with pytest.raises(ConfigError, match="logger.progress_every_s=-1"):
        run_job(small_config(logger__progress_every_s=-1.0), tmp_path / "job")
    assert not (tmp_path / "job").exists()
