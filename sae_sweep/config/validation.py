"""Cross-field checks of a config that need no architecture.

Each check names the offending keys and the fix: a meaningless combination of knobs must
fail loudly rather than be silently ignored (docs/design.md, "Losses"). The checks against
the config's architecture (its penalties, kernels and own rules) are in
`sae_sweep/models/validation.py`, whose `validate` runs both at the entry point, before
anything is trained or written.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .schema import Config, PenaltyKind, SparsePath

FLOAT32_MAX = torch.finfo(torch.float32).max

MAX_L0_FRACTION = 0.5
"""Default of the dense-regime limit (a sweep's `max_l0_fraction` option): a run whose
L0 is above this fraction of the input width d is dense, and the analysis leaves it out of
every verdict; a sweep's target L0s must stay below it (`target_limit_problems`)."""


class ConfigError(ValueError):
    """A configuration that cannot be trained as written."""


def config_problems(cfg: Config):
    """One message per problem (key and fix) that the config has whatever its architecture."""
    sae, pen, tr, rs = cfg.sae, cfg.penalty, cfg.train, cfg.resample
    yield from _range_problems(cfg)
    if pen.kind == PenaltyKind.decoder_norm and pen.decoder_norm_grad is None:
        yield "penalty.decoder_norm_grad must be `live` or `detached` for the decoder_norm penalty"
    if pen.kind == PenaltyKind.l1 and pen.decoder_norm_grad is not None:
        yield (
            f"penalty.decoder_norm_grad={pen.decoder_norm_grad.value} has no effect with "
            "penalty=l1 (no decoder norm in the penalty). Fix: penalty.decoder_norm_grad=null "
            "(or penalty=decoder_norm)"
        )
    if (
        tr.unit_norm_decoder
        and pen.kind == PenaltyKind.decoder_norm
        and not tr.allow_unit_norm_with_decoder_norm
    ):
        yield (
            "train.unit_norm_decoder=true with penalty=decoder_norm: with unit-norm columns the "
            "penalty is exactly l1. Fix: penalty=l1, or train.unit_norm_decoder=false, or set "
            "train.allow_unit_norm_with_decoder_norm=true if you mean it"
        )
    if tr.unit_norm_decoder and sae.decoder_init_norm != 1.0:
        yield (
            f"train.unit_norm_decoder=true but sae.decoder_init_norm={sae.decoder_init_norm}: the "
            "constraint renormalises columns to 1 at the first step. Fix: sae.decoder_init_norm=1.0"
        )
    if sae.d_sae is not None and sae.d_sae <= 0:
        yield f"sae.d_sae={sae.d_sae} must be positive"
    if sae.d_sae is None and sae.expansion_factor <= 0:
        yield f"sae.expansion_factor={sae.expansion_factor} must be positive"
    if sae.decoder_init_norm <= 0:
        yield f"sae.decoder_init_norm={sae.decoder_init_norm} must be positive"
    if pen.coefficient < 0:
        yield f"penalty.coefficient={pen.coefficient} must be >= 0"
    if pen.warmup_steps < 0 or pen.warmup_steps > tr.steps:
        yield f"penalty.warmup_steps={pen.warmup_steps} must lie in [0, train.steps={tr.steps}]"
    if tr.steps <= 0:
        yield f"train.steps={tr.steps} must be positive"
    if tr.batch_size <= 0:
        yield f"train.batch_size={tr.batch_size} must be positive"
    if tr.lr <= 0:
        yield f"train.lr={tr.lr} must be positive"
    if not 0.0 <= tr.lr_decay_fraction <= 1.0:
        yield f"train.lr_decay_fraction={tr.lr_decay_fraction} must lie in [0, 1]"
    if tr.lr_warmup_steps < 0 or tr.lr_warmup_steps + tr.lr_decay_fraction * tr.steps > tr.steps:
        yield (
            f"train.lr_warmup_steps={tr.lr_warmup_steps} and train.lr_decay_fraction="
            f"{tr.lr_decay_fraction} overlap: warm-up and decay must fit in train.steps={tr.steps}"
        )
    if len(tr.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in tr.adam_betas):
        yield f"train.adam_betas={list(tr.adam_betas)} must be two numbers in [0, 1)"
    if tr.grad_clip is not None and tr.grad_clip <= 0:
        yield f"train.grad_clip={tr.grad_clip} must be positive (or null for no clipping)"
    if tr.log_every <= 0:
        yield f"train.log_every={tr.log_every} must be positive"
    if tr.checkpoint_every < 0:
        yield f"train.checkpoint_every={tr.checkpoint_every} must be >= 0"
    yield from _speed_problems(tr)
    yield from _l0_control_problems(cfg)
    if rs.enabled:
        bad = [s for s in rs.at_steps if not 0 < s < tr.steps]
        if bad:
            yield f"resample.at_steps contains {bad}, outside (0, train.steps={tr.steps})"
        if rs.dead_window_steps <= 0:
            yield f"resample.dead_window_steps={rs.dead_window_steps} must be positive"
        if rs.loss_sample_batches <= 0:
            yield f"resample.loss_sample_batches={rs.loss_sample_batches} must be positive"
    yield from _data_problems(cfg.data)
    if cfg.logger.progress_every_s < 0:
        yield (
            f"logger.progress_every_s={cfg.logger.progress_every_s} must be >= 0 (0 = every "
            "step; to silence progress: logger.progress=off)"
        )
    if cfg.device not in ("auto", "cpu", "cuda", "mps") and not cfg.device.startswith("cuda:"):
        yield f"device={cfg.device!r} must be auto, cpu, cuda, cuda:N or mps"


def _l0_control_problems(cfg: Config):
    """train.l0_target: a positive target, a control phase that exists after the lambda
    warm-up, and a positive coefficient to start from (training/l0_control.py)."""
    tr, pen = cfg.train, cfg.penalty
    if not 0.0 < tr.l0_control_fraction <= 1.0:
        yield f"train.l0_control_fraction={tr.l0_control_fraction} must lie in (0, 1]"
    if tr.l0_target is None:
        return
    if tr.l0_target <= 0:
        yield f"train.l0_target={tr.l0_target} must be positive (an L0: active features per input)"
    if pen.coefficient <= 0:
        yield (
            f"train.l0_target with penalty.coefficient={pen.coefficient}: the controller "
            "scales the coefficient it starts from, and 0 stays 0. Fix: a positive "
            "penalty.coefficient (e.g. the variant's lambda at lambda_multiplier=1)"
        )
    end = int(round(tr.l0_control_fraction * tr.steps))
    if end <= pen.warmup_steps:
        yield (
            f"train.l0_target: the control phase ends at step {end} (train.l0_control_fraction="
            f"{tr.l0_control_fraction} x train.steps={tr.steps}), before the lambda warm-up "
            f"(penalty.warmup_steps={pen.warmup_steps}) is over, so lambda is never controlled. "
            "Fix: a larger train.l0_control_fraction or a shorter penalty.warmup_steps"
        )


def _range_problems(node, prefix: str = ""):
    """Every number must be finite and fit in float32 (bfloat16 has the same range): the
    training tensors are float32 at most, and a larger value overflows deep inside torch."""
    for f in dataclasses.fields(node):
        value, key = getattr(node, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from _range_problems(value, f"{key}.")
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if isinstance(v, float) and not (math.isfinite(v) and abs(v) <= FLOAT32_MAX):
                yield (
                    f"{key}={value} is outside the float32 range (|x| <= {FLOAT32_MAX:.3g}, "
                    "finite): the training tensors cannot hold it. Fix: a smaller value"
                )
                break


def _data_problems(data):
    """Sizes of the stored-activation sources (data=hf, data=activations, data=synthsaebench)
    must be positive."""
    kind = getattr(data, "kind", None)
    names = {
        "hf": ("n_tokens", "eval_sequences", "lm_batch_size", "shard_rows", "shuffle_buffer"),
        "activations": ("n_eval", "shuffle_buffer"),
        "synthsaebench": ("n_train", "n_eval", "sample_batch_size", "shard_rows", "shuffle_buffer"),
    }.get(kind, ())
    for name in names:
        if getattr(data, name) <= 0:
            yield f"data.{name}={getattr(data, name)} must be positive"
    if kind == "hf" and data.context_length < 2:
        yield f"data.context_length={data.context_length} must be at least 2"


def _speed_problems(tr):
    """The speed knobs: a sparse path needs the fast kernels; the threshold is a fraction."""
    if tr.cpu_small_op_threads < 0:
        yield f"train.cpu_small_op_threads={tr.cpu_small_op_threads} must be >= 0 (0 = all)"
    if not 0.0 < tr.sparse_density_threshold <= 1.0:
        yield f"train.sparse_density_threshold={tr.sparse_density_threshold} must lie in (0, 1]"
    sparse_on = SparsePath(tr.sparse_path) == SparsePath.on
    if sparse_on and (not tr.fast_path or tr.compile or tr.autocast):
        yield (
            "train.sparse_path=on needs the fast kernels, but train.fast_path=false, "
            "train.compile=true or train.autocast=true selects the reference loss. Fix: "
            "train.sparse_path=auto/off, or train.fast_path=true with compile and autocast off"
        )


def target_limit_problems(
    targets, tolerance: float, d: int | None, max_l0_fraction: float = MAX_L0_FRACTION
):
    """The target L0s that cannot stay below the dense limit. A target counts as hit anywhere
    up to target x (1 + tolerance), which must not pass max_l0_fraction x d: runs above it
    are dense and never enter a verdict. Nothing to check while d is unknown (a model's
    width before it loads); non-positive targets are `sweep.planning.targets.validate_targets`' to
    report."""
    if not d or d <= 0 or not 0 <= tolerance < 1:
        return
    limit = max_l0_fraction * d
    largest = limit / (1 + tolerance)
    ts = sorted({float(t) for t in targets if float(t) > 0})
    over = [t for t in ts if t * (1 + tolerance) > limit * (1 + 1e-9)]
    if not over:
        return
    fixed = [t for t in ts if t not in over]
    if math.floor(largest) >= 1 and math.floor(largest) not in fixed:
        fixed.append(math.floor(largest))
    yield (
        f"l0_targets {', '.join(f'{t:g}' for t in over)} cannot stay below the dense limit on "
        f"d = {d}: target x (1 + l0_tolerance={tolerance:g}) must be at most max_l0_fraction="
        f"{max_l0_fraction:g} x d = {limit:g} (runs "
        f"above it are dense and never enter a verdict), so the largest allowed target is "
        f"{largest:.4g}. Fix: targets at most that, "
        f"e.g. 'l0_targets=[{','.join(f'{t:g}' for t in fixed)}]', or a larger data.d"
    )
