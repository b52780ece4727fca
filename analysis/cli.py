"""`sae-analysis`: sweep folders (and/or a W&B project) -> frontiers, comparisons, report.

    sae-analysis multirun/2024-06-01/12-00-00
    sae-analysis multirun/a multirun/b --out reports/ab
    sae-analysis --wandb my-entity/sae-sweep --group quick-20240601-120000-3fa2
    sae-analysis multirun/2024-06-01/12-00-00 --publish      # + W&B summary run and Report
    sae-analysis multirun/2024-06-01/12-00-00 --sync         # upload its offline W&B runs
    sae-analysis multirun/a --reference gated_original --max-l0-fraction 0.25
    sae-analysis multirun/a --band 4 d/4 --margin fvu=3% mmcs=1% --multiplicity bh
    sae-analysis multirun/a --tune train.lr --tune-criterion at_l0=16 metric=fvu

Prints the report's first lines (the verdicts per matched L0, then the summaries over the
band), the report's path and the plots' paths. Exit status: 0 on success (also when some
runs failed: they are listed in the report), 1 when publishing or syncing failed or was
partial, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys

from analysis.pipeline import WandbLoadError, run_analysis
from analysis.tuning import Tune, parse_criterion
from analysis.verdicts import DEFAULT_BAND, DEFAULT_MARGINS, METHODS, parse_margins
from sae_sweep.config.validation import MAX_L0_FRACTION
from sae_sweep.evaluation.catalogue import names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sae-analysis",
        description="Pareto frontiers, like-with-like comparisons and a report for SAE sweeps.",
    )
    p.add_argument(
        "sweep_dirs",
        nargs="*",
        metavar="SWEEP_DIR",
        help="sweep folders (Hydra multirun dirs) with one job folder per SAE",
    )
    p.add_argument(
        "--wandb",
        metavar="ENTITY/PROJECT",
        help="also load runs from this W&B project (public API)",
    )
    p.add_argument(
        "--group",
        help="W&B group (a sweep instance: the `id` in sweep.json) to load and publish to; "
        "default: the sweep folder's, else the project's only one; `all`: every group",
    )
    p.add_argument(
        "--sync",
        action="store_true",
        help="upload every offline W&B run of SWEEP_DIR (jobs, summary run, SAE artifacts) "
        "with `wandb sync`, resumably, then stop (no analysis)",
    )
    p.add_argument(
        "--out", metavar="DIR", help="output folder (default: the sweep folder, if there is one)"
    )
    p.add_argument(
        "--publish",
        action="store_true",
        help="log a summary run and build a W&B Report (offline: written locally)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="with --publish: only build the W&B Report (summary run already on W&B)",
    )
    p.add_argument("--title", help="report title")
    p.add_argument(
        "--reference",
        metavar="NAME",
        help="variant the relative plots divide by (default: the sweep's first variant)",
    )
    p.add_argument(
        "--max-l0-fraction",
        type=float,
        default=MAX_L0_FRACTION,
        metavar="F",
        help="verdicts cover L0 <= F x d; runs above are the dense regime (default %(default)s)",
    )
    p.add_argument(
        "--metrics",
        nargs="+",
        metavar="METRIC",
        help=f"metrics to analyse (default: {', '.join(names(compared=True))} when present; "
        "any summary key, e.g. dead_fraction, dense_fraction)",
    )
    p.add_argument(
        "--band",
        nargs=2,
        default=list(DEFAULT_BAND),
        metavar=("LO", "HI"),
        help="L0 band of the one-line summaries: L0s or fractions of d (default: 3 d/4)",
    )
    p.add_argument(
        "--margin",
        nargs="+",
        default=[],
        metavar="METRIC=M",
        help="relative equivalence margins, e.g. fvu=5%% mmcs=0.02 (defaults: "
        + ", ".join(f"{k} {100 * v:g}%%" for k, v in DEFAULT_MARGINS.items())
        + "; others 5%%)",
    )
    p.add_argument(
        "--multiplicity",
        choices=sorted(METHODS),
        default="holm",
        help="p-value adjustment within the report: holm (default) or bh (Benjamini-Hochberg)",
    )
    p.add_argument(
        "--tune",
        nargs="+",
        metavar="KNOB",
        help="compare each variant at its best value of these knobs (default: the tuning the "
        "sweep declared with `tune`, if any)",
    )
    p.add_argument(
        "--tune-criterion",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="the tuning criterion's fields over the declared ones: at_l0=16 metric=fvu "
        'seeds=same|pilot pilot_seeds=0,1 shared.train.lr=0.003 (docs/analysis.md, "Tuning")',
    )
    p.add_argument(
        "--no-tune",
        action="store_true",
        help="ignore the declared tuning: every tuned value is a variant of its own",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.sweep_dirs and not args.wandb:
        build_parser().error("give at least one SWEEP_DIR or --wandb ENTITY/PROJECT")
    if args.sync and not args.publish:
        return _sync(args.sweep_dirs)
    publish_cmd = "WANDB_MODE=online sae-analysis " + " ".join(args.sweep_dirs)
    publish_cmd += (f" --wandb {args.wandb}" if args.wandb else "") + " --publish"
    try:
        margins = parse_margins(args.margin)
        if args.no_tune and (args.tune or args.tune_criterion):
            raise ValueError("--no-tune with --tune/--tune-criterion: give one or the other")
        tune = None if args.no_tune else Tune(args.tune, parse_criterion(args.tune_criterion))
        paths = run_analysis(
            args.sweep_dirs,
            args.out,
            wandb=args.wandb,
            group=args.group,
            publish=args.publish,
            report_only=args.report_only,
            title=args.title,
            reference=args.reference,
            max_l0_fraction=args.max_l0_fraction,
            metrics=args.metrics,
            band=tuple(args.band),
            margins=margins,
            multiplicity=args.multiplicity,
            tune=tune,
            publish_cmd=publish_cmd,
        )
    except (FileNotFoundError, ValueError, WandbLoadError) as e:
        print(f"sae-analysis: error: {e}", file=sys.stderr)
        return 2
    if paths.n_runs == 0:
        print("sae-analysis: warning: no runs found (no job folder with config.yaml or "
              "summary.json); the report is empty", file=sys.stderr)  # fmt: skip
    for line in paths.verdicts:
        print(line)
    print(f"report: {paths.report_md}")
    print(f"        {paths.report_html}")
    for p in paths.plots:
        print(f"plot:   {p}")
    if paths.publish is not None:
        print(paths.publish.describe())
        return 0 if paths.publish.ok else 1
    return 0


def _sync(sweep_dirs: list[str]) -> int:
    """`--sync`: upload each sweep folder's offline W&B runs (`analysis.sync`)."""
    from analysis.sync import sync_sweep

    if not sweep_dirs:
        print("sae-analysis: error: --sync needs the SWEEP_DIR to upload", file=sys.stderr)
        return 2
    ok = True
    for d in sweep_dirs:
        try:
            res = sync_sweep(d)
        except FileNotFoundError as e:
            print(f"sae-analysis: error: {e}", file=sys.stderr)
            return 2
        print(res.describe())
        ok = ok and res.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
