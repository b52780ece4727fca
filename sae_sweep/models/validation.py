"""The checks of a config against its architecture, and `validate`, run at the entry point.

The penalty must mean something for the architecture, the loss path the config selects must
exist for it (its kernels), and its own rules (`Architecture.problems`, in its module) must
hold; with the checks that need no architecture (`sae_sweep/config/validation.py`), every
problem is reported at once, before anything is trained or written.
"""

from __future__ import annotations

from ..config.schema import Config, DType, MatmulDtype, PenaltyKind, SparsePath
from ..config.validation import ConfigError, config_problems
from .registry import Architecture, architecture


def validate(cfg: Config) -> None:
    """Raise ConfigError listing every problem of `cfg`, each with its keys and the fix."""
    problems = list(config_problems(cfg))
    try:
        arch = architecture(cfg.sae.kind)
    except ConfigError as unknown:
        problems.append(str(unknown))
    else:
        problems += [*_architecture_problems(cfg, arch), *_precision_problems(cfg, arch)]
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def _architecture_problems(cfg: Config, arch: Architecture):
    """The penalty must mean something for the architecture; then its own rules."""
    pen = cfg.penalty
    if PenaltyKind(pen.kind) not in arch.penalties:
        accepted = " or ".join(f"penalty={p.value}" for p in arch.penalties)
        why = f" (its L0 is set by {arch.l0_knob})" if arch.l0_knob else ""
        yield (
            f"penalty={PenaltyKind(pen.kind).value} has no meaning for sae={arch.name}{why}. "
            f"Fix: {accepted}"
        )
    if PenaltyKind(pen.kind) == PenaltyKind.none and pen.coefficient != 0:
        yield (
            f"penalty.coefficient={pen.coefficient} with penalty=none has no effect. "
            "Fix: penalty.coefficient=0"
        )
    tr = cfg.train
    if tr.l0_target is not None and (arch.l0_knob or PenaltyKind(pen.kind) == PenaltyKind.none):
        knob = arch.l0_knob or "its architecture"
        fix = f"{arch.l0_knob}={max(1, round(tr.l0_target))} " if arch.l0_knob else ""
        yield (
            f"train.l0_target={tr.l0_target:g} with sae={arch.name}: there is no lambda to "
            f"control, its L0 is set by {knob}. Fix: {fix}train.l0_target=null (a target "
            "sweep places it by the knob)"
        )
    if SparsePath(tr.sparse_path) == SparsePath.on and "sparse" not in arch.kernels:
        yield (
            f"train.sparse_path=on, but sae={arch.name} has no sparse kernel. "
            "Fix: train.sparse_path=auto or off"
        )
    yield from arch.problems(cfg)


def _precision_problems(cfg: Config, arch: Architecture):
    """Parameters and Adam moments are float32; lower precision is for the products only,
    and only where the loss path that runs can use it (training/precision.py)."""
    tr = cfg.train
    if DType(cfg.dtype) != DType.float32:
        why = {
            DType.bfloat16: "bfloat16 parameters and Adam moments lose every update smaller "
            "than 1/256 of a weight",
            DType.float16: "float16 overflows the squared error (above 65504) and the run "
            "stops as diverged",
        }[DType(cfg.dtype)]
        yield (
            f"dtype={DType(cfg.dtype).value}: {why}. The SAE trains in float32, its products "
            "at train.matmul_dtype. Fix: dtype=float32, and train.matmul_dtype=bfloat16 (or "
            "the default tf32) for fast products on a GPU"
        )
    fused = tr.fast_path and not tr.compile and bool(arch.kernels)
    if tr.autocast and fused:
        yield (
            f"train.autocast=true runs sae={arch.name} on the reference loss (autograd, about "
            "half the speed of the fused kernels) instead of its fused kernels. Fix: "
            "train.autocast=false and train.matmul_dtype=bfloat16 (bf16 products in the fused "
            "kernels), or train.fast_path=false to keep autocast on the reference loss"
        )
    if MatmulDtype(tr.matmul_dtype) != MatmulDtype.bfloat16:
        return
    if not (fused and "dense" in arch.kernels):
        where = (
            f"sae={arch.name} has no fused dense kernel"
            if tr.fast_path and not tr.compile
            else "train.fast_path=false or train.compile=true selects the reference loss"
        )
        yield (
            f"train.matmul_dtype=bfloat16 applies to the fused dense kernels, but {where}. "
            "Fix: train.matmul_dtype=tf32 (or float32), or train.autocast=true with "
            "train.fast_path=false for bf16 in the reference loss"
        )
    elif SparsePath(tr.sparse_path) == SparsePath.on:
        yield (
            "train.matmul_dtype=bfloat16 with train.sparse_path=on: the sparse kernels compute "
            "in float32 only (cuSPARSE's sampled product takes no bfloat16). Fix: "
            "train.sparse_path=auto or off (both stay on the dense kernels with bf16 products)"
        )
