"""Where one sweep job's time goes: each phase of `run_job` (CPU and wall seconds), and the
part that is not training (the job's fixed cost) as a share of the job.

    python bench/job_cost.py                 # a 3000-step `quick` sweep job, W&B offline
    python bench/job_cost.py --logger disabled --steps 200

Training is the steps and their batches. The fixed cost is everything else; it is printed
for two jobs run one after the other in one process: the first as in a fresh process (a SLURM
job: it pays the imports, the optimizer's one-time import of torch._dynamo and W&B's service
start), the second as in a reused worker (a local sweep's joblib worker). The target is at
most 3% at realistic length.

CPU seconds are this process's (one thread), so they hold under a loaded machine where wall
seconds do not. Each phase counts its own time, not that of the phases inside it (a
checkpoint inside a training step counts as a checkpoint); what is left is the rest.
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
from sae_sweep.data.synthetic import SyntheticData  # noqa: E402
from sae_sweep.main import CONF_DIR  # noqa: E402

IMPORTS = (time.process_time() - T0[0], time.perf_counter() - T0[1])
PHASES = [
    (job, "build_source", "data source build"),
    (job, "estimate_norm_scale", "norm-scale estimate"),
    (job, "versions", "versions (git)"),
    (run_logger.RunLogger, "open", "W&B init + metrics file"),
    (loop, "make_optimizer", "optimizer (torch imports torch._dynamo)"),
    (SyntheticData, "train_batch", "batches (drawn)"),
    (loop.TrainingRun, "step", "training steps"),
    (loop, "save_checkpoint", "checkpoints"),
    (job, "evaluate", "evaluation"),
    (job, "save_sae", "weights"),
    (run_logger.RunLogger, "write_summary", "summary (+ W&B summary)"),
    (job, "log_sae_artifact", "SAELens export + W&B artifact"),
    (run_logger.RunLogger, "__exit__", "W&B finish"),
]
TRAINING = ("training steps", "batches (drawn)")
_open: list[list[float]] = []  # the timed calls in progress: their children's cpu, wall


def timed(owner, name: str, label: str, totals: dict) -> None:
    """Wrap owner.name to add its own time, not that of timed calls inside it, to totals."""
    fn = getattr(owner, name)

    def wrapper(*args, **kwargs):
        cpu, wall = time.process_time(), time.perf_counter()
        _open.append([0.0, 0.0])
        try:
            return fn(*args, **kwargs)
        finally:
            inner = _open.pop()
            spent = (time.process_time() - cpu, time.perf_counter() - wall)
            totals[label][0] += spent[0] - inner[0]
            totals[label][1] += spent[1] - inner[1]
            if _open:
                _open[-1][0] += spent[0]
                _open[-1][1] += spent[1]

    setattr(owner, name, wrapper)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--logger", default="offline", choices=["offline", "disabled"])
    p.add_argument("--steps", type=int, default=3000)
    args = p.parse_args()
    torch.set_num_threads(1)
    phases: list[dict[str, list[float]]] = []  # per job: phase -> [cpu s, wall s]
    current: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for owner, name, label in PHASES:
        timed(owner, name, label, current)
    overrides = ["+sweep=quick", "variant=gated_original", f"logger={args.logger}",
                 "device=cpu", f"train.steps={args.steps}"]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for seed in (0, 1):  # the second job runs as in a reused worker
            totals = collections.defaultdict(lambda: [0.0, 0.0])
            current.clear()
            cpu, wall = time.process_time(), time.perf_counter()
            cfg = job_config(OmegaConf.to_object(compose("config", [*overrides, f"seed={seed}"])))
            totals["compose the config"] = [time.process_time() - cpu, time.perf_counter() - wall]
            with tempfile.TemporaryDirectory() as tmp:
                cpu, wall = time.process_time(), time.perf_counter()
                job.run_job(cfg, Path(tmp))
                total = [time.process_time() - cpu, time.perf_counter() - wall]
            totals.update(current)
            inner = [sum(v[i] for k, v in totals.items() if k != "compose the config")
                     for i in (0, 1)]  # fmt: skip
            totals["the rest"] = [total[0] - inner[0], total[1] - inner[1]]
            phases.append(totals)
    print(f"logger={args.logger} steps={args.steps} load={os.getloadavg()[0]:.1f}")
    print(f"{'phase':<42}{'first job':>20}{'second job':>20}")
    print(f"{'':<42}{'cpu s':>10}{'wall s':>10}{'cpu s':>10}{'wall s':>10}")
    print(f"{'imports (torch, wandb, hydra, ours)':<42}{IMPORTS[0]:10.2f}{IMPORTS[1]:10.2f}")
    for label in phases[0]:
        row = "".join(f"{r[label][0]:10.2f}{r[label][1]:10.2f}" for r in phases)
        print(f"{label:<42}{row}")
    for where, record, imports in (("a fresh process", phases[0], IMPORTS[0]),
                                ("a reused worker", phases[1], 0.0)):  # fmt: skip
        whole = imports + sum(c for c, _ in record.values())
        fixed = whole - sum(record[k][0] for k in TRAINING)
        print(f"fixed cost in {where}: {fixed:.2f} CPU s = {100 * fixed / whole:.1f}% of the job")


if __name__ == "__main__":
    main()
