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

Hydra loads sweepers only from the `hydra_plugins` package; the science is in
`sae_sweep.sweep.targets`, this class only orchestrates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from hydra_plugins.sae_sweep_packing.packing_sweeper import PackingSweeper
from sae_sweep.record import layout
from sae_sweep.record.atomic import atomic_write_json
from sae_sweep.sweep import targets as tg

log = logging.getLogger("sae_sweep")

TARGETS_FILE = layout.TARGETS
LAMBDA_KEYS = ("lambda_multiplier", "penalty.coefficient")
SEED_KEY = "seed"
TARGET_KEY = "l0_target"
K_KEY = "sae.k"
SUBDIR_KEY = "hydra.sweep.subdir"


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
        plan = _Plan.from_grid(grid, _raw_subdir(cfg))
        direct = self._direct_variants(plan)
        records = _records(returns, plan, self.grid_overrides)
        rounds = 0
        while True:
            states = self._place(plan, records, l0_targets, direct)
            batch = plan.batch(states)
            if not batch or rounds >= int(cfg.l0_max_rounds):
                break
            rounds += 1
            log.info("target-L0 round %d: %d jobs", rounds, len(batch))
            first_job = self.launched
            launched = self.pack_batch(batch)  # composes the jobs: catches a bad override
            results = self.launcher.launch(launched, initial_job_idx=first_job)
            returns.append(results)
            records += _records([results], plan, self.grid_overrides)
        points = tg.points_from_runs(records, plan.n_seeds)
        states = tg.give_up_pending(states, points, rounds)
        self._write(states, l0_targets, rounds)
        return returns

    def _place(self, plan, records, l0_targets, direct) -> list[tg.TargetState]:
        points = tg.points_from_runs(records, plan.n_seeds)
        tried = _tried(records)
        states = []
        for v in plan.variants:
            for t in l0_targets:
                if v in direct:
                    states.append(tg.place_direct(v, points.get(v, []), t, self._tolerance))
                else:
                    states.append(
                        tg.place(v, points.get(v, []), t, self._tolerance, tried.get(v, set()))
                    )
        return states

    @property
    def _tolerance(self) -> float:
        return float(self.config.l0_tolerance)

    def _direct_variants(self, plan: _Plan) -> set[str]:
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


class _Plan:
    """The grid's jobs grouped by variant: one template of overrides per variant (everything
    but lambda, seed and target), the lambda key and the seeds."""

    def __init__(self, templates: dict[str, list[str]], lam_key: str, seeds: list[str],
                 subdir: str | None = None):  # fmt: skip
        self.templates = templates
        self.subdir = subdir
        self.variants = list(templates)
        self.lam_key = lam_key
        self.seeds = seeds
        self.n_seeds = max(1, len(seeds))

    @classmethod
    def from_grid(cls, grid: Sequence[Sequence[str]], subdir: str | None = None) -> _Plan:
        parsed = [_parse(job) for job in grid]
        keys = {k for job in parsed for k in job}
        lam_key = next((k for k in LAMBDA_KEYS if k in keys), LAMBDA_KEYS[0])
        seeds = list(dict.fromkeys(job[SEED_KEY] for job in parsed if SEED_KEY in job))
        templates: dict[str, list[str]] = {}
        for job, raw in zip(parsed, grid, strict=True):
            label = _label(job, parsed, lam_key)
            templates.setdefault(
                label, [o for o in raw if _key(o) not in (lam_key, SEED_KEY, TARGET_KEY)]
            )
        return cls(templates, lam_key, seeds, subdir)

    def variant_of(self, overrides: Sequence[str]) -> str:
        added = (self.lam_key, SEED_KEY, TARGET_KEY, SUBDIR_KEY)  # what a round sets
        wanted = {o for o in overrides if _key(o) not in added}
        without_k = {o for o in wanted if _key(o) != K_KEY}  # a direct variant's round run
        for v, t in self.templates.items():
            if set(t) in (wanted, without_k):
                return v
        return "?"

    def batch(self, states: list[tg.TargetState]) -> list[list[str]]:
        """The jobs of the next round: every seed at every proposed lambda (or k)."""
        jobs = []
        seen = set()
        for s in states:
            if s.status != tg.TargetStatus.PENDING or (s.variant, s.lam) in seen:
                continue
            seen.add((s.variant, s.lam))
            direct = s.knob == tg.K
            knob = K_KEY if direct else self.lam_key
            value = int(s.lam) if direct else s.lam
            where = []
            if direct and self.subdir:
                where = [f"{SUBDIR_KEY}='{_direct_subdir(self.subdir, value)}'"]
            for seed in self.seeds or [None]:
                job = [*self.templates[s.variant], f"{knob}={value}", f"{TARGET_KEY}={s.target:g}"]
                job += where
                jobs.append(job + ([f"{SEED_KEY}={seed}"] if seed is not None else []))
        return jobs


def _records(returns, plan: _Plan, grid_overrides: dict[int, list[str]]) -> list[dict[str, Any]]:
    """Flat run records (variant, lam, seed, l0, status, dir) from the launcher's returns.
    A packed job returns one record per member; a member's overrides are its grid job's."""
    out = []
    for batch in returns:
        for r in batch:
            value = r.return_value
            for rec in value if isinstance(value, list) else [value]:
                out += _record(rec if isinstance(rec, dict) else {}, r.overrides, plan,
                               grid_overrides)  # fmt: skip
    return out


def _record(rec: dict, launched: list[str] | None, plan: _Plan,
            grid_overrides: dict[int, list[str]]) -> list[dict[str, Any]]:  # fmt: skip
    """One job's flat record (a list of none or one), its overrides found by grid number."""
    overrides = grid_overrides.get(rec.get("job"), launched) or []
    ov = _parse(overrides)
    lam = ov.get(plan.lam_key)
    if rec.get("k") is not None:  # TopK-like: its points are keyed by k, grid and targets alike
        lam = rec["k"]
    elif K_KEY in ov and TARGET_KEY in ov:
        lam = ov[K_KEY]
    if lam is None:
        lam = rec.get("lambda_multiplier" if plan.lam_key == LAMBDA_KEYS[0] else "coefficient")
    if lam is None:
        return []
    return [
        {
            "variant": plan.variant_of(overrides),
            "lam": float(lam),
            "seed": rec.get("seed", ov.get(SEED_KEY)),
            "l0": rec.get("l0"),
            "status": rec.get("status"),
            "dir": rec.get("dir"),
        }
    ]


def _raw_subdir(cfg) -> str | None:
    """The sweep's job-folder pattern, interpolations unresolved."""
    sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=False) if "hydra" in cfg else {}
    return sweep.get("subdir")


def _direct_subdir(pattern: str, k: int) -> str:
    """The job folder of a target run at sae.k = k: the sweep's pattern with its lambda part
    replaced by k. The run keeps the grid's `lambda_multiplier` (its preset's default), so
    without this it would land in that grid job's folder."""
    tag = "lam${lambda_multiplier}"
    return pattern.replace(tag, f"k{k}") if tag in pattern else f"{pattern}_k{k}"


def _tried(records: list[dict[str, Any]]) -> dict[str, set[float]]:
    """Lambdas launched per variant, failed runs included (never proposed again)."""
    out: dict[str, set[float]] = {}
    for r in records:
        out.setdefault(r["variant"], set()).add(tg.rounded(r["lam"]))
    return out


def _parse(overrides: Sequence[str]) -> dict[str, str]:
    parser = OverridesParser.create()
    return {
        o.get_key_element(): o.get_value_element_as_str()
        for o in parser.parse_overrides(list(overrides))
    }


def _key(override: str) -> str:
    return _parse([override]).popitem()[0]


def _label(job: dict[str, str], grid: list[dict[str, str]], lam_key: str) -> str:
    """The variant's name: the values of the knobs that vary across the grid."""
    varying = [
        k
        for k in job
        if k not in (lam_key, SEED_KEY, TARGET_KEY) and len({g.get(k) for g in grid}) > 1
    ]
    if not varying:
        return job.get("variant", "all")
    if varying == ["variant"]:
        return job["variant"]
    return ", ".join(f"{k}={job[k]}" for k in varying)
