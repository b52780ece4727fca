"""Sweep analysis: load runs, Pareto frontiers per variant, like-with-like comparisons,
plots and a report (docs/design.md, "Analysis").

    import analysis
    runs = analysis.load_runs("multirun/2024-06-01/12-00-00")   # one row per SAE
    paths = analysis.run_analysis(["multirun/2024-06-01/12-00-00"])
    print(paths.report_md, paths.plots)

The modules, one concept each: `load` (records and W&B -> DataFrame), `variants` (which
knobs vary, labels, like with like), `frontier` (Pareto frontiers, seeds aggregated),
`logl0` (reading a curve at any L0: interpolation in log L0, common ranges, grids, local
slopes), `effects` (which way a metric is better, and how effects and CIs are written),
`compare` (frontier overlap and band winners, descriptive), `paired` (paired seeds: the log
ratio ln(b/a), its t intervals and tests), `verdicts` (margins, the summaries' L0 band,
multiplicity, the verdict words, planning seeds), `matched` (variants at matched L0: targets
or per-seed interpolation, dense runs left out), `tuning` (each variant at its own best
tuned value, by the declared criterion), `model` (the analysis of a sweep), `provenance`
(the code versions and uncommitted trees the compared runs come from), `plots`, `render`
(Markdown/HTML, rounded CSV), `report` (the report: one function per section),
`benchmark_table` (the SynthSAEBench-form table of ground-truth metrics and the verdicts of
gated against each modern architecture), `publish` (the W&B summary run and Report), `sync`
(uploading a sweep's offline W&B runs), `pipeline` (`run_analysis`), `cli` (`sae-analysis`),
`claims` (claims as data: a YAML file of comparisons -> verdict rows) and `results_page`
(the results page and its sweep reports, rebuilt from committed run tables).
"""

from analysis.load import load_runs, load_wandb_runs
from analysis.model import analyse
from analysis.pipeline import run_analysis
from analysis.report import ReportPaths, write_report

__all__ = ["load_runs", "load_wandb_runs", "run_analysis", "analyse", "write_report", "ReportPaths"]
