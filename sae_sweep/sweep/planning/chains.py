"""Target chains: which jobs a target-L0 sweep launches after its grid, and which finished job
answers which chain.

A chain is one (variant, seed, target L0) by default (`l0_lambda_per: seed`): every seed
finds its own lambda, so every seed lands on the target. With `l0_lambda_per: variant` a
chain is one (variant, target L0), and its seeds share one lambda. The sweep's grid gives
every chain its first points; each refinement round then launches, for every chain still
open, its proposed lambda (or k) with each of its seeds, and reads the finished jobs back
into points. A per-seed chain is a "variant" of the plan whose template holds its seed (its
label ends in `, seed=N`) and whose seeds are none of its own:

    plan = plan_targets(grid, subdir, l0_knob)      # variants, the lambda key, the seeds
    runs = match_runs(returns, plan, grid_overrides)  # finished jobs -> (variant, lam, seed, L0)
    states = place_targets(plan, runs, targets, tolerance)   # targets.py's fit
    jobs = next_jobs(plan, states)                 # the next round: every seed, every proposal

Plain functions of override lists and job records (no Hydra launcher, no training), so the
whole plan is unit-tested (tests/test_sweep_chains.py). The sweep (sweep/lifecycle.py) launches
the jobs, packs them like the grid, and hands the launcher's returns back here.

A variant placed by control (`l0_placement: control`) is no chain of rounds: it leaves the
grid, and `one_round_jobs` runs every seed at every target once, each job steering its own
lambda (`train.l0_target`; a TopK-like variant at knob = target); its records are keyed by
their target, and `place_targets` only says whether they landed (targets.place_controlled).

The lambda key is `penalty.coefficient` when the grid sets it (it replaces the coefficient the
variant preset derives from `lambda_multiplier`), else `lambda_multiplier`. A variant whose L0
is set by a knob (TopK's `sae.k`, its architecture's `l0_knob`) is placed by that knob at
knob = target, and its points are keyed by the knob's value.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser

from ...record.targets_file import SEED_CHAIN
from . import targets as tg

MULTIPLIER_KEY = "lambda_multiplier"
COEFFICIENT_KEY = "penalty.coefficient"
SEED_KEY = "seed"
TARGET_KEY = "l0_target"
CONTROL_KEY = "train.l0_target"
SUBDIR_KEY = "hydra.sweep.subdir"
CONTROL, ROUNDS = "control", "rounds"
"""The values of `l0_placement`: one round, each job controlling its own lambda (a variant
whose L0 is set by a knob: that knob at the target); or the grid, then refinement rounds."""
FOLDER_TAGS = {MULTIPLIER_KEY: "lam", COEFFICIENT_KEY: "coef", CONTROL_KEY: "target"}
"""How a round job's folder names its knob when the sweep's folder pattern does not (another
knob by its last part: `sae.k` -> k)."""
_MULTIPLIER_TAG = "lam${lambda_multiplier}"


@dataclass(frozen=True)
class TargetPlan:
    """The grid's jobs grouped by variant: per variant, its overrides but lambda, seed and
    target (the template of its round jobs); the lambda key; the grid's seeds."""

    templates: dict[str, tuple[str, ...]]
    lam_key: str
    seeds: tuple[str, ...]
    subdir: str | None = None
    """The sweep's job-folder pattern (`hydra.sweep.subdir`), interpolations unresolved."""
    direct: dict[str, str] = field(default_factory=dict)
    """{variant: the knob that sets its L0 directly}, for the variants placed by one."""
    one_round: tuple[str, ...] = ()
    """The variants placed in one round (`l0_placement: control`): no grid; every seed at
    every target, with train.l0_target (or the direct knob = target)."""
    seeded: tuple[str, ...] = ()
    """The chains of one seed each (`l0_lambda_per: seed`): their template holds their seed,
    and they launch no other. Variants placed by a knob or in one round are never split by
    seed: every seed runs at the same knob value (or controls its own lambda) anyway."""

    @property
    def variants(self) -> list[str]:
        return list(self.templates)

    @property
    def n_seeds(self) -> int:
        """The grid's seeds (at least 1)."""
        return max(1, len(self.seeds))

    def seeds_of(self, variant: str) -> tuple[str, ...]:
        """The seeds a chain launches at each proposal (none of a seed's own chain: its
        template holds it)."""
        return () if variant in self.seeded else self.seeds

    def n_seeds_of(self, variant: str) -> int:
        """The seeds that make a point of this chain complete."""
        return max(1, len(self.seeds_of(variant)))

    def variant_of(self, overrides: Sequence[str]) -> str | None:
        """The chain's variant a job (grid or round) belongs to, by its overrides; None if
        none."""
        with_seed = {o for o in overrides if _key(o) not in (self.lam_key, TARGET_KEY,
                                                              CONTROL_KEY, SUBDIR_KEY)}  # fmt: skip
        wanted = {o for o in with_seed if _key(o) != SEED_KEY}
        knobs = set(self.direct.values())
        without_knob = {o for o in wanted if _key(o) not in knobs}  # a direct variant's round job
        for variant, template in self.templates.items():
            matches = (with_seed,) if variant in self.seeded else (wanted, without_knob)
            if set(template) in matches:
                return variant
        return None


def plan_targets(
    grid: Sequence[Sequence[str]],
    subdir: str | None = None,
    l0_knob: Callable[[tuple[str, ...]], str | None] = lambda template: None,
    placement: Callable[[tuple[str, ...]], str] = lambda template: ROUNDS,
    per_seed: bool = False,
) -> TargetPlan:
    """The plan of a sweep's grid (its jobs' overrides, in grid order). `l0_knob`: the knob
    that sets a variant's L0 directly, from its template (None: lambda sets it); `placement`:
    its `l0_placement` (CONTROL or ROUNDS); `per_seed`: a chain per seed for the variants
    placed by lambda rounds (`l0_lambda_per: seed`)."""
    parsed = [_parse(job) for job in grid]
    lam_key = lambda_key(parsed)
    seeds = tuple(dict.fromkeys(job[SEED_KEY] for job in parsed if SEED_KEY in job))
    shared: dict[str, tuple[str, ...]] = {}  # per variant: all but lambda, seed and target
    for job, raw in zip(parsed, grid, strict=True):
        template = tuple(o for o in raw if _key(o) not in (lam_key, SEED_KEY, TARGET_KEY))
        shared.setdefault(_label(job, parsed, lam_key), template)
    direct = {v: knob for v, t in shared.items() if (knob := l0_knob(t))}
    one_round = tuple(v for v, t in shared.items() if placement(t) == CONTROL)
    if not (per_seed and seeds):
        return TargetPlan(shared, lam_key, seeds, subdir, direct, one_round)
    templates: dict[str, tuple[str, ...]] = {}
    for job, raw in zip(parsed, grid, strict=True):
        variant = _label(job, parsed, lam_key)
        if variant in direct or variant in one_round:
            templates.setdefault(variant, shared[variant])
        else:  # a chain per seed: its template keeps the seed
            template = tuple(o for o in raw if _key(o) not in (lam_key, TARGET_KEY))
            templates.setdefault(f"{variant}{SEED_CHAIN}{job[SEED_KEY]}", template)
    seeded = tuple(v for v in templates if v not in shared)
    return TargetPlan(templates, lam_key, seeds, subdir, direct, one_round, seeded)


def one_round_jobs(plan: TargetPlan, targets: Sequence[float]) -> list[list[str]]:
    """The jobs of the variants placed in one round: every target, every seed; each job
    controls its lambda towards its target (`train.l0_target`), or a variant whose L0 is set
    by a knob runs at knob = target. Each target has a folder of its own."""
    jobs = []
    for v in plan.one_round:
        for t in targets:
            if v in plan.direct:
                knob, value = plan.direct[v], max(1, round(t))
            else:
                knob, value = CONTROL_KEY, f"{t:g}"
            folder = round_subdir(plan.subdir, knob, value)
            where = [f"{SUBDIR_KEY}='{folder}'"] if folder else []
            for seed in plan.seeds_of(v) or [None]:
                job = [*plan.templates[v], f"{knob}={value}", f"{TARGET_KEY}={t:g}", *where]
                jobs.append(job + ([f"{SEED_KEY}={seed}"] if seed is not None else []))
    return jobs


def lambda_key(grid: Sequence[Mapping[str, str]]) -> str:
    """`penalty.coefficient` when the grid sets it, else `lambda_multiplier`. A grid that sets
    the coefficient and sweeps the multiplier cannot be refined: the multiplier has no effect
    once the coefficient is set."""
    if not any(COEFFICIENT_KEY in job for job in grid):
        return MULTIPLIER_KEY
    if len(_values(grid, MULTIPLIER_KEY)) > 1:
        raise ValueError(
            "the grid sets penalty.coefficient and sweeps lambda_multiplier, which then has no "
            "effect: with l0_targets sweep one of them, e.g. lambda_multiplier=1 "
            "penalty.coefficient=0.01,0.1,1"
        )
    return COEFFICIENT_KEY


def match_runs(
    returns: Iterable[tuple[Sequence[str] | None, Any]],
    plan: TargetPlan,
    grid_overrides: Mapping[int, Sequence[str]],
) -> list[dict[str, Any]]:
    """Flat run records {variant, lam, seed, l0, status, dir} from launched jobs' returns.

    returns: (the launched job's overrides, its return value) per launched job: one job
    record (a dict), or a packed job's list of member records. A lone job's record answers
    for the overrides it was launched with; a pack's members were launched under the first
    member's overrides, so each member's are found by its grid number (`job`) in
    `grid_overrides`. A job whose folder holds another job's record (outcome `conflict`)
    answers no chain: the L0 it reports is not its own.
    """
    out = []
    for launched, value in returns:
        packed = isinstance(value, list)
        for record in value if packed else [value]:
            if not isinstance(record, dict) or record.get("outcome") == "conflict":
                continue
            overrides = grid_overrides.get(record.get("job")) if packed else launched
            run = _run(record, list(overrides or []), plan)
            if run is not None:
                out.append(run)
    return out


def _run(record: dict[str, Any], overrides: list[str], plan: TargetPlan) -> dict[str, Any] | None:
    variant = plan.variant_of(overrides)
    if variant is None:
        return None
    ov = _parse(overrides)
    if CONTROL_KEY in ov:  # a controlled run: its point is its target (each seed's own lambda)
        lam = float(ov[CONTROL_KEY])
    elif record.get("k") is not None:  # TopK-like: its points are keyed by k, grid and rounds
        lam = record["k"]
    else:
        lam = ov.get(plan.lam_key)
        if lam is None:  # the preset's default lambda: the record says which it was
            field = "coefficient" if plan.lam_key == COEFFICIENT_KEY else MULTIPLIER_KEY
            lam = record.get(field)
    if lam is None:
        return None
    return {
        "variant": variant,
        "lam": float(lam),
        "seed": record.get("seed", ov.get(SEED_KEY)),
        "l0": record.get("l0"),
        "status": record.get("status"),
        "dir": record.get("dir"),
    }


def place_targets(
    plan: TargetPlan,
    runs: Sequence[Mapping[str, Any]],
    targets: Sequence[float] | Sequence[tuple[str, float]],
    tolerance: float,
) -> list[tg.TargetState]:
    """Where every chain stands: targets (every variant at each, variants in grid order, then
    targets in the given order), or the chains themselves as (variant, target)."""
    return [place_chain(plan, runs, v, t, tolerance) for v, t in chain_list(plan, targets)]


def chain_list(
    plan: TargetPlan, targets: Sequence[float] | Sequence[tuple[str, float]]
) -> list[tuple[str, float]]:
    """Chains as (variant, target): given as such, or every variant at each target."""
    if all(isinstance(t, tuple) for t in targets):
        return [(str(v), float(t)) for v, t in targets]  # type: ignore[misc]
    return [(v, float(t)) for v in plan.variants for t in targets]  # type: ignore[arg-type]


def place_chain(
    plan: TargetPlan,
    runs: Sequence[Mapping[str, Any]],
    variant: str,
    target: float,
    tolerance: float,
) -> tg.TargetState:
    """Where one chain (variant, target) stands, from the runs given (those of other variants
    are left out): hit, given up, or the next lambda (or k) to run."""
    runs = [r for r in runs if r["variant"] == variant]
    points = tg.points_from_runs(runs, plan.n_seeds_of(variant)).get(variant, [])
    if variant in plan.one_round and variant not in plan.direct:
        return tg.place_controlled(variant, points, target, tolerance)
    if variant in plan.direct:
        return tg.place_direct(variant, points, target, tolerance)
    tried = {tg.rounded(r["lam"]) for r in runs}  # launched, failed too: never proposed again
    return tg.place(variant, points, target, tolerance, tried)


def close_chain(
    plan: TargetPlan, runs: Sequence[Mapping[str, Any]], state: tg.TargetState, rounds: int
) -> tg.TargetState:
    """A chain's state once its rounds are spent: still pending, it is given up with its
    closest run (points of its own runs, complete with its own seeds) and its rounds."""
    own = [r for r in runs if r["variant"] == state.variant]
    points = tg.points_from_runs(own, plan.n_seeds_of(state.variant))
    return tg.give_up_pending([state], points, rounds)[0]


def next_jobs(plan: TargetPlan, states: Sequence[tg.TargetState]) -> list[list[str]]:
    """The jobs of the next round: every seed at every proposed lambda (or k), once per
    (variant, value) however many targets proposed it; [] when no chain is open."""
    jobs = []
    seen = set()
    for s in states:
        if s.status != tg.TargetStatus.PENDING or (s.variant, s.lam) in seen:
            continue
        seen.add((s.variant, s.lam))
        knob = plan.direct[s.variant] if s.knob == tg.K else plan.lam_key
        value = int(s.lam) if s.knob == tg.K else s.lam
        folder = round_subdir(plan.subdir, knob, value)
        where = [f"{SUBDIR_KEY}='{folder}'"] if folder else []
        for seed in plan.seeds_of(s.variant) or [None]:
            job = [*plan.templates[s.variant], f"{knob}={value}", f"{TARGET_KEY}={s.target:g}"]
            jobs.append(job + where + ([f"{SEED_KEY}={seed}"] if seed is not None else []))
    return jobs


def round_subdir(pattern: str | None, knob: str, value: float | str) -> str | None:
    """The folder pattern of a round job at `knob=value`, or None when the sweep's pattern
    already names the knob (or there is none). A round job keeps the grid's other knobs
    (a TopK run at sae.k = 6 keeps its preset's lambda_multiplier), so the sweep's pattern
    alone would put it in a grid job's folder, or every round's in one."""
    if pattern is None or f"${{{knob}}}" in pattern:
        return None
    tag = f"{FOLDER_TAGS.get(knob, knob.rsplit('.', 1)[-1])}{value}"
    if _MULTIPLIER_TAG in pattern:
        return pattern.replace(_MULTIPLIER_TAG, tag)
    return f"{pattern}_{tag}"


def _label(job: Mapping[str, str], grid: Sequence[Mapping[str, str]], lam_key: str) -> str:
    """The variant's name: the values of the knobs that vary across the grid."""
    set_by_rounds = (lam_key, SEED_KEY, TARGET_KEY)
    varying = [k for k in job if k not in set_by_rounds and len(_values(grid, k)) > 1]
    if not varying:
        return job.get("variant", "all")
    if varying == ["variant"]:
        return job["variant"]
    return ", ".join(f"{k}={job[k]}" for k in varying)


def _values(grid: Sequence[Mapping[str, str]], key: str) -> set[str | None]:
    return {job.get(key) for job in grid}


def _parse(overrides: Sequence[str]) -> dict[str, str]:
    return {
        o.get_key_element(): o.get_value_element_as_str()
        for o in _parser().parse_overrides(list(overrides))
    }


@functools.cache
def _parser() -> OverridesParser:
    return OverridesParser.create()


def _key(override: str) -> str:
    return _parse([override]).popitem()[0]
