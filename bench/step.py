"""Time one training step against its matrix-product bound (docs/design.md, "Performance"),
in one process.

For each SAE kind and loss path it prints the median time of the real training step
(`training.step.Stepper.step`: loss, backward, clip, Adam, as the loop runs it), the median
time of the bare chain of matrix products that step needs (same shapes, preallocated
outputs, timed in the same rounds), their ratio (1.0 = nothing but the products),
activations/s, L0 and the process's peak memory. Items take turns step by step, so a
machine that gets busier mid-run slows all of them alike.

    python bench/step.py                                   # dense path, d=512, M=4096, B=4096
    python bench/step.py --paths dense sparse --density 0.01
    python bench/step.py --kinds gated --paths reference dense --compare
    python bench/step.py --kinds topk batchtopk --paths sparse   # k = 1% of d_sae by default
    python bench/step.py --device cuda --matmul-dtype bfloat16    # bf16 products (tf32 default)
    python bench/step.py --memory --d-sae 32768 131072 --d-in 768  # peak memory, no timing

`--memory` runs each item alone, in a fresh process, for 2 steps, one dictionary size after
another, and prints its peak memory above what was allocated before it was built (its
parameters, Adam state, gradients and every temporary): on CUDA
`torch.cuda.max_memory_allocated`, exact; on a CPU the peak resident set size (Linux VmHWM,
reset through /proc/self/clear_refs), which also counts allocator slack. `workspace` is the
bytes of the (B, M) buffers the fused kernels keep from step to step.

TopK and BatchTopK have only the sparse path: their bound is the one dense product they keep,
the encoder's (`--dead` marks a fraction of latents dead, so that AuxK runs too). The paths
an architecture does not have are skipped (its registry entry lists its kernels).
`--compare` also times SAELens's GatedTrainingSAE and dictionary_learning's GatedSAETrainer
(when importable; an optional extra, never a dependency) on the same shapes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch

from sae_sweep.config.schema import (
    AuxDecoder,
    Config,
    LoggerConfig,
    MatmulDtype,
    NormGrad,
    PenaltyConfig,
    PenaltyKind,
    SparsePath,
    SyntheticDataConfig,
    TrainConfig,
)
from sae_sweep.models import TopKSAE, architecture, build_sae
from sae_sweep.training.precision import products_dtype, set_matmul_precision
from sae_sweep.training.step import LossPath, Stepper, make_optimizer

PATHS = {
    "reference": {"fast_path": False},
    "compiled": {"compile": True},
    "dense": {"fast_path": True, "sparse_path": SparsePath.off},
    "sparse": {"fast_path": True, "sparse_path": SparsePath.on},
}


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    device = torch.device(args.device)
    precision = set_matmul_precision(MatmulDtype(args.matmul_dtype), device)
    if args.memory:
        return _memory_report(args, device, precision)
    args.d_sae = args.d_sae[0]
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.d_in, device=device)
    print(
        f"device={device} ({_device_name(device)}), torch {torch.__version__}, "
        f"threads={torch.get_num_threads()}; d_in={args.d_in} d_sae={args.d_sae} "
        f"batch={args.batch} fp32 Adam, {precision} products; penalty={args.penalty} "
        f"aux={args.aux}; {args.rounds} rounds x {args.steps} steps, medians"
    )
    items: dict[str, Callable[[], None]] = {}
    bounds: dict[str, str] = {}
    for kind in args.kinds:
        arch = architecture(kind)
        if arch.l0_knob is None:
            chain = f"{kind}/matmul-chain"
            low = products_dtype(MatmulDtype(args.matmul_dtype))
            items[chain] = _matmul_chain(kind, args.aux, x, args.d_sae, low)
        else:  # L0 set by k: the encoder product is the only dense one
            chain = "encoder-product"
        for path in args.paths:
            if path in ("dense", "sparse") and path not in arch.kernels:
                print(f"{kind}: no {path} kernel, skipped")
                continue
            items[f"{kind}/{path}"] = _trainer_step(args, kind, path, x)
            bounds[f"{kind}/{path}"] = chain
    if "sparse" in args.paths or "encoder-product" in bounds.values():
        items["encoder-product"] = _encoder_product(x, args.d_sae)
    if args.compare:
        for name, fn in _peers(args, x).items():
            items[name], bounds[name] = fn, "gated/matmul-chain"
    times = _time_all(items, args.rounds, args.steps, device)

    head = f"{'item':<28}{'median s':>10}{'rounds (s)':>26}{'x bound':>9}{'act/s':>11}{'L0':>8}"
    print("\n" + head)
    for name, ts in times.items():
        med = statistics.median(t for r in ts for t in r)
        per_round = " ".join(f"{statistics.median(r):.3f}" for r in ts)
        chain = bounds.get(name)
        ratio = f"{_median(times[chain]) / med:.2f}" if chain in times else ""
        counts = getattr(items[name], "l0", None)
        l0 = f"{counts.sum().item() / args.batch:.1f}" if counts is not None else ""
        print(f"{name:<28}{med:>10.3f}{per_round:>26}{ratio:>9}{args.batch / med:>11.0f}{l0:>8}")
    if "encoder-product" in times:
        enc = _median(times["encoder-product"])
        for kind in args.kinds:
            if f"{kind}/sparse" in times:
                ratio = _median(times[f"{kind}/sparse"]) / enc
                print(f"{kind}/sparse step = {ratio:.2f} x one dense encoder product")
    for peer in ("saelens/gated", "dictionary_learning/gated"):
        if peer in times:
            for path in (p for p in args.paths if f"gated/{p}" in times):
                ours = _median(times[f"gated/{path}"])
                print(f"{peer} / gated/{path} = {_median(times[peer]) / ours:.2f}x")
    print(f"\n'x bound' = matmul-chain median / item median (1.0 = only the products).\n"
          f"peak memory: {_peak_memory_mb(device):.0f} MiB (process peak, all items).")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--d-in", type=int, default=512)
    p.add_argument(
        "--d-sae", type=int, nargs="+", default=[4096], help="several only with --memory"
    )
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=20, help="timed steps per round and item")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--kinds", nargs="+", default=["standard", "gated"])
    p.add_argument("--paths", nargs="+", default=["dense"], choices=list(PATHS))
    p.add_argument("--penalty", default="decoder_norm", choices=["l1", "decoder_norm"])
    p.add_argument("--aux", default="frozen", choices=["frozen", "trainable"])
    p.add_argument(
        "--density",
        type=float,
        default=None,
        help="set the encoder biases so that L0 = density * d_sae (default: as initialised)",
    )
    p.add_argument("--k", type=int, default=None, help="TopK/BatchTopK k (default: d_sae / 100)")
    p.add_argument("--dead", type=float, default=0.0, help="TopK: fraction of latents dead")
    p.add_argument("--compare", action="store_true", help="also time SAELens, dictionary_learning")
    p.add_argument(
        "--matmul-dtype", default="tf32", choices=[m.value for m in MatmulDtype],
        help="train.matmul_dtype of the steps and their bound (tf32: float32 on a CPU)",
    )  # fmt: skip
    p.add_argument(
        "--memory", action="store_true", help="peak memory of each item per --d-sae, no timing"
    )
    return p


def _config(args, kind: str, path: str) -> Config:
    arch = architecture(kind)
    options = {"aux_decoder": AuxDecoder(args.aux)} if kind == "gated" else {}
    if arch.l0_knob == "sae.k":
        options["k"] = args.k or max(1, args.d_sae // 100)
    pen = PenaltyKind(args.penalty) if PenaltyKind(args.penalty) in arch.penalties else None
    pen = pen or arch.penalties[0]
    return Config(
        sae=architecture(kind).config(d_sae=args.d_sae, **options),
        penalty=PenaltyConfig(
            kind=pen,
            coefficient=1.0,
            decoder_norm_grad=NormGrad.live if pen == PenaltyKind.decoder_norm else None,
        ),
        data=SyntheticDataConfig(d=args.d_in),
        logger=LoggerConfig(),
        train=TrainConfig(
            batch_size=args.batch, grad_clip=1.0, matmul_dtype=args.matmul_dtype, **PATHS[path]
        ),
        device=args.device,
    )


def _trainer_step(args, kind: str, path: str, x: torch.Tensor):
    cfg = _config(args, kind, path)
    sae = build_sae(cfg.sae, d_in=args.d_in, seed=0).to(x.device)
    if args.density is not None and architecture(kind).l0_knob is None:
        _set_density_(sae, x, args.density)
    if args.dead and isinstance(sae, TopKSAE):  # AuxK's state
        n_dead = round(args.dead * sae.d_sae)
        sae.tokens_since_fired[:n_dead] = sae.dead_tokens
    optimizer = make_optimizer(sae, 1e-6, cfg.train.adam_betas)  # tiny lr: density holds
    stepper = Stepper(cfg, sae, optimizer)
    assert stepper.path == LossPath(path), (stepper.path, path)

    def step():
        out = stepper.step(x, 1e-6, 1.0)
        step.l0 = out.counts  # read after timing: no sync inside the timed region

    step.workspace = stepper.workspace
    return step


@torch.no_grad()
def _set_density_(sae, x: torch.Tensor, density: float) -> None:
    """Encoder biases at each feature's (1 - density) quantile of its pre-activation on x."""
    W = sae.encoder_weight
    h = (x - sae.b_dec) @ W.T  # (B, M)
    k = max(1, round((1 - density) * x.shape[0]))
    thresholds = h.kthvalue(k, dim=0).values
    # every per-feature bias (gated: b_gate and b_mag, so pi_mag = pi_gate and f fires exactly
    # where the gate opens; standard: b_enc)
    for name, (param, _) in sae.feature_params().items():
        if name.startswith("b_"):
            param.copy_(-thresholds)


def _matmul_chain(kind: str, aux: str, x: torch.Tensor, M: int, dtype=None):
    """The matrix products of one step, alone: gated 7 (8 with a trainable aux decoder),
    standard 5; every output preallocated, inputs of the right shapes (in `dtype`, the
    products dtype, when it is set)."""
    B, d = x.shape
    dev, dtype = x.device, dtype or x.dtype
    x = x.to(dtype)
    W = torch.randn(M, d, device=dev, dtype=dtype) * 0.05  # encoder (M, d)
    D = torch.randn(d, M, device=dev, dtype=dtype) * 0.05  # decoder (d, M)
    A = torch.randn(B, M, device=dev, dtype=dtype).relu_()  # a (B, M) activation
    A2 = torch.randn(B, M, device=dev, dtype=dtype).relu_()
    bd, bm = torch.empty(B, d, device=dev, dtype=dtype), torch.empty(B, M, device=dev, dtype=dtype)
    dm, md = torch.empty(d, M, device=dev, dtype=dtype), torch.empty(M, d, device=dev, dtype=dtype)
    gated, trainable = kind == "gated", aux == "trainable"

    def run():
        torch.mm(x, W.t(), out=bm)  # encoder
        torch.mm(A, D.t(), out=bd)  # decoder
        if gated:
            torch.mm(A2, D.t(), out=bd)  # aux decoder
        torch.mm(x.t(), A, out=dm)  # dW_dec
        if gated and trainable:
            torch.mm(x.t(), A2, out=dm)  # dW_dec from the aux term
        torch.mm(x, D, out=bm)  # dL/df
        if gated:
            torch.mm(x, D, out=bm)  # dL/dg
        torch.mm(A.t(), x, out=md)  # dW_enc / dW_gate

    return run


def _encoder_product(x: torch.Tensor, M: int):
    W = torch.randn(M, x.shape[1], device=x.device)
    out = torch.empty(x.shape[0], M, device=x.device)
    return lambda: torch.mm(x, W.t(), out=out)


def _memory_report(args, device: torch.device, precision: str) -> None:
    """Peak memory of each kind/path step, alone, at every --d-sae (2 steps each)."""
    measure = "max_memory_allocated" if device.type == "cuda" else "peak RSS delta (VmHWM)"
    print(
        f"device={device} ({_device_name(device)}), torch {torch.__version__}; d_in={args.d_in} "
        f"batch={args.batch} fp32 Adam, {precision} products; memory = {measure} above the "
        "memory before the item was built"
    )
    print(f"\n{'item':<22}{'d_sae':>8}{'peak MiB':>11}{'workspace MiB':>15}{'(B, M) fp32':>13}")
    # each item in a fresh process: memory another item freed cannot hide its peak
    spawn = multiprocessing.get_context("spawn")
    for d_sae in args.d_sae:
        for kind in args.kinds:
            for path in args.paths:
                if path in ("dense", "sparse") and path not in architecture(kind).kernels:
                    continue
                with spawn.Pool(1) as pool:
                    peak, workspace = pool.apply(_peak_of, (args, kind, path, d_sae))
                one = args.batch * d_sae * 4 / 2**20
                print(f"{kind + '/' + path:<22}{d_sae:>8}{peak:>11.0f}{workspace:>15.0f}"
                      f"{one:>13.0f}", flush=True)  # fmt: skip
    print("\n'(B, M) fp32' = one float32 buffer of the batch's pre-activations, for scale.")


def _peak_of(args, kind: str, path: str, d_sae: int) -> tuple[float, float]:
    """(peak MiB above the memory before the item was built, its workspace's MiB)."""
    device = torch.device(args.device)
    set_matmul_precision(MatmulDtype(args.matmul_dtype), device)
    # a tiny step first: the libraries' lazy set-up and code pages are not the item's memory
    tiny = argparse.Namespace(**{**vars(args), "d_sae": 64, "batch": 8, "density": None})
    warm = _trainer_step(tiny, kind, path, torch.randn(8, args.d_in, device=device))
    warm(), warm()
    del warm
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _reset_peak_rss()
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.d_in, device=device)
    step = _trainer_step(argparse.Namespace(**{**vars(args), "d_sae": d_sae}), kind, path, x)
    for _ in range(2):  # the first allocates the workspace and Adam's state
        step()
    _sync(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        peak = _status_kib("VmHWM") * 1024 - before
    return peak / 2**20, step.workspace.nbytes() / 2**20


def _reset_peak_rss() -> int:
    """Reset this process's peak RSS to its current RSS (Linux); returns the RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _peers(args, x: torch.Tensor) -> dict[str, Callable[[], None]]:
    peers = {}
    try:
        from sae_lens import GatedTrainingSAE, GatedTrainingSAEConfig
        from sae_lens.saes.sae import TrainStepInput

        sae = GatedTrainingSAE(
            GatedTrainingSAEConfig(d_in=args.d_in, d_sae=args.d_sae, device=args.device)
        )
        opt = torch.optim.Adam(sae.parameters(), lr=1e-6)
        step_in = TrainStepInput(
            sae_in=x, coefficients={"l1": 1.0}, dead_neuron_mask=None,
            n_training_steps=0, is_logging_step=False,
        )  # fmt: skip

        def saelens_step():
            opt.zero_grad()
            out = sae.training_forward_pass(step_in)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
            opt.step()

        peers["saelens/gated"] = saelens_step
    except ImportError as exc:
        print(f"--compare: SAELens not installed, skipped ({exc})")
    try:
        from dictionary_learning.trainers.gdm import GatedSAETrainer

        trainer = GatedSAETrainer(
            steps=10**6, activation_dim=args.d_in, dict_size=args.d_sae, layer=0,
            lm_name="bench", lr=1e-6, warmup_steps=0, sparsity_warmup_steps=None,
            device=args.device, wandb_name=None,
        )  # fmt: skip
        peers["dictionary_learning/gated"] = lambda: trainer.update(1000, x)
    except ImportError as exc:
        print(f"--compare: dictionary_learning not installed, skipped ({exc})")
    return peers


def _time_all(items, rounds: int, steps: int, device: torch.device):
    """{name: [[step seconds] per round]}; 2 warm-up calls per item. Items take turns step by
    step, so a machine whose load changes mid-run slows every item alike."""
    for fn in items.values():
        for _ in range(2):
            fn()
    times = {name: [[] for _ in range(rounds)] for name in items}
    for r in range(rounds):
        for _ in range(steps):
            for name, fn in items.items():
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                times[name][r].append(time.perf_counter() - t0)
        done = ", ".join(f"{n} {statistics.median(ts[r]):.3f}" for n, ts in times.items())
        print(f"round {r + 1}/{rounds} (median s): {done}", flush=True)
    return times


def _median(rounds) -> float:
    return statistics.median(t for r in rounds for t in r)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, no GPU used ({torch.cuda.device_count()} visible)"


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


if __name__ == "__main__":
    sys.exit(main())
