"""Sweep throughput: packed jobs against the same SAEs trained as separate jobs, in one run.

    python bench/sweep.py                       # K = 1, 2, 4, 8 on synthetic and cached data
    python bench/sweep.py --steps 800 --ks 8 --data activations
    python bench/sweep.py --sweep               # also: the quick sweep's wall / training time

Part 1, in this process on one thread (what one worker of a 2-core joblib sweep gets): K
SAEs of the `quick` sweep (its variants and lambdas, its sizes) trained one after another
as separate jobs (`run_job`: each builds its data source, draws or reads every batch,
evaluates and records) and as one packed job (`run_jobs`: one source, one batch per step
for all K). Prints SAEs x activations per second, wall time per SAE, the packed/separate
throughput ratio, and whether the weights are identical. Separate jobs launched by a sweep
also pay a process start each (imports of torch, Hydra, W&B): measured once and shown as
the last column, not added to the ratio. `--data activations` writes the synthetic data to
.npy shards first and trains on them with `data=activations` (cached activations).

Part 2 (`--sweep`): `sae-sweep +sweep=quick` end to end (joblib, 2 workers), unpacked and
with pack=4: wall time against the training time per worker (the sum of the jobs'
`train_wall_s` / workers); the target is at most 1.15x.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from sae_sweep.config.schema import job_config  # noqa: E402
from sae_sweep.data.synthetic import SyntheticData  # noqa: E402
from sae_sweep.job import run_job, run_jobs  # noqa: E402
from sae_sweep.main import CONF_DIR  # noqa: E402  (registers schemas, resolvers, sweeps)
from sae_sweep.record import layout  # noqa: E402

VARIANTS = ("gated_original", "gated_dn_frozen_live", "gated_dn_trainable_live",
            "gated_dn_frozen_detached")  # fmt: skip
MULTIPLIERS = (0.5, 1.0, 2.0, 4.0)


def quick_configs(k: int, steps: int, data: list[str]):
    """The first k jobs of the quick sweep (variant-major), with `steps` training steps."""
    grid = [(v, m) for v in VARIANTS for m in MULTIPLIERS][:k]
    common = ["+sweep=quick", "logger=disabled", "device=cpu", f"train.steps={steps}", *data]
    return [
        job_config(OmegaConf.to_object(compose("config", [*common, f"variant={v}",
                                                          f"lambda_multiplier={m}"])))
        for v, m in grid
    ]  # fmt: skip


def write_activation_shards(folder: Path, rows: int, d: int = 64) -> Path:
    """The quick sweep's synthetic data as .npy shards, to read back as cached activations."""
    from sae_sweep.config.schema import SyntheticDataConfig

    src = SyntheticData(SyntheticDataConfig(d=d), run_seed=0, device=torch.device("cpu"))
    folder.mkdir(parents=True, exist_ok=True)
    per_shard = 65536
    for i, start in enumerate(range(0, rows, per_shard)):
        n = min(per_shard, rows - start)
        np.save(folder / f"shard_{i:03d}.npy", src.train_batch(i, n).numpy().astype(np.float32))
    return folder


def process_start_s() -> float:
    """Wall time of one bare process start that imports what a sweep job imports."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sae_sweep.main, wandb"], check=True)
    return time.perf_counter() - t0


def bench_packing(args, tmp: Path) -> None:
    data_sets = {"synthetic": []}
    if "activations" in args.data:
        rows = max(args.steps * 512 + 16384 + 65536, 262144)
        shards = write_activation_shards(tmp / "shards", rows)
        data_sets["activations"] = ["data=activations", f"data.path={shards}", "data.d=64"]
    data_sets = {k: v for k, v in data_sets.items() if k in args.data}
    start_s = process_start_s()
    print(f"threads={torch.get_num_threads()} steps={args.steps} batch=512 d=64 d_sae=512; "
          f"load: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (1, 5 min); "
          f"process start: {start_s:.1f} s")  # fmt: skip
    print(f"{'data':<12}{'K':>3}  {'separate SAE*act/s':>19}  {'packed SAE*act/s':>17}  "
          f"{'ratio':>6}  {'s/SAE sep':>9}  {'s/SAE pack':>10}  identical")  # fmt: skip
    for name, data in data_sets.items():
        # warm-up (first use of each kernel, page cache of the shards): timed runs start warm
        run_jobs([(cfg, tmp / f"warmup-{name}" / str(i))
                  for i, cfg in enumerate(quick_configs(2, 20, data))])  # fmt: skip
        for k in args.ks:
            configs = quick_configs(k, args.steps, data)
            run = tmp / f"{name}-{k}"
            t0 = time.perf_counter()
            for i, cfg in enumerate(configs):
                run_job(cfg, run / "separate" / str(i))
            t_sep = time.perf_counter() - t0
            t0 = time.perf_counter()
            outcomes = run_jobs([(cfg, run / "packed" / str(i)) for i, cfg in enumerate(configs)])
            t_pack = time.perf_counter() - t0
            assert all(isinstance(o, dict) for o in outcomes), outcomes
            work = k * args.steps * 512
            same = all(_same_weights(run / "separate" / str(i), run / "packed" / str(i))
                       for i in range(k))  # fmt: skip
            ratio = t_sep / t_pack
            print(f"{name:<12}{k:>3}  {work / t_sep:>19,.0f}  {work / t_pack:>17,.0f}  "
                  f"{ratio:>5.2f}x  {t_sep / k:>9.2f}  {t_pack / k:>10.2f}  {same}")  # fmt: skip


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a / layout.WEIGHTS)), load_file(str(b / layout.WEIGHTS))
    return all(torch.equal(wa[k], wb[k]) for k in wa)


def bench_sweep(args, tmp: Path) -> None:
    print(f"\nquick sweep end to end (joblib, 2 workers, train.steps={args.sweep_steps}); "
          f"load: {os.getloadavg()[0]:.1f}")  # fmt: skip
    for pack in (1, 4):
        folder = tmp / f"quick-pack{pack}"
        cmd = [sys.executable, "-m", "sae_sweep", "+sweep=quick", f"hydra.sweep.dir={folder}",
               "hydra.launcher.n_jobs=2", f"train.steps={args.sweep_steps}", f"pack={pack}",
               "logger=disabled", "device=cpu"]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=tmp)
        wall = time.perf_counter() - t0
        summaries = [s for _, s in layout.summaries(folder)]
        done = sum(s.get("status") == "done" for s in summaries)
        # the members of a pack train together: each records the pack's training time
        per_worker = sum(s.get("train_wall_s") or 0.0 for s in summaries) / pack / 2
        print(f"pack={pack}: {done} SAEs done, wall {wall:.1f} s, training per worker "
              f"{per_worker:.1f} s, ratio {wall / per_worker:.2f}x (target <= 1.15x)")  # fmt: skip
    same = [
        _same_weights(tmp / "quick-pack1" / job.relative_to(tmp / "quick-pack4"), job)
        for job, _ in layout.summaries(tmp / "quick-pack4")
    ]
    print(f"pack=4 against pack=1: {sum(same)} of {len(same)} SAEs with identical weights")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--ks", type=int, nargs="*", default=[1, 2, 4, 8], help="none: skip part 1")
    p.add_argument("--data", nargs="+", default=["synthetic", "activations"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sweep", action="store_true", help="also run the quick sweep end to end")
    p.add_argument("--sweep-steps", type=int, default=800)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with (
        tempfile.TemporaryDirectory() as tmp,
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"),
    ):
        if args.ks:
            bench_packing(args, Path(tmp))
        if args.sweep:
            bench_sweep(args, Path(tmp))


if __name__ == "__main__":
    main()
