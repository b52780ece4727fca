"""Structured-config schema: one dataclass per `conf/` group.

Every YAML in `conf/<group>/` starts from the schema of its group (`defaults: [<schema>]`,
stored in Hydra's ConfigStore by `sae_sweep.config_store`), so a misspelt key in a YAML file or
on the command line is an error, not a silent default. The docstring under each field is its
one-line documentation (also in docs/configuration.md). Choices are Enums because OmegaConf 2.3
does not accept `Literal`. The architectures are not listed here: each extends `SAEConfig` in
its module under models/, and the registry (models/registry.py) is the one place that names them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING


class PenaltyKind(str, Enum):
    l1 = "l1"
    decoder_norm = "decoder_norm"
    l0 = "l0"  # JumpReLU: lambda * number of active features, straight-through gradient
    none = "none"  # TopK, BatchTopK: L0 is set by sae.k, there is nothing to penalise


class AuxDecoder(str, Enum):
    """Decoder used by the gated auxiliary reconstruction term."""

    frozen = "frozen"  # stop-gradient copies of W_dec, b_dec (the paper's loss)
    trainable = "trainable"  # the live parameters


class NormGrad(str, Enum):
    """Whether gradients flow through ||W_dec[:, i]|| in the decoder_norm penalty."""

    live = "live"
    detached = "detached"


class SparsePath(str, Enum):
    """When the training step uses the sparse kernels (only the encoder product dense)."""

    auto = "auto"  # from the first log at which L0 <= sparse_density_threshold * d_sae
    off = "off"
    on = "on"


class L0Placement(str, Enum):
    """How a target-L0 sweep places a variant on its targets (sweep/planning/chains.py)."""

    control = "control"  # one round: each job steers its own lambda (train.l0_target)
    rounds = "rounds"  # the lambda grid, then refinement rounds


class L0LambdaPer(str, Enum):
    """Whose lambda refinement rounds place on a target (sweep/planning/chains.py)."""

    seed = "seed"  # every seed its own lambda: each seed lands within l0_tolerance
    variant = "variant"  # one lambda for a variant's seeds: their mean lands, seeds spread


class LoggerMode(str, Enum):
    online = "online"
    offline = "offline"
    disabled = "disabled"


class LoggerFallback(str, Enum):
    none = "none"
    offline = "offline"


class ProgressMode(str, Enum):
    auto = "auto"
    bar = "bar"
    lines = "lines"
    off = "off"


class DType(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class MatmulDtype(str, Enum):
    """Precision of the training step's matrix products; parameters, Adam moments, sums and
    the loss stay float32 whatever this says (training/precision.py)."""

    float32 = "float32"  # strict IEEE float32 products
    tf32 = "tf32"  # TF32 tensor-core products on CUDA (float32 accumulation); CPU: float32
    bfloat16 = "bfloat16"  # bfloat16 inputs, float32 accumulation (the fused dense kernels)


@dataclass
class SAEConfig:
    """What every architecture shares; each architecture's module extends it with its own
    knobs (`GatedSAEConfig`, `TopKSAEConfig`, ...), and `conf/sae/<name>.yaml` starts from
    that schema, so `sae.k` on a gated SAE is an error, not a silent default."""

    kind: str = MISSING
    """Architecture: a name registered in `sae_sweep.models` (built in: `standard`, `gated`,
    `topk`, `batchtopk`, `matryoshka_batchtopk`, `jumprelu`)."""
    expansion_factor: float = 8.0
    """Dictionary size as a multiple of the input dimension d (ignored when d_sae is set)."""
    d_sae: int | None = None
    """Dictionary size M; overrides expansion_factor when set."""
    decoder_init_norm: float = 0.1
    """Norm of each decoder column at init (1.0 for the unit-norm recipe, ~0.1 for Anthropic's)."""
    encoder_init_transpose: bool = True
    """Initialise the encoder (gated: W_gate) as the decoder transpose, at init only."""


@dataclass
class PenaltyConfig:
    kind: PenaltyKind = MISSING
    """Sparsity penalty: `l1` (sum g_i), `decoder_norm` (sum g_i ||W_dec[:, i]||), `l0`
    (JumpReLU: number of active features) or `none` (TopK, BatchTopK). Default: the one
    `conf/penalty/default_for/<sae.kind>.yaml` names."""
    coefficient: float = MISSING
    """Lambda, the sparsity coefficient (the frontier axis of a sweep; 0 with `none`)."""
    decoder_norm_grad: NormGrad | None = None
    """decoder_norm only: gradient through the decoder norms, `live` or `detached`."""
    warmup_steps: int = 0
    """Lambda rises linearly from 0 over this many steps (0 = no warm-up)."""


@dataclass
class TrainConfig:
    steps: int = 2000
    """Optimizer steps."""
    batch_size: int = 1024
    """Activations (tokens) per step."""
    lr: float = 3e-3
    """Adam learning rate (peak)."""
    lr_warmup_steps: int = 0
    """Linear LR warm-up from 0 over this many steps."""
    lr_decay_fraction: float = 0.2
    """LR decays linearly to 0 over this final fraction of training (0 = constant)."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam (beta1, beta2); the Gated SAE paper used (0, 0.999)."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this value (null = no clipping)."""
    unit_norm_decoder: bool = False
    """Keep decoder columns at unit norm (project out parallel gradient, renormalise after step)."""
    allow_unit_norm_with_decoder_norm: bool = False
    """Allow unit_norm_decoder together with the decoder_norm penalty (then it equals l1)."""
    normalize_input: bool = True
    """Scale inputs by one dataset-wide scalar so that E||x|| = sqrt(d); the scalar is recorded."""
    norm_estimate_batches: int = 8
    """Training batches used to estimate the normalisation scalar before training."""
    log_every: int = 100
    """Read the on-device metric accumulators and log `train/...` every N steps."""
    dead_window_tokens: int = 200_000
    """A feature is dead during training if it has not fired over this many recent tokens."""
    checkpoint_every: int = 1000
    """Write a resumable checkpoint every N steps (0 = only at the end)."""
    eval_batch_size: int = 4096
    """Batch size for the held-out evaluation."""
    fast_path: bool = True
    """Fused loss+gradient kernels (same loss and gradients as the reference `sae_loss`)."""
    sparse_path: SparsePath = SparsePath.auto
    """Sparse kernels at low density: `auto` (switch at the threshold), `off` or `on`."""
    sparse_density_threshold: float = 0.02
    """`auto` goes sparse once the logged L0 is at most this fraction of d_sae."""
    compile: bool = False
    """Run the reference loss under `torch.compile` instead of the fused kernels."""
    autocast: bool = False
    """bf16 autocast of the reference loss: only where it runs (train.fast_path=false,
    train.compile, JumpReLU); on the fused kernels use train.matmul_dtype=bfloat16."""
    matmul_dtype: MatmulDtype = MatmulDtype.tf32
    """Matrix products: `tf32` (CUDA: TF32 tensor cores; CPU: float32), `float32` (strict) or
    `bfloat16` (fused dense kernels: bf16 inputs, fp32 accumulation; parameters stay fp32)."""
    pin_memory: bool = True
    """CUDA only: the stored-activation reader stages each shuffled window in pinned host
    memory and copies it to the GPU asynchronously, on a side stream (off: a blocking copy).
    Synthetic batches are drawn on the GPU and need no copy."""
    cpu_small_op_threads: int = 1
    """CPU only: threads for the optimizer update and the sparse path's index work (0 = all)."""
    l0_target: float | None = None
    """Steer lambda to this training L0 during the control phase, then freeze it (penalty-based
    SAEs: standard, gated, JumpReLU; TopK-like SAEs set L0 with `sae.k`). Control starts from
    penalty.coefficient once the lambda warm-up is over (training/l0_control.py); null = a
    fixed lambda."""
    l0_control_fraction: float = 0.9
    """With train.l0_target: lambda is controlled until this fraction of train.steps, then
    frozen for the rest of training."""


@dataclass
class ResampleConfig:
    enabled: bool = False
    """Resample dead features (Anthropic, 'Towards Monosemanticity')."""
    at_steps: list[int] = field(default_factory=lambda: [250, 500, 750, 1000])
    """Steps at which dead features are resampled."""
    dead_window_steps: int = 250
    """A feature is resampled if it has not fired over this many preceding steps."""
    loss_sample_batches: int = 4
    """Training batches whose per-input squared error weights the choice of new directions."""
    encoder_scale: float = 0.2
    """New encoder rows = normalised input x this x the mean alive encoder-row norm."""


@dataclass
class DataConfig:
    kind: str = MISSING
    """Activation source: `synthetic` (built in, with ground truth), `hf` (a live Hugging Face
    model, through the activation cache), `activations` (files computed elsewhere) or
    `synthsaebench` (a SAELens SyntheticModel, with ground truth, through the cache)."""


@dataclass
class SyntheticDataConfig(DataConfig):
    kind: str = "synthetic"
    d: int = 64
    """Activation dimension."""
    n_features: int = 256
    """Number of ground-truth features G (G > d: superposition)."""
    mean_active: float = 5.0
    """Expected number of active features per sample."""
    power_law_exponent: float = 0.5
    """Firing probability of feature i decays as (i + 1) ** -exponent."""
    correlation: float = 0.3
    """Strength of correlated firing (low-rank Gaussian copula; 0 = independent firing)."""
    correlation_rank: int = 16
    """Rank of the copula's correlation factor."""
    noise_std: float = 0.0
    """Standard deviation of isotropic Gaussian noise added to each activation."""
    n_eval: int = 16384
    """Held-out evaluation activations (never used for training)."""
    seed: int = 0
    """Seed of the data-generating process (feature directions, frequencies, correlations)."""


@dataclass
class HFDataConfig(DataConfig):
    kind: str = "hf"
    model: str = MISSING
    """`transformers` model: hub name (e.g. `gpt2`) or local folder."""
    site: str = MISSING
    """Hooked module, by name in `model.named_modules()` (e.g. `transformer.h.6` for GPT-2's
    residual stream after block 6, `transformer.h.6.mlp`, `model.layers.2.self_attn`)."""
    dataset: str = MISSING
    """`datasets` dataset: hub name, or local .txt/.jsonl/.json/.parquet/.csv files (a glob)."""
    dataset_config: str | None = None
    """Dataset configuration name (the second argument of `datasets.load_dataset`)."""
    split: str = "train"
    """Dataset split to read."""
    text_column: str = "text"
    """Column holding the text."""
    context_length: int = 128
    """Tokens per packed sequence."""
    prepend_bos: bool = True
    """Start every packed sequence with BOS (documents are always separated by BOS, or EOS)."""
    exclude_special_tokens: bool = True
    """Leave BOS/EOS/pad positions out of the activations (and out of the splice)."""
    n_tokens: int = 1_000_000
    """Training activations to cache (fewer if the dataset runs out first)."""
    eval_sequences: int = 64
    """Held-out packed sequences (taken first from the stream): eval metrics and loss recovered."""
    d: int | None = None
    """Expected activation dimension, checked against the model and the cache (null = any)."""
    lm_device: str = "auto"
    """Device of the language model: `auto` (the job's GPU, else the CPU), `cpu`, `cuda` or
    `cuda:N`."""
    lm_dtype: DType = DType.float32
    """Dtype of the language model's weights."""
    lm_batch_size: int = 16
    """Sequences per language-model forward pass."""
    cache_dtype: DType = DType.float32
    """Dtype of the cached activations (`bfloat16`/`float16` halve the disk and read cost)."""
    cache_dir: str = "activation_cache"
    """Folder of activation caches, one sub-folder per (model, site, dataset, ...) key. Relative
    paths resolve against the launch directory, so every job of a sweep shares it."""
    shard_rows: int = 1 << 18
    """Activations per shard file."""
    shuffle_buffer: int = 1 << 17
    """Rows held in RAM by the shuffling reader (bounded buffer over random chunks of shards)."""
    verify_hashes: bool = False
    """Also re-hash every cache file against its manifest sha256 when a job opens the cache
    (about 1 s per GB). Off, a job checks that every file exists with its recorded size;
    `python -m sae_sweep.data.build_cache ... --verify` re-hashes once, on demand."""


@dataclass
class ActivationsDataConfig(DataConfig):
    kind: str = "activations"
    path: str = MISSING
    """Activation files computed elsewhere: a folder or a glob of .npy, .safetensors or .pt
    shards, each (N, d), read in sorted name order. `.pt` loads with weights_only=True."""
    key: str | None = None
    """Tensor name inside .safetensors/.pt files (null = the file's only tensor)."""
    d: int | None = None
    """Expected activation dimension, checked against the files (null = any)."""
    n_eval: int = 16384
    """Held-out activations carved off the end of the data (never used for training)."""
    shuffle_buffer: int = 1 << 17
    """Rows held in RAM by the shuffling reader (bounded buffer over random chunks of shards)."""


@dataclass
class SynthSAEBenchDataConfig(DataConfig):
    kind: str = "synthsaebench"
    model: dict[str, Any] = field(default_factory=dict)
    """The SAELens `SyntheticModelConfig` to sample from, as its `to_dict()` writes it (Zipfian
    firing, hierarchy, low-rank correlations, magnitudes, bias, the model's own `seed`); built
    once per configuration into `cache_dir`. Presets: `data=synthsaebench` (CPU-sized) and
    `data=synthsaebench_16k` (SynthSAEBench-16k). Ignored when `model_path` is set."""
    model_path: str | None = None
    """A saved `SyntheticModel` folder (`SyntheticModel.save`, or a download of a published
    model such as `decoderesearch/synth-sae-bench-16k-v1`) to sample from instead of `model`."""
    seed: int = 0
    """Seed of the cached samples (training and held-out); the model's own is `model.seed`."""
    n_train: int = 4_000_000
    """Training samples generated into the cache (a job reading more starts a new epoch)."""
    n_eval: int = 65_536
    """Held-out samples, cached with their true feature activations (the ground-truth metrics)."""
    live: bool = False
    """Draw each training batch from the model on the training device (seeded by sample seed,
    run seed and step) instead of reading the cache: for budgets too large to cache (the 16k
    model's 200M samples, on a GPU). The held-out split and the normalisation scalar still come
    from the cache."""
    sample_device: str = "auto"
    """Where the model is built and the cache sampled: `auto` (the job's GPU, else the CPU),
    `cpu`, `cuda` or `cuda:N`. GPU and CPU draw different (equally distributed) samples."""
    sample_batch_size: int = 8192
    """Samples drawn per call while building the cache."""
    cache_dtype: DType = DType.float32
    """Dtype of the cached training and held-out activations."""
    cache_dir: str = "activation_cache"
    """Folder of activation caches: the model (`synthetic_model--<hash>/`) and its samples
    (`synthsaebench--<model hash>--<hash>/`). Relative paths resolve against the launch
    directory, so every job of a sweep shares them."""
    shard_rows: int = 1 << 18
    """Activations per shard file."""
    shuffle_buffer: int = 1 << 17
    """Rows held in RAM by the shuffling reader (bounded buffer over random chunks of shards)."""
    verify_hashes: bool = False
    """Also re-hash every cache file against its manifest sha256 when a job opens the cache."""


@dataclass
class LoggerConfig:
    mode: LoggerMode = LoggerMode.offline
    """W&B mode: `online`, `offline` (upload later: `sae-analysis SWEEP --sync`) or `disabled`."""
    project: str = "sae-sweep"
    """W&B project."""
    entity: str | None = None
    """W&B entity (user or team); null = your default."""
    group: str | None = None
    """W&B group (null, in a sweep: the sweep instance, the `id` in sweep.json)."""
    name: str | None = None
    """W&B run name (null = variant, target L0, lambda multiplier or k, and seed)."""
    tags: list[str] = field(default_factory=list)
    """Extra W&B tags (the run's knobs are added automatically)."""
    init_timeout_s: float = 20.0
    """Seconds W&B may take to start a run; past them the job fails (or falls back)."""
    fallback: LoggerFallback = LoggerFallback.none
    """`offline`: when an online W&B run cannot start, log offline instead of failing."""
    progress: ProgressMode = ProgressMode.auto
    """Console progress: `bar` (tqdm), `lines` (log lines), `auto` (a bar on a terminal, else
    lines) or `off`; `progress.json` is written in every mode."""
    progress_every_s: float = 30.0
    """Seconds between progress lines and `progress.json` rewrites (`sae-sweep-status` reads it)."""
    system_metrics: bool = False
    """W&B's system metrics (CPU/GPU use, sampled every 15 s) and machine metadata per run.
    Off by default: it costs every job a sampling process, and the record already holds
    the versions, the device and the peak memory."""


class TuneSeeds(str, Enum):
    same = "same"
    pilot = "pilot"


class TuneOtherTargets(str, Enum):
    """Which tuned values a target sweep trains at its targets other than `at_l0`."""

    chosen = "chosen"  # each variant's chosen value and the shared one, once at_l0 has chosen
    every = "every"  # every value at every target


@dataclass
class TuneCriterion:
    """How a tuned sweep picks each variant's value (docs/sweeps.md, "Tuning per variant")."""

    metric: str | None = None
    """The metric that decides (a catalogue name, e.g. fvu); null: the report's primary
    metric (loss recovered on language-model data, else FVU)."""
    at_l0: float | None = None
    """The reference L0 the metric is read at, seed by seed; one of `l0_targets` in a
    target-L0 sweep (null: its only target)."""
    seeds: TuneSeeds = TuneSeeds.same
    """`same`: the compared seeds also choose; `pilot`: `pilot_seeds` choose and are left out
    of every comparison (no selection bias)."""
    pilot_seeds: list[int] = field(default_factory=list)
    """The seeds that choose when `seeds=pilot` (seeds of the grid)."""
    shared: Any = None
    """{knob: value} every variant would share without tuning: the baseline of "how much
    tuning changed each variant" (null: the value best on average over the variants)."""
    other_targets: TuneOtherTargets = TuneOtherTargets.chosen
    """In a target-L0 sweep, the values trained at the targets other than `at_l0`: `chosen`
    (the reference target's rounds run first at every value; then each variant's chosen value
    and the shared one go on to the other targets, the only values any comparison reads
    there) or `every` (every value at every target: rounds no comparison reads)."""


@dataclass
class Config:
    sae: SAEConfig = MISSING
    penalty: PenaltyConfig = MISSING
    data: DataConfig = MISSING
    logger: LoggerConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    resample: ResampleConfig = field(default_factory=ResampleConfig)
    seed: int = 0
    """Seed of the SAE initialisation and of the order of training batches."""
    device: str = "auto"
    """`auto` (CUDA if available; in a sweep, a free GPU claimed by the job), `cpu`, `cuda` or
    `cuda:N`."""
    dtype: DType = DType.float32
    """Dtype of the SAE parameters, Adam moments and training inputs: float32 only (bf16 or
    TF32 matrix products: train.matmul_dtype)."""
    variant: str | None = None
    """Name of the recipe variant (set by sweeps; free-form)."""
    sweep: str | None = None
    """Name of the sweep this run belongs to (set by sweeps)."""
    lambda_scale: float | None = None
    """Lambda at multiplier 1 for this variant (set by `conf/variant/*.yaml`, calibrated)."""
    lambda_multiplier: float | None = None
    """Frontier axis of a variant sweep: penalty.coefficient = lambda_scale x
    lambda_multiplier ** lambda_exponent (TopK and BatchTopK presets set sae.k from it)."""
    lambda_exponent: float | None = None
    """How fast this variant's lambda moves with the multiplier (set by its preset, calibrated
    so that every variant's frontier spans the same L0 range)."""
    l0_targets: list[float] = field(default_factory=list)
    """Target-L0 sweeps: L0 values every variant should hit (e.g. `[4,8,12,16]`), placed as
    `l0_placement` says (empty = the grid only). Each must
    stay below the dense limit: target x (1 + l0_tolerance) <= max_l0_fraction x d, checked
    when the sweep starts (docs/sweeps.md, "Target-L0 sweeps")."""
    l0_tolerance: float = 0.1
    """Target-L0 sweeps: a target is hit when L0 is within this fraction of it (each seed's
    own with `l0_lambda_per: seed`, else the seed-mean L0)."""
    l0_max_rounds: int = 3
    """Target-L0 sweeps: refinement rounds after the grid, at most."""
    l0_placement: L0Placement = L0Placement.rounds
    """Target-L0 sweeps: `control` runs one job per target and seed, each steering its lambda
    to the target during training (train.l0_target; TopK-like SAEs: sae.k = target), with no
    grid; `rounds` runs the lambda grid, then refinement rounds. The TopK-family presets set
    `control`; no penalty preset has passed the control gate (docs/sweeps.md, "The L0-control
    gate")."""
    l0_lambda_per: L0LambdaPer = L0LambdaPer.seed
    """Target-L0 sweeps placed by rounds: `seed` refines every seed's lambda on its own, so
    every seed lands within l0_tolerance of the target and the comparisons read each seed at
    its target, not moved along a slope; `variant` gives a variant's seeds one lambda (fewer
    round jobs when the seeds agree; a variant whose seeds spread leaves some off target).
    Lambda is a nuisance knob either way: verdicts compare at matched L0."""
    l0_target: float | None = None
    """The target L0 a refinement job was placed for (set by the sweeper; bookkeeping)."""
    tune: Any = None
    """Sweeps: knobs tuned per variant, {knob: [values]}, e.g. `{train.lr: [1e-3, 3e-3, 1e-2]}`
    (several: their product); every variant trains at every value and is compared at its best
    value by `tune_criterion` (null = no tuning; docs/sweeps.md, "Tuning per variant"). Typed
    Any so that `tune={...}` on the command line replaces it whole."""
    tune_criterion: TuneCriterion = field(default_factory=TuneCriterion)
    """Sweeps with `tune`: how each variant's best value is chosen."""
    recipe: str | None = None
    """Name of the published recipe a variant preset reproduces as a bundle (e.g. the Gated
    SAE paper's); comparisons of two recipes list their differences once."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form metadata recorded with the run (not used by training)."""


@dataclass
class LaunchConfig(Config):
    """The composed root config: one job's `Config` plus how this launch runs it. The launch
    options never reach a job's record (`job_config` drops them): they change how fast, not
    what, a job trains."""

    rerun_failed: bool = False
    """Sweep re-runs: also re-run jobs whose summary says failed (others are skipped)."""
    pack: int = 1
    """Sweeps: train up to this many grid points that share their data (same `data`, `seed`,
    `train.batch_size`) in one job, on one stream of batches; 1 = one job per SAE."""
    threads: int = 0
    """CPU threads of each job's torch; 0 = the job's share of the cores (cores / jobs run at
    once: joblib's n_jobs, SLURM's cpus_per_task)."""
    require_clean_tree: bool = False
    """Refuse to start (a single run or a sweep) when the sae-sweep checkout has uncommitted
    changes, so every run names the commit that made it (docs/records.md, "Provenance")."""
    restart: bool = False
    """Single runs: start over from step 0 in `hydra.run.dir`, first deleting the run recorded
    there (checkpoint, summary, metrics, weights), even one made with other settings. Without
    it a run resumes its folder's checkpoint, and refuses a folder of other settings."""


LAUNCH_KEYS = ("rerun_failed", "pack", "threads", "require_clean_tree", "restart")


def job_config(cfg: Config) -> Config:
    """The job's `Config` of a composed root config (the launch options dropped)."""
    if type(cfg) is Config:
        return cfg
    return Config(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config)})
