"""Sweep analysis: load runs, Pareto frontiers per variant, like-with-like comparisons,
plots and a report (docs/design.md, "Analysis").

    import analysis
    runs = analysis.load_runs("multirun/2024-06-01/12-00-00")   # one row per SAE
    paths = analysis.run_analysis(["multirun/2024-06-01/12-00-00"])
    print(paths.report_md, paths.plots)

The modules, one concept each: `load` (records and W&B -> DataFrame), `variants` (which
knobs vary, labels, like with like), `frontier` (Pareto frontiers, seeds aggregated),
`compare` (log-L0 interpolation inside the overlap, verdicts), `plots`, `report`,
`publish` (W&B), `cli` (`sae-analysis`).
"""

from analysis.load import load_runs, load_wandb_runs
from analysis.pipeline import run_analysis
from analysis.report import ReportPaths, analyse, write_report

__all__ = ["load_runs", "load_wandb_runs", "run_analysis", "analyse", "write_report", "ReportPaths"]
