"""sae-sweep against SAELens's own trainer on the same SynthSAEBench model: metrics and speed.

    python bench/synth_vs_saelens.py                      # CPU preset model, 3 seeds, minutes
    python bench/synth_vs_saelens.py --samples 4000000 --seeds 5 --width 256 --k 7
    python bench/synth_vs_saelens.py --archs batchtopk --samples 1000000

Trains BatchTopK, JumpReLU and standard (L1) SAEs on one SAELens `SyntheticModel` (the
`data=synthsaebench` preset's configuration, built once and saved), each for `--seeds`
seeds, with SAELens's `SyntheticSAERunner` and with sae-sweep (`data=synthsaebench`
pointing at the saved model, one `run_job` per SAE), taking turns job by job so both see the
same load. Same samples, learning rate (constant, Adam 0.9/0.999, gradient norm clipped at
1), batch size, width, inputs scaled to E||x|| = sqrt(d) on both sides (SAELens's
`expected_average_only_in`), decoder init norm, k for BatchTopK, and the same sparsity
coefficient for JumpReLU and L1: with the same input scale both libraries' losses are
||x - x_hat||^2 summed over d plus lambda x (L0 for JumpReLU's step loss; sum_i f_i
||W_dec_i|| for L1), averaged over the batch, so lambda means the same. JumpReLU's threshold
init and bandwidth are in the scaled units in SAELens and in the paper's (x sqrt(d)) here:
they are converted. BatchTopK selects on the raw pre-activations in both, its decoder norm
free (SAELens's `rescale_acts_by_decoder_norm=False`; `--saelens-rescale` keeps SAELens's
default, which scales latents by the decoder norms, against unit-norm decoder columns here).
Conventions that differ and are not reproduced are printed.

Every SAE, from either library, is judged the same way: exported to the SAELens format,
loaded by SAELens, and evaluated by SAELens's `eval_sae_on_synthetic_data` on the same
held-out rows (drawn once from a fixed seed): MCC, F1, explained variance and L0. Per
architecture and metric the table shows each library's mean with a 95% t interval over the
seeds and whether they agree within the margin (analysis.verdicts: two one-sided tests on
the log ratio, seed i of one library against seed i of the other; independent runs, so the
test is valid and only conservative).

Throughput is samples trained per second of wall time, data generation included. SAELens
draws every batch from the model as it trains (`run()` without its final evaluation).
sae-sweep draws the samples once into the activation cache (`data=synthsaebench`), shared
by every job that trains on them, then each job reads them: the table shows a job alone
paying the whole draw, the sweep's rate with the draw shared by the jobs of the bench that
read it, and the training jobs alone. Run it niced on a shared machine; both libraries run
in this one process on the same threads (`--threads`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TQDM_DISABLE", "1")  # SAELens's progress bars

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from scipy import stats  # noqa: E402

from analysis.paired import log_ratio  # noqa: E402
from analysis.verdicts import Judged, Rules, pct_text  # noqa: E402
from sae_sweep.config.schema import job_config  # noqa: E402
from sae_sweep.config_store import register_configs  # noqa: E402
from sae_sweep.data.synthsaebench import (  # noqa: E402
    model_config,
    open_synth_cache,
    saelens_synthetic,
)
from sae_sweep.export.run import export_run  # noqa: E402
from sae_sweep.job import run_job  # noqa: E402
from sae_sweep.main import CONF_DIR  # noqa: E402

METRICS = {  # SAELens SyntheticDataEvalResult field -> (column, higher is better)
    "mcc": ("MCC", True),
    "f1": ("F1", True),
    "explained_variance": ("expl. var", True),
    "l0": ("L0", False),
}
MARGINS = {"mcc": 0.02, "f1": 0.05, "explained_variance": 0.02, "l0": 0.10}
"""Relative equivalence margins (--margin overrides): MCC as the analysis's default, F1 at the
analysis's default 5%, explained variance 2% (it sits near 1 where 2% is a large step), L0 10%
(an SAE's L0 is what the coefficient sets, not a result: 10% is a small change of it)."""
ARCHS = ("batchtopk", "jumprelu", "standard")
EVAL_SEED = 1 << 40


@dataclass
class Run:
    library: str
    arch: str
    seed: int
    wall_s: float
    samples: int
    metrics: dict = field(default_factory=dict)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    synthetic = saelens_synthetic()
    register_configs()
    with tempfile.TemporaryDirectory(prefix="synth_vs_saelens-") as tmp_name:
        tmp = Path(tmp_name)
        preset = compose_config(args, tmp, seed=0, arch="batchtopk", saved_model=False)
        t = time.perf_counter()
        model_cfg = synthetic.SyntheticModelConfig.from_dict(
            model_config(preset.data.model, synthetic)
        )
        synthetic.SyntheticModel(model_cfg).save(tmp / "model")
        model = synthetic.SyntheticModel.load_from_disk(tmp / "model")
        print(f"model: {model_cfg.num_features} features, d {model_cfg.hidden_dim}, built in "
              f"{time.perf_counter() - t:.0f} s (not counted below)", flush=True)  # fmt: skip
        print_conventions(args, model_cfg.hidden_dim)

        t = time.perf_counter()
        cache = open_synth_cache(
            compose_config(args, tmp, 0, "batchtopk").data, torch.device("cpu")
        )
        cache_s = time.perf_counter() - t
        print(f"sae-sweep cache: {args.samples:,} training + {args.cache_eval:,} held-out samples "
              f"drawn in {cache_s:.1f} s ({(args.samples + args.cache_eval) / cache_s:,.0f} "
              f"samples/s), true L0 {cache.manifest['true_l0']:.2f}", flush=True)  # fmt: skip

        held_out = HeldOut(model, args.eval_samples)
        runs: list[Run] = []
        for seed in range(args.seeds):
            for arch in args.archs:
                for library in ("SAELens", "sae-sweep"):
                    train = train_saelens if library == "SAELens" else train_sae_sweep
                    run, folder = train(args, tmp, model, arch, seed)
                    run.metrics = judge(folder, model, held_out)
                    runs.append(run)
                    m = run.metrics
                    print(f"  {library:9} {arch:9} seed {seed}: {run.wall_s:6.1f} s "
                          f"({run.samples / run.wall_s:,.0f} samples/s)  MCC {m['mcc']:.4f}  "
                          f"F1 {m['f1']:.4f}  EV {m['explained_variance']:.4f}  "
                          f"L0 {m['l0']:.2f}", flush=True)  # fmt: skip
        print_tables(args, runs, cache_s, cache.manifest["true_l0"])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="synthsaebench",
                   help="the data preset whose SyntheticModel both libraries train on")  # fmt: skip
    p.add_argument("--samples", type=int, default=102_400, help="training samples per SAE")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--width", type=int, default=256, help="SAE latents")
    p.add_argument("--k", type=int, default=7, help="BatchTopK's k (the target L0)")
    p.add_argument("--jumprelu-coefficient", type=float, default=0.3,
                   help="JumpReLU's L0 coefficient lambda, the same in both libraries")  # fmt: skip
    p.add_argument("--l1-coefficient", type=float, default=3.0,
                   help="the standard SAE L1 coefficient, the same in both")  # fmt: skip
    p.add_argument("--decoder-init-norm", type=float, default=0.1)
    p.add_argument("--saelens-rescale", action="store_true",
                   help="SAELens's BatchTopK default rescale_acts_by_decoder_norm=True (sae-sweep "
                   "then keeps unit-norm decoder columns, the nearest it has); default off, in "
                   "both the decoder's norm is free and does not enter the selection")  # fmt: skip
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    p.add_argument("--eval-samples", type=int, default=16_384,
                   help="held-out rows every SAE is judged on")  # fmt: skip
    p.add_argument("--cache-eval", type=int, default=8192,
                   help="held-out rows of sae-sweep's cache (its own evaluation)")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="torch threads (both libraries)")
    p.add_argument("--margin", nargs="*", default=[], metavar="METRIC=M",
                   help=f"relative margins (defaults {MARGINS})")  # fmt: skip
    args = p.parse_args()
    for item in args.margin:
        name, _, value = item.partition("=")
        MARGINS[name] = float(value.rstrip("%")) / (100 if value.endswith("%") else 1)
    if args.samples % args.batch_size:
        p.error("--samples must be a multiple of --batch-size (both libraries train whole batches)")
    return args


# -- sae-sweep --


def compose_config(args, tmp: Path, seed: int, arch: str, saved_model: bool = True):
    """The sae-sweep job config of one SAE of the bench: on the model saved in tmp/model, or
    (saved_model=False) on the preset's model configuration."""
    steps = args.samples // args.batch_size
    overrides = [
        f"data={args.data}",
        f"data.n_train={args.samples}",
        f"data.n_eval={args.cache_eval}",
        f"data.cache_dir={tmp / 'cache'}",
        f"train.steps={steps}",
        f"train.batch_size={args.batch_size}",
        f"train.lr={args.lr}",
        "train.lr_warmup_steps=0",
        "train.lr_decay_fraction=0",  # SAELens's runner: constant
        "train.grad_clip=1.0",
        f"train.checkpoint_every={steps + 1}",  # SAELens keeps no checkpoints either
        f"train.log_every={max(steps // 4, 1)}",
        f"sae.d_sae={args.width}",
        "logger=disabled",
        f"seed={seed}",
    ]
    if arch == "batchtopk":
        # --saelens-rescale: the nearest sae-sweep has, decoder columns kept at norm 1
        unit = args.saelens_rescale
        init = 1.0 if unit else args.decoder_init_norm
        overrides += ["sae=batchtopk", f"sae.k={args.k}", "penalty=none",
                      "sae.aux_weighting=saelens", "sae.aux_coefficient=1.0",
                      f"sae.dead_tokens={1000 * args.batch_size}",  # SAELens: 1000 batches
                      f"train.unit_norm_decoder={unit}",
                      f"sae.decoder_init_norm={init}"]  # fmt: skip
    elif arch == "jumprelu":
        overrides += ["sae=jumprelu", "penalty=l0",
                      f"penalty.coefficient={args.jumprelu_coefficient}",
                      f"sae.decoder_init_norm={args.decoder_init_norm}"]  # fmt: skip
    else:
        overrides += ["sae=standard", "penalty=decoder_norm", "penalty.decoder_norm_grad=live",
                      f"penalty.coefficient={args.l1_coefficient}",
                      f"sae.decoder_init_norm={args.decoder_init_norm}"]  # fmt: skip
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        composed = compose(config_name="config", overrides=overrides)
    cfg = job_config(OmegaConf.to_object(composed))
    if arch == "jumprelu":  # SAELens's init threshold and bandwidth, in this project's units
        d = cfg.data.model["hidden_dim"]
        cfg.sae.threshold_init = SAELENS_JUMPRELU["jumprelu_init_threshold"] / math.sqrt(d)
        cfg.sae.bandwidth = SAELENS_JUMPRELU["jumprelu_bandwidth"] / math.sqrt(d)
    if saved_model:
        cfg.data.model_path = str(tmp / "model")
        cfg.data.model = {}
    return cfg


def train_sae_sweep(args, tmp: Path, model, arch: str, seed: int) -> tuple[Run, Path]:
    cfg = compose_config(args, tmp, seed, arch)
    out = tmp / "sae-sweep" / f"{arch}-{seed}"
    t = time.perf_counter()
    run_job(cfg, out)
    wall = time.perf_counter() - t
    exported = export_run(out, tmp / "exported" / f"{arch}-{seed}")
    return Run("sae-sweep", arch, seed, wall, args.samples), exported


# -- SAELens --

SAELENS_JUMPRELU = {"jumprelu_init_threshold": 0.01, "jumprelu_bandwidth": 0.05}
"""SAELens 6.54's defaults, stated so both sides use them."""


def saelens_sae_config(args, arch: str, d: int):
    from sae_lens import (
        BatchTopKTrainingSAEConfig,
        JumpReLUTrainingSAEConfig,
        StandardTrainingSAEConfig,
    )

    common = dict(d_in=d, d_sae=args.width, decoder_init_norm=args.decoder_init_norm,
                  normalize_activations="expected_average_only_in")  # fmt: skip
    if arch == "batchtopk":
        rescale = args.saelens_rescale
        return BatchTopKTrainingSAEConfig(k=args.k, rescale_acts_by_decoder_norm=rescale, **common)
    if arch == "jumprelu":
        return JumpReLUTrainingSAEConfig(l0_coefficient=args.jumprelu_coefficient,
                                         **SAELENS_JUMPRELU, **common)  # fmt: skip
    return StandardTrainingSAEConfig(l1_coefficient=args.l1_coefficient, **common)


def train_saelens(args, tmp: Path, model, arch: str, seed: int) -> tuple[Run, Path]:
    from sae_lens import LoggingConfig
    from sae_lens.synthetic import SyntheticSAERunner, SyntheticSAERunnerConfig

    cfg = SyntheticSAERunnerConfig(
        synthetic_model=model.cfg,
        sae=saelens_sae_config(args, arch, model.cfg.hidden_dim),
        training_samples=args.samples,
        batch_size=args.batch_size,
        lr=args.lr,
        device="cpu",
        output_path=None,
        checkpoint_path=None,
        run_final_eval=False,
        n_batches_for_norm_estimate=8,  # sae-sweep's train.norm_estimate_batches
        logger=LoggingConfig(log_to_wandb=False),
    )
    torch.manual_seed(seed)  # SAELens initialises and samples from the global generator
    t = time.perf_counter()
    result = SyntheticSAERunner(cfg, override_synthetic_model=model).run()
    wall = time.perf_counter() - t
    folder = tmp / "SAELens" / f"{arch}-{seed}"
    result.sae.save_inference_model(str(folder))
    return Run("SAELens", arch, seed, wall, args.samples), folder


# -- the judge --


class HeldOut:
    """The held-out true feature activations, drawn once from the model (a fixed seed) and
    replayed to `eval_sae_on_synthetic_data` in its own chunks, in place of the model's
    generator: every SAE is judged on the same rows, and the draw is paid once."""

    CHUNK = 4096

    def __init__(self, model, n: int):
        with torch.random.fork_rng():
            torch.manual_seed(EVAL_SEED)
            self.rows = torch.cat([model.activation_generator.sample(min(self.CHUNK, n - i))
                                   for i in range(0, n, self.CHUNK)])  # fmt: skip
        self.n = n
        self._next = 0

    def sample(self, batch_size: int) -> torch.Tensor:
        chunk = self.rows[self._next : self._next + batch_size]
        self._next = (self._next + batch_size) % self.n
        return chunk


def judge(folder: Path, model, held_out: HeldOut) -> dict[str, float]:
    """SAELens's own evaluation of the SAE in `folder` on the bench's held-out rows."""
    from sae_lens import SAE
    from sae_lens.synthetic import eval_sae_on_synthetic_data

    sae = SAE.load_from_disk(str(folder))
    result = eval_sae_on_synthetic_data(sae, model.feature_dict, held_out, num_samples=held_out.n,
                                        batch_size=HeldOut.CHUNK)  # fmt: skip
    return {"mcc": result.mcc, "f1": result.classification.f1_score,
            "explained_variance": result.explained_variance, "l0": result.sae_l0,
            "dead": result.dead_latents}  # fmt: skip


# -- the tables --


def mean_ci(values: list[float]) -> str:
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return f"{x.mean():.4f}"
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return f"{x.mean():.4f} ± {half:.4f}"


def print_tables(args, runs: list[Run], cache_s: float, true_l0: float) -> None:
    rules = Rules(margins=MARGINS)
    print(f"\nmetrics ({args.seeds} seeds, mean ± 95% t half-width; all SAEs judged by SAELens's "
          f"eval_sae_on_synthetic_data on the same {args.eval_samples:,} held-out rows; "
          f"true L0 {true_l0:.2f})")  # fmt: skip
    header = "| arch | metric | SAELens | sae-sweep | sae-sweep vs SAELens | margin | verdict |"
    print(header)
    print("|" + "---|" * 7)
    verdicts = []
    for arch in args.archs:
        for key, (title, higher) in METRICS.items():
            theirs = [r.metrics[key] for r in runs if r.library == "SAELens" and r.arch == arch]
            ours = [r.metrics[key] for r in runs if r.library == "sae-sweep" and r.arch == arch]
            effect = log_ratio(np.array(theirs), np.array(ours), rules.margin(key))
            verdict = Judged(effect, higher_is_better=higher)
            b, a = (
                ("sae-sweep better", "SAELens better")
                if higher
                else ("sae-sweep lower", "sae-sweep higher")
            )
            words = verdict.words().replace("b better", b).replace("a better", a)
            verdicts.append((arch, key, verdict.kind()))
            lo, hi = effect.ci
            print(f"| {arch} | {title} | {mean_ci(theirs)} | {mean_ci(ours)} | "
                  f"{effect.pct():+.2f}% [{lo:+.2f}, {hi:+.2f}] | ±{pct_text(rules.margin(key))} "
                  f"| {words} |")  # fmt: skip
    n_jobs = len([r for r in runs if r.library == "sae-sweep"])
    theirs_s = sum(r.wall_s for r in runs if r.library == "SAELens")
    ours_s = sum(r.wall_s for r in runs if r.library == "sae-sweep")
    samples = args.samples * n_jobs
    sl_rate = samples / theirs_s
    rows = [
        ("SAELens SyntheticSAERunner (draws every batch)", samples / theirs_s),
        ("sae-sweep, one job paying the whole cache draw",
         args.samples / (cache_s + ours_s / n_jobs)),
        (f"sae-sweep, the draw shared by the {n_jobs} jobs", samples / (cache_s + ours_s)),
        ("sae-sweep jobs alone (cache already drawn)", samples / ours_s),
    ]  # fmt: skip
    print(f"\nthroughput, training samples per wall second, data generation included "
          f"({n_jobs} SAEs each, {args.samples:,} samples each, {args.threads} thread(s); "
          f"sae-sweep's cache draw {cache_s:.1f} s)")  # fmt: skip
    print("| | samples/s | vs SAELens |")
    print("|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / sl_rate:.2f}x |")
    agree = sum(kind == "equivalent" for *_, kind in verdicts)
    print(
        f"\n{agree} of {len(verdicts)} (architecture, metric) pairs equivalent within their "
        "margins; the verdict column names the others (inconclusive: the seeds settle neither "
        "equivalence nor a difference)."
    )


def print_conventions(args, d: int) -> None:
    print("conventions matched: samples, lr (constant), batch, width, Adam (0.9, 0.999), grad "
          "norm clip 1, inputs scaled to E||x|| = sqrt(d), decoder init norm "
          f"{args.decoder_init_norm}, encoder = decoder^T, BatchTopK k {args.k}, JumpReLU "
          f"lambda {args.jumprelu_coefficient} (threshold init 0.01 and bandwidth 0.05 in scaled "
          f"units: sae.threshold_init and sae.bandwidth are those / sqrt({d})), L1 lambda "
          f"{args.l1_coefficient} on f_i ||W_dec_i||, AuxK as SAELens weights it "
          "(sae.aux_weighting=saelens, coefficient 1, dead after 1000 batches), BatchTopK "
          + ("latents rescaled by the decoder norms in SAELens (its default), unit-norm "
             "decoder columns in sae-sweep" if args.saelens_rescale else
             "selection on the raw pre-activations (SAELens: rescale_acts_by_decoder_norm="
             "False; its default True left 184 of 256 latents dead at 512k samples)"))  # fmt: skip
    print("conventions that differ: SAELens's BatchTopK "
          "takes AuxK's latents without a ReLU; its threshold is an EMA of the smallest kept "
          "activation with rate 0.01 (sae-sweep: momentum 0.99, the same rule); SAELens "
          "estimates the input scale on 8 batches, sae-sweep over the cache's training rows; "
          "sae-sweep's data are one draw shared by its jobs, shuffled per seed, SAELens draws "
          "anew for each SAE", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
