"""Helpers for the sweep tests: run `sae-sweep` on tiny jobs, in this process or (where a
process must die, or the command line itself is under test) in a subprocess; read records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# About a second per job: tiny data, tiny SAE, few steps; no W&B, no analysis at the end.
TINY = [
    "train.steps=40",
    "train.batch_size=128",
    "train.eval_batch_size=1024",
    "train.norm_estimate_batches=2",
    "data.d=16",
    "data.n_features=32",
    "data.n_eval=1024",
    "sae.expansion_factor=4",
    # One thread: a tiny job gains nothing from more, and on a busy machine threads that wait
    # on each other make it several times slower. Tests of the thread budget set threads=0.
    "threads=1",
    "logger=disabled",
    "device=cpu",
    "hydra.sweeper.analysis=false",
    "seed=0",  # the quick sweep's 3 seeds and target rounds are chosen per test
    "l0_targets=[]",
]


def sweep_cmd(sweep_dir: Path, *overrides: str, launcher: str = "basic", sweep: str = "quick"
              ) -> list[str]:  # fmt: skip
    """`sae-sweep +sweep=<sweep>` into `sweep_dir` on tiny jobs, with `launcher`."""
    return [sys.executable, "-m", "sae_sweep", f"+sweep={sweep}", f"hydra.sweep.dir={sweep_dir}",
            f"hydra/launcher={launcher}", *TINY, *overrides]  # fmt: skip


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SAE_SWEEP_", "SLURM_"))}
    e.update(WANDB_MODE="disabled", OMP_NUM_THREADS="1", **extra)
    return e


def run_sweep(sweep_dir: Path, *overrides: str, cwd: Path, launcher="basic", extra_env=None,
              timeout=900, sweep="quick"):  # fmt: skip
    """Run a sweep to its end; returns the CompletedProcess (stdout + stderr in .stdout)."""
    return subprocess.run(
        sweep_cmd(sweep_dir, *overrides, launcher=launcher, sweep=sweep), cwd=cwd,
        env=env(**(extra_env or {})),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )  # fmt: skip


def jobs(sweep_dir: Path) -> dict[str, dict]:
    """{job folder (relative): job.json} of every job under the sweep folder."""
    return {
        str(p.parent.relative_to(sweep_dir)): json.loads(p.read_text())
        for p in sorted(Path(sweep_dir).rglob("job.json"))
    }


def summary(job_dir: Path) -> dict:
    return json.loads((Path(job_dir) / "summary.json").read_text())


def assert_complete_record(job_dir: Path) -> None:
    """A finished job's full record (docs/design.md, "The record")."""
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "sae.safetensors",
                 "sae_config.json", "checkpoint/meta.json", "job.json"):  # fmt: skip
        assert (Path(job_dir) / name).is_file(), f"{job_dir} lacks {name}"
    s = summary(job_dir)
    assert s["status"] == "done" and s["l0"] is not None and s["fvu"] is not None, s


def run_cli_in_process(monkeypatch, capfd, *args: str, extra_env=None) -> tuple[int, str]:
    """`sae-sweep ARGS` in this process (no interpreter start, no imports of torch and Hydra
    again); returns (exit code, stdout + stderr). For runs that need no process of their
    own: one job, a sweep whose jobs all end by themselves, or a config that fails. capfd
    None: the output is not returned.

    What a run leaves in the process is put back: the environment (a sweep publishes its
    launch id and thread budget there for its jobs), torch's thread count, the working
    directory and the logging handlers Hydra installs."""
    import logging

    import torch

    from sae_sweep.main import main

    monkeypatch.setattr(sys, "argv", ["sae-sweep", *args])
    for key in [k for k in os.environ if k.startswith(("SAE_SWEEP_", "SLURM_"))]:
        monkeypatch.delenv(key)
    for key, value in (extra_env or {}).items():
        monkeypatch.setenv(key, value)
    environ, threads, cwd = dict(os.environ), torch.get_num_threads(), os.getcwd()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        if isinstance(exc.code, str):  # what the interpreter prints when a process exits so
            print(exc.code, file=sys.stderr)
    finally:
        os.environ.clear()
        os.environ.update(environ)
        torch.set_num_threads(threads)
        os.chdir(cwd)
        for h in root.handlers:
            if h not in handlers:
                h.close()
        root.handlers[:], root.level = handlers, level
    if capfd is None:  # a session fixture: pytest's own capture keeps the output
        return code, ""
    out = capfd.readouterr()
    return code, out.out + out.err


def run_sweep_in_process(monkeypatch, capfd, sweep_dir: Path, *overrides: str, cwd: Path,
                         launcher="basic", extra_env=None, sweep="quick"):  # fmt: skip
    """`run_sweep` in this process (see `run_cli_in_process`): the same command, launch
    directory and environment; returns a CompletedProcess (stdout + stderr in .stdout)."""
    args = sweep_cmd(sweep_dir, *overrides, launcher=launcher, sweep=sweep)[3:]
    monkeypatch.chdir(cwd)
    extra_env = {"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", **(extra_env or {})}
    code, out = run_cli_in_process(monkeypatch, capfd, *args, extra_env=extra_env)
    return subprocess.CompletedProcess(["sae-sweep", *args], code, out)
