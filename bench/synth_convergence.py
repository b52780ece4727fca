"""How many samples an SAE needs on a synthsaebench model before its metrics stop moving.

    python bench/synth_convergence.py                          # the CPU preset, BatchTopK k 7
    python bench/synth_convergence.py --every 250 sae=topk sae.k=5 train.steps=4000
    python bench/synth_convergence.py --plot curve.png data=synthsaebench_16k ...

Trains one SAE exactly as a job does (the job's config composition, source, normalisation
scalar and training step, train.steps fixing the LR schedule), and every `--every` steps
evaluates it on the held-out split with the job's `evaluate`: explained variance, L0, dead
fraction, and SynthSAEBench's MCC (Hungarian matching of decoder columns to the true
features) and F1 (latents as detectors of their matched true features).
Prints one line per evaluation, and the change over the last quarter of the run: a curve
that is flat there has converged at that budget. Arguments other than --every/--plot are
Hydra overrides of the job config.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from sae_sweep.config.schema import job_config  # noqa: E402
from sae_sweep.config_store import register_configs  # noqa: E402
from sae_sweep.data import build_source, estimate_norm_scale  # noqa: E402
from sae_sweep.evaluation import evaluate  # noqa: E402
from sae_sweep.job import resolve_device  # noqa: E402
from sae_sweep.main import CONF_DIR  # noqa: E402
from sae_sweep.models import build_sae  # noqa: E402
from sae_sweep.record import RunLogger  # noqa: E402
from sae_sweep.training.loop import TrainingRun  # noqa: E402

DEFAULTS = [
    "data=synthsaebench",
    "sae=batchtopk",
    "sae.k=7",
    "sae.d_sae=256",
    "penalty=none",
    "train.unit_norm_decoder=true",
    "train.steps=4000",
    "logger=disabled",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", type=int, default=250, help="steps between evaluations")
    parser.add_argument("--plot", type=Path, help="also plot the curves into this PNG")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the job config")
    args = parser.parse_args()
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        composed = compose(config_name="config", overrides=[*DEFAULTS, *args.overrides])
    cfg = job_config(OmegaConf.to_object(composed))
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    source = build_source(cfg.data, cfg.seed, device)
    print(f"data ready in {time.perf_counter() - t0:.0f} s: d={source.d}, "
          f"true L0 {getattr(source, 'true_l0', float('nan')):.2f}", flush=True)  # fmt: skip
    tr = cfg.train
    norm_scale = getattr(source, "norm_scale", None) or estimate_norm_scale(
        source, tr.norm_estimate_batches, tr.batch_size
    )
    sae = build_sae(cfg.sae, d_in=source.d, seed=cfg.seed).to(device)
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        RunLogger(Path(tmp), cfg.logger, {}, [], "bench") as log,
    ):
        run = TrainingRun(cfg, sae, source, log, norm_scale=norm_scale, checkpoint_dir=None)
        print(f"{'samples':>10} {'train s':>8} {'L0':>6} {'expl.var':>8} {'MCC':>6} {'F1':>6} "
              f"{'dead':>6}")  # fmt: skip
        t_train = 0.0
        for step in range(tr.steps):
            t = time.perf_counter()
            run.step(step, source.train_batch(step, tr.batch_size))
            t_train += time.perf_counter() - t
            done = step + 1
            if done % args.every and done != tr.steps:
                continue
            m = evaluate(sae, source, norm_scale, tr.eval_batch_size)
            row = (done * tr.batch_size, t_train, m["l0"], m["explained_variance"], m["mcc"],
                   m["f1"], m["dead_fraction"])  # fmt: skip
            rows.append(row)
            print(f"{row[0]:>10,} {row[1]:>8.0f} {row[2]:>6.2f} {row[3]:>8.4f} {row[4]:>6.4f} "
                  f"{row[5]:>6.4f} {row[6]:>6.3f}", flush=True)  # fmt: skip
    source.close()
    tail = [r for r in rows if r[0] >= 0.75 * rows[-1][0]]
    if len(tail) > 1:
        print(f"last quarter ({tail[0][0]:,} -> {tail[-1][0]:,} samples): explained variance "
              f"{tail[-1][3] - tail[0][3]:+.4f}, MCC {tail[-1][4] - tail[0][4]:+.4f}, "
              f"F1 {tail[-1][5] - tail[0][5]:+.4f}")  # fmt: skip
    if args.plot:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
        for ax, col, name in zip(axes, (3, 4, 5), ("explained variance", "MCC", "F1"), strict=True):
            ax.plot([r[0] for r in rows], [r[col] for r in rows], marker="o")
            ax.set_xlabel("training samples")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
        fig.suptitle(f"{cfg.sae.kind} on data={cfg.data.kind} (d={source.d})")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
