"""Does the input pipeline keep ahead of the SAE step it feeds? Rows/s of each source, against
the rows/s of one training step, in one process.

    python bench/loader.py                                  # d=768, batch 4096, on the GPU if any
    python bench/loader.py --step-ms 3.1                    # the step time bench/step.py printed
    python bench/loader.py --rows 262144 --d-sae 3072 --device cpu

Sources, each read as the training loop reads it (`train_batch(step, batch)`, ending on the
device, timed to a device sync), over `--epochs` whole epochs:
- cached activations at d = `--d` in float32 and in bfloat16 (the `.npy` shards of the
  activation cache, written here into a temporary folder; `--shuffle-buffer` rows a window,
  prepared by the background thread of data/prefetch.py);
- synthetic data (`data=synthetic`, drawn on the device).
The step: `--step-ms` if given (e.g. bench/step.py on the target GPU), else measured here:
the real training step (`training.step.Stepper`) of a `--kind` SAE with `--d-sae` latents on
one fixed batch. The last table runs the loop as a job does (read a batch, step on it) and
divides its rows/s by the step's alone: 1.00 = the input pipeline costs the step nothing.
Figures assume the shards sit in the page cache (they were just written): a cold read from
shared storage is slower, which the background thread hides as long as one window's read
takes less time than the steps that consume the previous one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sae_sweep.config.schema import (  # noqa: E402
    AuxDecoder,
    Config,
    LoggerConfig,
    NormGrad,
    PenaltyConfig,
    PenaltyKind,
    SparsePath,
    SyntheticDataConfig,
    TrainConfig,
)
from sae_sweep.data import SyntheticData  # noqa: E402
from sae_sweep.data.reader import Rows, Shard, ShuffledActivations  # noqa: E402
from sae_sweep.models import architecture, build_sae  # noqa: E402
from sae_sweep.training.step import Stepper, make_optimizer  # noqa: E402


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    device = torch.device(args.device)
    print(f"device: {_device_name(device)}; d={args.d}, batch {args.batch}, "
          f"{args.rows:,} cached rows, shuffle buffer {args.shuffle_buffer:,}")  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        sources = {
            "cached float32": _cached(Path(tmp), args, np.float32, device),
            "cached bfloat16": _cached(Path(tmp), args, "bfloat16", device),
            "synthetic": _synthetic(args, device),
        }
        steps = max(1, args.epochs * args.rows // args.batch)
        loader = {name: _rows_per_s(src, steps, args.batch, device)
                  for name, src in sources.items()}  # fmt: skip
        if args.step_ms is not None:
            step_s, origin, step = args.step_ms / 1000, "given (--step-ms)", None
        else:
            step = _stepper(args, device)
            step_s = _time(lambda: step(None), args.step_repeats, device)
            origin = f"measured here: {args.kind}, d_sae={args.d_sae}, dense path, fp32"
        step_rows = args.batch / step_s
        print(f"\nSAE step: {step_s * 1000:.2f} ms = {step_rows:,.0f} rows/s ({origin})")
        print("\n| source | loader rows/s | step rows/s | loader / step |\n|---|---|---|---|")
        for name, rate in loader.items():
            print(f"| {name} | {rate:,.0f} | {step_rows:,.0f} | {rate / step_rows:.2f} |")
        if step is not None:
            print("\n| source | loop rows/s (read + step) | step alone | loop / step |")
            print("|---|---|---|---|")
            for name, src in sources.items():
                loop_s = _loop_s(src, step, steps + 1, args, device)
                print(f"| {name} | {args.batch / loop_s:,.0f} | {step_rows:,.0f} | "
                      f"{step_s / loop_s:.2f} |")  # fmt: skip
        for src in sources.values():
            with contextlib.suppress(AttributeError):
                src.close()
    print(
        "\nassumption: the step rate above is the one the loader has to feed; loader / step "
        "> 1 means the loader keeps ahead (the loader's thread and the step share the "
        f"machine's {os.cpu_count()} cores; on a GPU the step leaves them to the loader)."
    )


def _cached(tmp: Path, args, dtype, device) -> ShuffledActivations:
    """`args.rows` rows of d in shards like the activation cache's, train + a small eval."""
    folder = tmp / str(dtype)
    folder.mkdir()
    rng = np.random.default_rng(0)
    shards, shard_rows = [], args.shard_rows
    for i, start in enumerate(range(0, args.rows, shard_rows)):
        n = min(shard_rows, args.rows - start)
        x = torch.from_numpy(rng.standard_normal((n, args.d), dtype=np.float32))
        data = x.bfloat16().view(torch.int16).numpy() if dtype == "bfloat16" else x.numpy()
        np.save(folder / f"shard_{i:05d}.npy", data)
        shards.append(Shard(folder / f"shard_{i:05d}.npy", bfloat16=dtype == "bfloat16"))
    n_eval = min(4096, args.rows // 10)
    train, held_out = Rows(shards, 0, args.rows - n_eval), Rows(shards, args.rows - n_eval)
    return ShuffledActivations(train, held_out, run_seed=0, device=device,
                               buffer=args.shuffle_buffer, pin_memory=True)  # fmt: skip


def _synthetic(args, device) -> SyntheticData:
    cfg = SyntheticDataConfig(d=args.d, n_features=4 * args.d, mean_active=32, n_eval=16)
    return SyntheticData(cfg, run_seed=0, device=device)


def _rows_per_s(src, steps: int, batch: int, device) -> float:
    src.train_batch(0, batch)  # the first window has nobody to read it ahead
    _sync(device)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        src.train_batch(step, batch)
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def _loop_s(src, step, first: int, args, device) -> float:
    """Median seconds of one loop iteration: read batch `first + i`, step on it (steps past
    those read before, so the windows are read anew)."""
    position = iter(range(first, first + args.step_repeats + 2))
    return _time(lambda: step(src.train_batch(next(position), args.batch)), args.step_repeats,
                 device)  # fmt: skip


def _stepper(args, device):
    """One training step of the SAE the loader feeds, on a fixed batch (or the one given)."""
    arch = architecture(args.kind)
    options = {"aux_decoder": AuxDecoder.frozen} if args.kind == "gated" else {}
    if arch.l0_knob == "sae.k":
        options["k"] = max(1, args.d_sae // 100)
    pen = PenaltyKind.decoder_norm if PenaltyKind.decoder_norm in arch.penalties else None
    pen = pen or arch.penalties[0]
    cfg = Config(
        sae=arch.config(d_sae=args.d_sae, **options),
        penalty=PenaltyConfig(
            kind=pen,
            coefficient=1.0,
            decoder_norm_grad=NormGrad.live if pen.value == "decoder_norm" else None,
        ),  # fmt: skip
        data=SyntheticDataConfig(d=args.d),
        logger=LoggerConfig(),
        train=TrainConfig(batch_size=args.batch, sparse_path=SparsePath.off),
        device=str(device),
    )
    sae = build_sae(cfg.sae, d_in=args.d, seed=0).to(device)
    stepper = Stepper(cfg, sae, make_optimizer(sae, 1e-6, cfg.train.adam_betas))
    fixed = torch.randn(args.batch, args.d, device=device)

    def step(batch):
        x = fixed if batch is None else batch.to(device, torch.float32)
        stepper.step(x, 1e-6, 1.0)

    return step


def _time(fn, repeats: int, device) -> float:
    """Median seconds of fn() over `repeats` calls, after 2 warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores), no GPU used"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--d", type=int, default=768, help="activation dimension")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--rows", type=int, default=1 << 20, help="cached training rows per dtype")
    p.add_argument(
        "--shard-rows", type=int, default=1 << 18, help="rows per shard (data.shard_rows)"
    )
    p.add_argument("--shuffle-buffer", type=int, default=1 << 17, help="data.shuffle_buffer")
    p.add_argument("--epochs", type=int, default=2, help="epochs read per source")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--step-ms", type=float, default=None, help="ms per SAE step (default: measured here)"
    )
    p.add_argument("--kind", default="gated", help="SAE whose step is measured")
    p.add_argument("--d-sae", type=int, default=32 * 768, help="latents of the measured SAE")
    p.add_argument("--step-repeats", type=int, default=20, help="timed steps (median)")
    p.add_argument("--tmp", default=None, help="folder for the shards (default: the temp dir)")
    return p


if __name__ == "__main__":
    sys.exit(main())
