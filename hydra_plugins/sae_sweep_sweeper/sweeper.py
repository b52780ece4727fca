"""The sweeper of every multirun (conf/hydra/sweeper/sae_sweep.yaml, selected in
conf/config.yaml as `hydra/sweeper: sae_sweep`): an adapter from Hydra's public Sweeper API
to `sae_sweep.sweep.lifecycle.Sweep`, which owns the sweep from start to end (grid, packing,
thread budget, target-L0 rounds, records, analysis).

Options (`hydra.sweeper.<name>=...`), besides Hydra's basic ones (`params`, `max_batch_size`):
    analysis: run the analysis (report + plots in the sweep folder) at the end (default true)
    wait_for_lock: when another launch runs into the same sweep folder, wait for it to end
        instead of refusing (default false; sweep/bookkeeping/lock.py)
    pipeline_rounds: target-L0 chains launch their next lambda as soon as their own seeds
        finish, where the launcher allows it (default true; sweep/chain_pipeline.py)
    max_l0_fraction: the analysis's verdicts cover L0 <= this x d (default MAX_L0_FRACTION,
        0.5, of sae_sweep/config/validation.py)
    reference: the variant the relative plots divide by (default: the sweep's first)
    band, margins, multiplicity: the verdicts' summary band, equivalence margins and p-value
        adjustment (`analysis.run_analysis`; docs/analysis.md, "Reading a verdict")

The launcher Hydra configured (basic, joblib, submitit) is instantiated as Hydra's own
sweepers do, with a config loader that composes each distinct set of files once
(sae_sweep/sweep/running/compose.py); the launcher ships it to every job.
"""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf


class SaeSweeper(Sweeper):
    def __init__(
        self, max_batch_size: int | None = None, params: dict[str, str] | None = None,
        analysis: bool = True, max_l0_fraction: float | None = None,
        reference: str | None = None, band: Any = None, margins: Any = None,
        multiplicity: str = "holm", wait_for_lock: bool = False, pipeline_rounds: bool = True,
    ) -> None:  # fmt: skip
        self.max_batch_size = max_batch_size
        self.params = params or {}
        self.analysis = analysis
        self.wait_for_lock = wait_for_lock
        self.pipeline_rounds = pipeline_rounds
        self.max_l0_fraction, self.reference = max_l0_fraction, reference
        # plain Python: Hydra passes lists and mappings as config nodes
        self.verdict_options: dict[str, Any] = {"multiplicity": multiplicity}
        if band is not None:
            self.verdict_options["band"] = tuple(
                OmegaConf.to_container(band) if isinstance(band, ListConfig) else band
            )
        if margins is not None:
            self.verdict_options["margins"] = dict(
                OmegaConf.to_container(margins) if isinstance(margins, DictConfig) else margins
            )
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:  # fmt: skip
        # Imported here, not at the top: Hydra imports every plugin module when it starts
        # (in each job process too), and sae_sweep's modules take a while to import.
        from sae_sweep.sweep.running.compose import caching_context

        self.hydra_context = caching_context(hydra_context)
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=self.hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from sae_sweep.config.validation import MAX_L0_FRACTION
        from sae_sweep.sweep.lifecycle import Sweep

        fraction = MAX_L0_FRACTION if self.max_l0_fraction is None else self.max_l0_fraction
        sweep = Sweep(
            self.config, self.launcher, self.hydra_context.config_loader,
            params=self.params, max_batch_size=self.max_batch_size, analysis=self.analysis,
            analysis_options={"max_l0_fraction": fraction, "reference": self.reference,
                              **self.verdict_options},
            wait_for_lock=self.wait_for_lock, pipeline_rounds=self.pipeline_rounds,
        )  # fmt: skip
        return sweep.run(arguments)
