"""Sweep throughput: packed jobs against the same SAEs trained as separate jobs, in one run.

    python bench/sweep.py                       # K = 1, 2, 4, 8 on synthetic and cached data
    python bench/sweep.py --steps 800 --ks 8 --data activations
    python bench/sweep.py --ks --sweep          # only the quick sweep end to end

Part 1, on one thread (what one worker of a 2-core joblib sweep gets): the first K SAEs of
the `quick` sweep (its variants and lambdas, its sizes), trained four ways:
  - separate, one process each: what a launcher that starts a process per job (submitit,
    SLURM) pays for K jobs: K process starts (torch, Hydra, torch's optimizer machinery),
    K data sources, every batch drawn or read K times, K evaluations and records;
  - packed, one process: the same K SAEs as one packed job (`run_jobs`), one start;
  - separate and packed in this process: without the process starts (a joblib worker
    reuses its process from job to job, so this is its case).
Prints SAEs x activations per second, the packed/separate ratios and whether the packed
weights equal the separate ones. `--data activations` writes the synthetic data to .npy
shards first and trains on them with `data=activations` (cached activations).

Part 2 (`--sweep`): `sae-sweep +sweep=quick` end to end as a user runs it (joblib, 2
workers, the sweep's own W&B mode and steps, its target-L0 rounds), unpacked and with
pack=4: wall time against the training time per worker (the training time of every job,
a pack counted once, / workers); the target is at most 1.15x. Also the analysis's share.
"""

from __future__ import annotations

import argparse
import json
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

from analysis import run_analysis  # noqa: E402
from sae_sweep.config.schema import job_config  # noqa: E402
from sae_sweep.data.synthetic import SyntheticData  # noqa: E402
from sae_sweep.job import run_job, run_jobs  # noqa: E402
from sae_sweep.main import CONF_DIR  # noqa: E402  (registers schemas, resolvers, sweeps)
from sae_sweep.record import layout  # noqa: E402

VARIANTS = ("gated_original", "gated_dn_frozen_live", "gated_dn_trainable_live",
            "gated_dn_frozen_detached")  # fmt: skip
MULTIPLIERS = (0.5, 1.0, 2.0, 4.0)


def quick_overrides(k: int, steps: int, data: list[str]) -> list[list[str]]:
    """The first k jobs of the quick sweep (variant-major), with `steps` training steps."""
    grid = [(v, m) for v in VARIANTS for m in MULTIPLIERS][:k]
    common = ["+sweep=quick", "logger=disabled", "device=cpu", f"train.steps={steps}", *data]
    return [[*common, f"variant={v}", f"lambda_multiplier={m}"] for v, m in grid]


def compose_jobs(overrides: list[list[str]]):
    """Each override list composed to a job's config (inside `initialize_config_dir`)."""
    return [job_config(OmegaConf.to_object(compose("config", o))) for o in overrides]


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


class Clock:
    """Wall and CPU seconds (this process's and its finished children's) since `start`.

    On a shared machine wall time depends on the load; the CPU time of one-thread jobs is
    what they would take on an idle core, so its ratios hold under load."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), _cpu_s()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, _cpu_s() - self.cpu


def _cpu_s() -> float:
    own, children = os.times()[:2], os.times()[2:4]
    return sum(own) + sum(children)


def in_new_process(overrides: list[list[str]], dirs: list[Path], threads: int) -> None:
    """One launched job from its process start: one SAE (`run_job`) or a pack (`run_jobs`),
    in a fresh interpreter that imports what a sweep job imports."""
    spec = json.dumps({"overrides": overrides, "dirs": [str(d) for d in dirs]})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, __file__, "--threads", str(threads), "--job", spec],
                   check=True, env=env)  # fmt: skip


def launched_job(spec: str) -> None:
    """The child of `in_new_process`."""
    spec = json.loads(spec)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        configs = compose_jobs(spec["overrides"])
    jobs = list(zip(configs, map(Path, spec["dirs"]), strict=True))
    if len(jobs) == 1:
        run_job(*jobs[0])
    else:
        outcomes = run_jobs(jobs)
        assert all(isinstance(o, dict) for o in outcomes), outcomes


def bench_packing(args, tmp: Path) -> None:
    data_sets = {"synthetic": []}
    if "activations" in args.data:
        rows = max(args.steps * 512 + 16384 + 65536, 262144)
        shards = write_activation_shards(tmp / "shards", rows)
        data_sets["activations"] = ["data=activations", f"data.path={shards}", "data.d=64"]
    data_sets = {k: v for k, v in data_sets.items() if k in args.data}
    load = os.getloadavg()
    print(
        f"threads={torch.get_num_threads()} steps={args.steps} batch=512 d=64 d_sae=512; "
        f"load {load[0]:.1f} {load[1]:.1f} (1, 5 min)\n"
        "SAE*act/s: SAEs x training activations per second of wall time; 'proc': each "
        "launched job in its own process (process start included), 'in': in this process;\n"
        "ratio: packed/separate throughput in wall time, (cpu): in CPU time (holds under load)"
    )
    print(f"{'data':<12}{'K':>3}{'sep proc':>11}{'pack proc':>11}{'ratio':>7}{'(cpu)':>7}"
          f"{'sep in':>11}{'pack in':>11}{'ratio':>7}{'(cpu)':>7}  identical")  # fmt: skip
    for name, data in data_sets.items():
        # warm-up (first use of each kernel, page cache of the shards): timed runs start warm
        run_jobs([(cfg, tmp / f"warmup-{name}" / str(i))
                  for i, cfg in enumerate(compose_jobs(quick_overrides(2, 20, data)))])  # fmt: skip
        for k in args.ks:
            overrides = quick_overrides(k, args.steps, data)
            run = tmp / f"{name}-{k}"
            dirs = {way: [run / way / str(i) for i in range(k)]
                    for way in ("sep-proc", "pack-proc", "sep-in", "pack-in")}  # fmt: skip
            t = {}  # way -> (wall s, cpu s)
            clock = Clock()
            for o, d in zip(overrides, dirs["sep-proc"], strict=True):
                in_new_process([o], [d], args.threads)
            t["sep-proc"] = clock.read()
            clock = Clock()
            in_new_process(overrides, dirs["pack-proc"], args.threads)
            t["pack-proc"] = clock.read()
            configs = compose_jobs(overrides)
            clock = Clock()
            for cfg, d in zip(configs, dirs["sep-in"], strict=True):
                run_job(cfg, d)
            t["sep-in"] = clock.read()
            clock = Clock()
            outcomes = run_jobs(list(zip(configs, dirs["pack-in"], strict=True)))
            t["pack-in"] = clock.read()
            assert all(isinstance(o, dict) for o in outcomes), outcomes
            same = all(_same_weights(a, b) for way in ("pack-proc", "pack-in", "sep-proc")
                       for a, b in zip(dirs["sep-in"], dirs[way], strict=True))  # fmt: skip
            work = k * args.steps * 512
            speed = {way: work / wall for way, (wall, _) in t.items()}
            row = f"{name:<12}{k:>3}"
            for way in ("proc", "in"):
                sep, pack = t[f"sep-{way}"], t[f"pack-{way}"]
                row += (f"{speed[f'sep-{way}']:>11,.0f}{speed[f'pack-{way}']:>11,.0f}"
                        f"{sep[0] / pack[0]:>6.2f}x{sep[1] / pack[1]:>6.2f}x")  # fmt: skip
            print(f"{row}  {same}", flush=True)
    print(f"load at the end: {os.getloadavg()[0]:.1f}")


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a / layout.WEIGHTS)), load_file(str(b / layout.WEIGHTS))
    return all(torch.equal(wa[k], wb[k]) for k in wa)


def training_per_worker(sweep_dir: Path, workers: int) -> tuple[float, int]:
    """(sum of the jobs' train_wall_s, a pack counted once) / workers, and the SAEs done.

    The members of a pack train together, and each records the pack's training time."""
    summaries = {d.resolve(): s for d, s in layout.summaries(sweep_dir)}
    packs = [[Path(m["dir"]).resolve() for m in layout.read_json(f)["members"]]
             for f in (sweep_dir / layout.PACKS_DIR).glob("*/*.json")]  # fmt: skip
    in_pack = {d for pack in packs for d in pack}
    train = sum(max((summaries.get(d) or {}).get("train_wall_s") or 0.0 for d in pack)
                for pack in packs)  # fmt: skip
    train += sum(s.get("train_wall_s") or 0.0 for d, s in summaries.items() if d not in in_pack)
    done = sum(s.get("status") == "done" for s in summaries.values())
    return train / workers, done


def bench_sweep(args, tmp: Path) -> None:
    steps = [f"train.steps={args.sweep_steps}"] if args.sweep_steps else []
    print(f"\nquick sweep end to end (joblib, 2 workers, {' '.join(steps) or 'its steps'}, "
          f"logger={args.sweep_logger}); load {os.getloadavg()[0]:.1f}")  # fmt: skip
    for pack in (1, 4):
        folder = tmp / f"quick-pack{pack}"
        cmd = [sys.executable, "-m", "sae_sweep", "+sweep=quick", f"hydra.sweep.dir={folder}",
               "hydra.launcher.n_jobs=2", *steps, f"pack={pack}", f"logger={args.sweep_logger}",
               "device=cpu"]  # fmt: skip
        env = {**os.environ, "WANDB_MODE": args.sweep_logger}
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=tmp, env=env)
        wall = time.perf_counter() - t0
        per_worker, done = training_per_worker(folder, workers=2)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        run_analysis([folder])  # what the sweep ran at its end, again: its share of the wall
        analysis = time.perf_counter() - t0
        print(f"pack={pack}: {done} SAEs done, wall {wall:.1f} s, training per worker "
              f"{per_worker:.1f} s, ratio {wall / per_worker:.2f}x (target <= 1.15x); the "
              f"analysis alone {analysis:.1f} s; load {load:.1f}")  # fmt: skip
    same = [
        _same_weights(tmp / "quick-pack1" / job.relative_to(tmp / "quick-pack4"), job)
        for job, s in layout.summaries(tmp / "quick-pack4")
        if s.get("status") == "done"
    ]
    print(f"pack=4 against pack=1: {sum(same)} of {len(same)} SAEs with identical weights")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--ks", type=int, nargs="*", default=[1, 2, 4, 8], help="none: skip part 1")
    p.add_argument("--data", nargs="+", default=["synthetic", "activations"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sweep", action="store_true", help="also run the quick sweep end to end")
    p.add_argument("--sweep-steps", type=int, default=None, help="default: the sweep's own")
    p.add_argument("--sweep-logger", default="offline", choices=["offline", "disabled"])
    p.add_argument("--job", help=argparse.SUPPRESS)  # the child process of in_new_process
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.job:
        return launched_job(args.job)
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
