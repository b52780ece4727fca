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

import numpy as np
import pytest
import torch
from conftest import killed_after_checkpoint, small_config

from sae_sweep.config.schema import ActivationsDataConfig
from sae_sweep.data import DataError
from sae_sweep.data.reader import open_files
from sae_sweep.job import run_job
from sae_sweep.record.config_match import ConfigMismatchError
from sae_sweep.training.checkpoint import DAMAGED_SUFFIX, CheckpointError
from sae_sweep.training.interruption import JobInterrupted

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


def composed(*overrides: str):
    """The job config `sae-sweep <overrides>` trains, composed in this process."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sae_sweep.config.schema import job_config
    from sae_sweep.main import CONF_DIR  # also registers the schemas and resolvers

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return job_config(OmegaConf.to_object(compose("config", overrides=list(overrides))))


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


# -- signals (defect 6) -------------------------------------------------------------------

# Each training step of the process under test sleeps, and it says when step 30 is done.
_SLOW_STEPS = """
import time
from pathlib import Path
from sae_sweep.training.loop import TrainingRun
real_step, marker = TrainingRun.step, Path(sys.argv[1])
def slow_step(self, step, batch):
    real_step(self, step, batch)
    time.sleep(0.02)
    if step + 1 == 30:
        marker.touch()
TrainingRun.step = slow_step
"""


def test_sigterm_to_a_single_run_records_interrupted_at_its_step_and_the_rerun_resumes(tmp_path):
    """What SLURM (without submitit), `kill` or a container stop sends: the run finishes its
    step, checkpoints it (here no periodic checkpoint is due), records `interrupted` with the
    step and exits 143; the same command resumes it there."""
    run = tmp_path / "run"
    command = [f"hydra.run.dir={run}", "logger=disabled", "device=cpu", "train.steps=150",
               "train.checkpoint_every=0", "train.batch_size=64", "data.d=16",
               "data.n_features=32", "data.n_eval=256", "train.eval_batch_size=256",
               "train.norm_estimate_batches=2", "sae.expansion_factor=2"]  # fmt: skip
    cli = "from sae_sweep.main import main\nsys.argv = ['sae-sweep', *sys.argv[2:]]\nmain()\n"
    marker = tmp_path / "step30"
    proc = job_process(_SLOW_STEPS + cli, marker, *command)
    wait_for(marker, proc)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, output

    s = summary(run)
    assert s["status"] == "interrupted" and s["signal"] == signal.SIGTERM, s
    step = s["steps_done"]
    assert 30 <= step < 150 and s["checkpoint_step"] == step
    assert f"after step {step} of 150" in s["error"]
    progress = json.loads((run / "progress.json").read_text())
    assert progress["state"] == "interrupted" and progress["done"] == step
    assert json.loads((run / "checkpoint" / "meta.json").read_text())["step"] == step

    resumed = run_job(composed(*command[1:]), run)  # what running the command again trains
    assert resumed["status"] == "done" and resumed["resumed_from_step"] == step
    assert resumed["steps"] == 150


def test_a_resumed_single_run_logs_no_metric_twice(tmp_path, monkeypatch):
    """Stopped at once (no handler's checkpoint) after logging step 40, its checkpoint at 30:
    the resume logs 40 again, and the first one is dropped."""
    from sae_sweep.training.loop import TrainingRun

    real_step = TrainingRun.step

    def die_after_45(self, step, batch):
        real_step(self, step, batch)
        if step + 1 == 45:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(TrainingRun, "step", die_after_45)
    with pytest.raises(KeyboardInterrupt):
        run_job(small_config(), tmp_path)
    monkeypatch.setattr(TrainingRun, "step", real_step)
    assert run_job(small_config(), tmp_path)["resumed_from_step"] == 30
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [20, 30, 40, 60, 60]


def test_signals_during_a_checkpoint_write_wait_until_it_is_whole(tmp_path, monkeypatch):
    """Two SIGTERMs between the state file and its manifest (the second would stop the job at
    once anywhere else): the checkpoint is finished, then the job stops at its step."""
    import sae_sweep.training.checkpoint as checkpoint

    real_write = checkpoint.atomic_write_text

    def signalled_write(path, text):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        real_write(path, text)

    monkeypatch.setattr(checkpoint, "atomic_write_text", signalled_write)
    with pytest.raises(JobInterrupted):
        run_job(small_config(), tmp_path)  # its first checkpoint: step 30
    s = summary(tmp_path)
    assert s["status"] == "interrupted" and s["steps_done"] == s["checkpoint_step"] == 30
    monkeypatch.setattr(checkpoint, "atomic_write_text", real_write)
    assert run_job(small_config(), tmp_path)["resumed_from_step"] == 30


def test_slurm_requeue_signal_is_left_to_submitit(tmp_path):
    """Under submitit, SIGTERM is ignored (SLURM sends it before killing a job it has already
    warned) and SIGUSR2 requeues the job and exits: the job keeps those handlers, goes on
    through SIGTERM, and is recorded `interrupted` (resumable) when the requeue exits."""
    marker = tmp_path / "step30"
    proc = job_process(
        _SLOW_STEPS + """
import signal
signal.signal(signal.SIGTERM, lambda *a: print("bypassing SIGTERM", flush=True))
signal.signal(signal.SIGUSR2, lambda *a: sys.exit(-1))  # submitit: requeue, then exit
run_job(small_config(train__steps=400, train__checkpoint_every=0), Path(sys.argv[2]))
""",
        marker, tmp_path / "job",
    )  # fmt: skip
    wait_for(marker, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None, "SIGTERM stopped a job whose launcher ignores it"
    proc.send_signal(signal.SIGUSR2)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 255 and "bypassing SIGTERM" in output, output
    s = summary(tmp_path / "job")
    assert s["status"] == "interrupted" and s["error"].startswith("SystemExit"), s


# -- memory (defect 4) --------------------------------------------------------------------


def test_evaluation_that_would_not_fit_runs_in_smaller_batches_to_the_same_metrics(
    tmp_path, monkeypatch, caplog
):
    """What the default train.eval_batch_size needs at a large d_sae is more than the device
    has: the held-out rows go through in batches that fit, and the metrics are unchanged."""
    import sae_sweep.training.memory as memory
    from sae_sweep.data import build_source
    from sae_sweep.evaluation import evaluate
    from sae_sweep.models import build_sae

    cfg = small_config()
    source = build_source(cfg.data, cfg.seed, torch.device("cpu"))
    sae = build_sae(cfg.sae, d_in=source.d, seed=0)
    whole = evaluate(sae, source, 1.0, batch_size=2048)
    fits = 100 * memory.row_bytes(sae)  # about 90 rows fit
    monkeypatch.setattr(memory, "free_bytes", lambda device: fits)
    with caplog.at_level("WARNING", logger="sae_sweep"):
        chunked = evaluate(sae, source, 1.0, batch_size=2048)
    assert "train.eval_batch_size=2048" in caplog.text and "evaluating 90 rows" in caplog.text
    for key in ("l0", "fvu", "mse", "shrinkage", "dead_fraction", "mmcs"):
        assert chunked[key] == pytest.approx(whole[key], rel=1e-5), key

    monkeypatch.setattr(memory, "free_bytes", lambda device: memory.row_bytes(sae))
    with pytest.raises(memory.InsufficientMemoryError, match=r"sae\.d_sae"):
        evaluate(sae, source, 1.0, batch_size=2048)


def test_training_that_would_not_fit_is_refused_before_its_first_step(tmp_path, monkeypatch):
    import sae_sweep.training.memory as memory

    monkeypatch.setattr(memory, "free_bytes", lambda device: 200_000)
    with pytest.raises(memory.InsufficientMemoryError) as refused:
        run_job(small_config(), tmp_path)
    message = str(refused.value)
    assert "train.batch_size=128" in message and "d_sae=64" in message and "Fix:" in message
    s = summary(tmp_path)
    assert s["status"] == "failed" and s["steps_done"] == 0 and s["checkpoint_step"] is None


def test_a_job_killed_without_a_word_is_recorded_failed_at_its_next_start(tmp_path, caplog):
    """The kernel's out-of-memory killer sends SIGKILL: no handler runs, and progress.json says
    `running` under a pid that is gone. The next start records the kill (with the pid and
    step), then resumes from the checkpoint."""
    marker = tmp_path / "step30"
    config = "small_config(train__steps=400, train__checkpoint_every=30)"
    proc = job_process(
        _SLOW_STEPS + f"run_job({config}, Path(sys.argv[2]))\n", marker, tmp_path / "job"
    )
    wait_for(marker, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    progress = json.loads((tmp_path / "job" / "progress.json").read_text())
    assert progress["state"] == "running" and progress["pid"] == proc.pid

    from sae_sweep.record.progress import reclassify_dead

    with caplog.at_level("WARNING", logger="sae_sweep"):
        s = reclassify_dead(tmp_path / "job")
    assert s["status"] == "failed" and f"pid {proc.pid}" in s["error"]
    assert "out-of-memory killer" in s["error"] and s["checkpoint_step"] == 30
    assert summary(tmp_path / "job") == s
    assert reclassify_dead(tmp_path / "job") is None  # recorded once

    # the next start of the single run (which does the same) resumes it
    (tmp_path / "job" / "summary.json").unlink()
    (tmp_path / "job" / "progress.json").write_text(json.dumps(progress))
    with caplog.at_level("WARNING", logger="sae_sweep"):
        done = run_job(small_config(train__steps=400, train__checkpoint_every=30), tmp_path / "job")
    assert "KilledWithoutRecord" in caplog.text
    assert done["status"] == "done" and done["resumed_from_step"] == 30


# -- inputs (item 7) ----------------------------------------------------------------------


def activations(folder: Path, **shards: np.ndarray) -> ActivationsDataConfig:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in shards.items():
        np.save(folder / f"{name}.npy", rows)
    return ActivationsDataConfig(path=str(folder), n_eval=100, shuffle_buffer=256)


def gaussian(n: int, d: int = 16) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)


def test_an_integer_shard_among_float_shards_is_an_error_naming_it(tmp_path):
    """Token ids saved beside the activations were read as activations, promoted to floats."""
    cfg = small_config(train__steps=10, train__checkpoint_every=0)
    ids = np.arange(600 * 16, dtype=np.int64).reshape(600, 16)
    cfg.data = activations(tmp_path / "acts", a=gaussian(600), b=ids)
    with pytest.raises(DataError, match=r"b\.npy holds int64 values, not floats.*Fix:"):
        run_job(cfg, tmp_path / "run")


def test_shards_of_mixed_float_types_are_read_with_a_warning(tmp_path, caplog):
    data = activations(tmp_path, a=gaussian(300), b=gaussian(300).astype(np.float16))
    with caplog.at_level("WARNING", logger="sae_sweep"):
        open_files(data.path, None)
    assert "a.npy: torch.float32, b.npy: torch.float16" in caplog.text
    assert "read as torch.float32" in caplog.text


def test_a_batch_larger_than_the_training_data_is_an_error(tmp_path):
    """300 rows, 100 of them held out: a batch of 256 would repeat training rows."""
    cfg = small_config(train__steps=10, train__checkpoint_every=0, train__batch_size=256)
    cfg.data = activations(tmp_path / "acts", a=gaussian(300))
    with pytest.raises(DataError, match=r"train\.batch_size=256 is larger than the 200 training"):
        run_job(cfg, tmp_path / "run")
    assert summary(tmp_path / "run")["status"] == "failed"
