"""sae-sweep's sweeper: the packing sweeper (Hydra's basic grid, `pack=K`, the thread
budget), plus refinement rounds when the sweep declares `l0_targets` (selected in
conf/config.yaml as `hydra/sweeper: sae_sweep`).

    sae-sweep +sweep=quick 'l0_targets=[8,16]'       # l0_tolerance=0.1, l0_max_rounds=3

Round 0 is the sweep's grid, launched as the basic sweeper does. Each further round:
build the batch (per variant, the lambdas `sae_sweep.sweep.targets` proposes, every seed)
-> pack it like the grid -> launch it through the configured launcher into the same sweep
folder -> collect the records. Rounds stop when no target is open or after `l0_max_rounds`;
`targets.json` in the sweep folder then says, per (variant, target), the lambda and L0 that
hit it or why it cannot be hit. Re-running the command resumes: finished jobs are skipped (the sweep
policy), and the same records give the same proposals, so no run is duplicated.

Hydra loads sweepers only from the `hydra_plugins` package; the plan (which jobs each round
launches, which finished job answers which (variant, target)) is in
`sae_sweep.sweep.planning.chains`, the fit in `sae_sweep.sweep.targets`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from hydra_plugins.sae_sweep_packing.packing_sweeper import PackingSweeper
from sae_sweep.record import layout
from sae_sweep.record.atomic import atomic_write_json
from sae_sweep.sweep import targets as tg
from sae_sweep.sweep.planning import chains

log = logging.getLogger("sae_sweep")

TARGETS_FILE = layout.TARGETS


class TargetSweeper(PackingSweeper):
    def __init__(self, max_batch_size: int | None = None, params: dict | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)

    def sweep(self, arguments: list[str]) -> Any:
        cfg = self.config
        if not cfg.get("l0_targets"):
            return super().sweep(arguments)
        l0_targets = tg.validate_targets(
            cfg.l0_targets, float(cfg.l0_tolerance), int(cfg.l0_max_rounds)
        )
        returns = list(super().sweep(arguments))  # round 0: the grid
        grid = [list(job) for batch in self.overrides for job in batch]
        plan = chains.plan_targets(grid, _raw_subdir(cfg))
        direct = self._direct_variants(plan)
        runs = chains.match_runs(_pairs(returns), plan, self.grid_overrides)
        rounds = 0
        while True:
            states = chains.place_targets(plan, runs, l0_targets, self._tolerance, direct)
            batch = chains.next_jobs(plan, states)
            if not batch or rounds >= int(cfg.l0_max_rounds):
                break
            rounds += 1
            log.info("target-L0 round %d: %d jobs", rounds, len(batch))
            first_job = self.launched
            launched = self.pack_batch(batch)  # composes the jobs: catches a bad override
            results = self.launcher.launch(launched, initial_job_idx=first_job)
            returns.append(results)
            runs += chains.match_runs(_pairs([results]), plan, self.grid_overrides)
        points = tg.points_from_runs(runs, plan.n_seeds)
        states = tg.give_up_pending(states, points, rounds)
        self._write(states, l0_targets, rounds)
        return returns

    @property
    def _tolerance(self) -> float:
        return float(self.config.l0_tolerance)

    def _direct_variants(self, plan: chains.TargetPlan) -> set[str]:
        """Variants whose L0 is set by a knob (TopK's `sae.k`): no lambda refinement."""
        loader = self.hydra_context.config_loader
        direct = set()
        for v, template in plan.templates.items():
            job_cfg = loader.load_sweep_config(self.config, list(template))
            sae = OmegaConf.to_container(job_cfg.get("sae") or {}, resolve=False)
            if tg.direct_l0_knob(sae):
                direct.add(v)
        return direct

    def _write(self, states: list[tg.TargetState], l0_targets: list[float], rounds: int) -> None:
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        atomic_write_json(
            sweep_dir / TARGETS_FILE,
            {
                "l0_targets": l0_targets,
                "l0_tolerance": self._tolerance,
                "max_rounds": int(self.config.l0_max_rounds),
                "rounds": rounds,
                "targets": [s.as_dict() for s in states],
            },
        )
        print(f"\ntarget L0s after {rounds} refinement rounds ({TARGETS_FILE}):", flush=True)
        print("\n".join(tg.summary_lines(states)), flush=True)


def _pairs(returns) -> list[tuple[list[str], Any]]:
    """(launched overrides, return value) of every job of the launcher's batches."""
    return [(list(r.overrides or []), r.return_value) for batch in returns for r in batch]


def _raw_subdir(cfg) -> str | None:
    """The sweep's job-folder pattern, interpolations unresolved."""
    sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=False) if "hydra" in cfg else {}
    return sweep.get("subdir")
