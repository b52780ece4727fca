"""Sweep start and end, in the launching process: manifest, GPU list, table, analysis.

`SweepCallback` is a Hydra callback (registered in conf/config.yaml under
`hydra.callbacks.sweep`). Hydra skips `on_multirun_end` when a job raised or the launcher
failed, so the end does not depend on it alone: `finish_pending_sweep()` runs from the
entry point's `finally` and finishes a sweep that was started but not finished.

Options (`hydra.callbacks.sweep.<name>=...`):
    analysis: run the analysis (report + plots in the sweep folder) at the end (default true)
    max_l0_fraction: the analysis's verdicts cover L0 <= this x d (default 0.5)
    reference: the variant the relative plots divide by (default: the sweep's first)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..config.validation import MAX_L0_FRACTION
from . import manifest, table
from .gpus import publish_machine_gpus
from .task import ENV_LAUNCH_ID

log = logging.getLogger("sae_sweep")


@dataclass
class _Launch:
    sweep_dir: Path
    launch_id: str
    n_jobs: int
    analysis: bool
    analysis_options: dict[str, Any]


_pending: _Launch | None = None
_problems: list[str] | None = None
"""What went wrong in the sweep this process finished ([] = all done; None = no sweep)."""


class SweepCallback(Callback):
    def __init__(
        self,
        analysis: bool = True,
        max_l0_fraction: float = MAX_L0_FRACTION,
        reference: str | None = None,
    ) -> None:
        self.analysis = analysis
        self.analysis_options = {"max_l0_fraction": max_l0_fraction, "reference": reference}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _pending
        hc = config.hydra
        sweep_dir = Path(str(hc.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        launch_id = f"{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
        os.environ[ENV_LAUNCH_ID] = launch_id  # inherited by every launcher's jobs
        params = hc.sweeper.get("params")  # none on a plain --multirun
        params = OmegaConf.to_container(params, resolve=True) if params else {}
        grid = manifest.expand_grid(params, list(hc.overrides.task))
        m = manifest.start_launch(
            sweep_dir, config.get("sweep"), grid, list(hc.overrides.task), launch_id
        )
        publish_machine_gpus(on_slurm="Slurm" in str(hc.launcher.get("_target_", "")))
        _pending = _Launch(sweep_dir, launch_id, m["n_jobs"], self.analysis, self.analysis_options)
        log.info("sweep %s: %d jobs -> %s", m["name"], m["n_jobs"], sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        finish_pending_sweep()


def finish_pending_sweep() -> None:
    """Finish the sweep started in this process, if any: table, manifest, analysis."""
    global _pending, _problems
    launch, _pending = _pending, None
    if launch is not None:
        _problems = finish_sweep(launch.sweep_dir, launch.launch_id, launch.n_jobs,
                                 launch.analysis, launch.analysis_options)  # fmt: skip


def sweep_exit_code() -> int:
    """1 when the sweep this process ran left a job without a result, else 0."""
    return 1 if _problems else 0


def finish_sweep(
    sweep_dir: Path, launch_id: str, n_jobs: int, analysis: bool = True,
    analysis_options: dict[str, Any] | None = None,
) -> list[str]:  # fmt: skip
    """Table, manifest, analysis; returns the launch's problems (see `table.problems`).

    The last line printed says whether every job has a result: a script or a scheduler
    reading the exit status (non-zero on any problem) finds the reason beside it.
    """
    rows = table.collect(sweep_dir, launch_id)
    text = table.write_table(sweep_dir, rows, expected=n_jobs)
    manifest.end_launch(sweep_dir, launch_id, table.counts(rows))
    print(f"\nsweep {sweep_dir}\n{text}", flush=True)
    problems = table.problems(rows, expected=n_jobs)
    if analysis:
        run_analysis_safely(sweep_dir, **(analysis_options or {}))
    if problems:
        print(
            f"sweep incomplete ({', '.join(problems)} of {max(n_jobs, len(rows))} jobs; exit "
            f"status 1): see jobs.md and each job's summary.json. Re-run the same command with "
            f"hydra.sweep.dir={sweep_dir} to resume (add rerun_failed=true to retry failures)",
            flush=True,
        )
    else:
        print(f"sweep complete: all {len(rows)} jobs have a result", flush=True)
    return problems


def run_analysis_safely(sweep_dir: Path, **options: Any) -> None:
    """The analysis report of the sweep; a failure here is logged, never raised."""
    try:
        from analysis import run_analysis

        paths = run_analysis([sweep_dir], **options)
        log.info("analysis report: %s (also %s)", paths.report_md, paths.report_html.name)
        for plot in paths.plots:
            if plot.suffix == ".png":
                log.info("plot: %s", plot)
    except Exception as exc:  # noqa: BLE001 -- the sweep's records are complete without it
        log.error(
            "the analysis failed (%s: %s); the records are complete, run it again with "
            "`sae-analysis %s`",
            type(exc).__name__,
            exc,
            sweep_dir,
        )
