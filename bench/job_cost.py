"""Where one sweep job's time goes: each phase of `run_job` (CPU and wall seconds).

    python bench/job_cost.py                 # a `quick` sweep job, W&B offline
    python bench/job_cost.py --logger disabled --steps 200

CPU seconds are this process's (one thread), so they hold under a loaded machine where wall
seconds do not. "training steps" is the SAE's steps alone; the batches (drawn or read) are
the part of the loop outside them.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

T0 = (time.process_time(), time.perf_counter())
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import wandb  # noqa: E402, F401  (a sweep job imports it)
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import sae_sweep.job as job  # noqa: E402
import sae_sweep.record.run_logger as run_logger  # noqa: E402
import sae_sweep.training.loop as loop  # noqa: E402
from sae_sweep.config.schema import job_config  # noqa: E402
from sae_sweep.main import CONF_DIR  # noqa: E402

IMPORTS = (time.process_time() - T0[0], time.perf_counter() - T0[1])
PHASES = [
    (job, "build_source", "data source build"),
    (job, "estimate_norm_scale", "norm-scale estimate"),
    (job, "versions", "versions (git)"),
    (run_logger.RunLogger, "__enter__", "W&B init + metrics file"),
    (loop.TrainingRun, "step", "training steps"),
    (loop, "save_checkpoint", "checkpoints"),
    (job, "evaluate", "evaluation"),
    (job, "save_sae", "weights"),
    (run_logger.RunLogger, "write_summary", "summary (+ W&B summary)"),
    (run_logger.RunLogger, "__exit__", "W&B finish"),
]


def timed(owner, name: str, label: str, totals: dict) -> None:
    fn = getattr(owner, name)

    def wrapper(*args, **kwargs):
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[label][0] += time.process_time() - cpu
            totals[label][1] += time.perf_counter() - wall

    setattr(owner, name, wrapper)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--logger", default="offline", choices=["offline", "disabled"])
    p.add_argument("--steps", type=int, default=800)
    args = p.parse_args()
    torch.set_num_threads(1)
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for owner, name, label in PHASES:
        timed(owner, name, label, totals)
    overrides = ["+sweep=quick", "variant=gated_original", f"logger={args.logger}",
                 "device=cpu", f"train.steps={args.steps}"]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cpu, wall = time.process_time(), time.perf_counter()
        cfg = job_config(OmegaConf.to_object(compose("config", overrides)))
        totals["compose the config"] = [time.process_time() - cpu, time.perf_counter() - wall]
        with tempfile.TemporaryDirectory() as tmp:
            cpu, wall = time.process_time(), time.perf_counter()
            job.run_job(cfg, Path(tmp))
            total = (time.process_time() - cpu, time.perf_counter() - wall)
    print(f"logger={args.logger} steps={args.steps} load={os.getloadavg()[0]:.1f}")
    print(f"{'phase':<36}{'cpu s':>8}{'wall s':>9}")
    print(f"{'imports (torch, wandb, hydra, ours)':<36}{IMPORTS[0]:8.2f}{IMPORTS[1]:9.2f}")
    for label, (c, w) in totals.items():
        print(f"{label:<36}{c:8.2f}{w:9.2f}")
    rest = [total[i] - sum(v[i] for k, v in totals.items() if k != "compose the config")
            for i in (0, 1)]  # fmt: skip
    print(f"{'batches and the rest of the loop':<36}{rest[0]:8.2f}{rest[1]:9.2f}")
    print(f"{'run_job in all':<36}{total[0]:8.2f}{total[1]:9.2f}")


if __name__ == "__main__":
    main()
