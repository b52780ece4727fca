"""The target-L0 sweep's plan, round batches and record matching (sweep/planning/chains.py),
on override lists and job records alone: no training, no subprocess, no Hydra launcher."""

from __future__ import annotations

import pytest

from sae_sweep.sweep.planning import chains
from sae_sweep.sweep.planning import targets as tg
from sae_sweep.sweep.planning.grid import grid_jobs

# L0 = c * lambda^-a per variant: an exact power law, which the fit places in one round.
LAWS = {"gated_original": (40.0, 1.3), "gated_dn_trainable_live": (12.0, 0.8)}


def grid(**axes: list) -> list[list[str]]:
    """The grid's jobs (the sweep's own expansion), from axes of any values."""
    return grid_jobs({k: [str(v) for v in values] for k, values in axes.items()})


def run_job(overrides: list[str], job: int, lam_key: str, seed_scale=None) -> dict:
    """The record a finished job returns (as sweep/running/task.py writes it), its L0 from LAWS
    (times `seed_scale[seed]` when given: seeds that disagree at one lambda).
    A TopK job lands exactly on its k: `sae.k` when set, else its preset's k at the
    multiplier (${k_of:32,m,1})."""
    ov = dict(o.split("=", 1) for o in overrides)
    if ov["variant"] == "topk":
        k = int(ov.get("sae.k") or max(1, round(32 / float(ov["lambda_multiplier"]))))
        l0 = float(k)
    else:
        c, a = LAWS[ov["variant"]]
        l0, k = c * float(ov[lam_key]) ** -a, None
        l0 *= (seed_scale or {}).get(int(ov["seed"]), 1.0)
    return {"job": job, "dir": f"{ov['variant']}/{job}", "variant": ov["variant"],
            "lambda_multiplier": float(ov.get("lambda_multiplier", 1.0)),
            "coefficient": float(ov.get("penalty.coefficient", 0.1)), "k": k,
            "seed": int(ov["seed"]), "l0": l0, "status": "done", "outcome": "done"}  # fmt: skip


class FakeSweep:
    """Launches jobs as the sweep does. Grid numbers continue across rounds; a job's record
    carries its grid number when it went through a pack file (packed, or a batch in which
    jobs were settled without launching), else Hydra's launch number, which differs from the
    grid number once jobs were settled or packed. A pack returns its members' records under
    its first member's overrides."""

    def __init__(self, lam_key: str, pack: int = 1, settled: int = 0, seed_scale=None):
        self.lam_key, self.pack, self.settled = lam_key, pack, settled
        self.seed_scale = seed_scale
        self.grid_overrides: dict[int, list[str]] = {}
        self.n_launched = 0

    def launch(self, jobs: list[list[str]]) -> list[tuple[list[str], object]]:
        first = len(self.grid_overrides)
        numbers = list(range(first, first + len(jobs)))
        self.grid_overrides.update(zip(numbers, jobs, strict=True))
        settled, self.settled = numbers[: self.settled], 0  # finished in an earlier launch
        returns = [(self.grid_overrides[n], self._record(n, n)) for n in settled]
        todo = numbers[len(settled) :]
        for i in range(0, len(todo), self.pack):
            members = todo[i : i + self.pack]
            if self.pack > 1 or settled:  # through a pack file: grid numbers, a list
                value = [self._record(n, n) for n in members]
            else:
                value = self._record(members[0], self.n_launched)
            returns.append((self.grid_overrides[members[0]], value))
            self.n_launched += 1
        return returns

    def _record(self, grid_number: int, job: int) -> dict:
        return run_job(self.grid_overrides[grid_number], job, self.lam_key, self.seed_scale)


def refine(g: list[list[str]], targets, *, pack=1, settled=0, max_rounds=3,
           subdir="${variant}/lam${lambda_multiplier}_seed${seed}", per_seed=False,
           seed_scale=None):  # fmt: skip
    """The sweep's loop (sweep/lifecycle.py) over FakeSweep: grid, then rounds."""
    plan = chains.plan_targets(g, subdir, lambda t: "sae.k" if "variant=topk" in t else None,
                               per_seed=per_seed)  # fmt: skip
    sweep = FakeSweep(plan.lam_key, pack, settled, seed_scale)
    runs = chains.match_runs(sweep.launch(g), plan, sweep.grid_overrides)
    rounds, batches = 0, []
    while True:
        states = chains.place_targets(plan, runs, targets, 0.01)
        batch = chains.next_jobs(plan, states)
        if not batch or rounds >= max_rounds:
            break
        rounds += 1
        batches.append(batch)
        runs += chains.match_runs(sweep.launch(batch), plan, sweep.grid_overrides)
    return plan, states, rounds, batches, runs


def test_a_plan_names_each_variant_by_the_axes_that_vary():
    g = grid(variant=["gated_original", "gated_dn_trainable_live"],
             **{"sae.encoder_init_transpose": ["true", "false"]},
             lambda_multiplier=[0.5, 2.0], seed=[0, 1, 2], **{"train.steps": [200]})  # fmt: skip
    plan = chains.plan_targets(g)
    assert plan.lam_key == "lambda_multiplier" and plan.seeds == ("0", "1", "2")
    assert plan.variants == [
        "variant=gated_original, sae.encoder_init_transpose=True",  # Hydra's spelling
        "variant=gated_original, sae.encoder_init_transpose=False",
        "variant=gated_dn_trainable_live, sae.encoder_init_transpose=True",
        "variant=gated_dn_trainable_live, sae.encoder_init_transpose=False",
    ]
    # A template holds everything but lambda, seed and target: fixed axes included.
    assert plan.templates[plan.variants[1]] == (
        "variant=gated_original",
        "sae.encoder_init_transpose=false",
        "train.steps=200",
    )
    for job in g:
        assert plan.variant_of(job) is not None
    assert plan.variant_of(["variant=standard_dn", "lambda_multiplier=1", "seed=0"]) is None


def test_each_open_chain_launches_every_seed_once_per_proposal():
    g = grid(variant=["gated_original", "gated_dn_trainable_live"], lambda_multiplier=[1.0, 4.0],
             seed=[0, 1, 2])  # fmt: skip
    plan = chains.plan_targets(g, "${variant}/lam${lambda_multiplier}_seed${seed}")
    pending = tg.TargetStatus.PENDING
    states = [
        tg.TargetState("gated_original", 8.0, pending, lam=2.5),
        tg.TargetState("gated_original", 9.0, pending, lam=2.5),  # the same lambda: once
        tg.TargetState("gated_dn_trainable_live", 8.0, tg.TargetStatus.HIT, lam=1.0, l0=8.0),
        tg.TargetState("gated_dn_trainable_live", 16.0, pending, lam=0.31),
    ]
    jobs = chains.next_jobs(plan, states)
    assert jobs == [
        ["variant=gated_original", "lambda_multiplier=2.5", "l0_target=8", f"seed={s}"]
        for s in (0, 1, 2)
    ] + [
        ["variant=gated_dn_trainable_live", "lambda_multiplier=0.31", "l0_target=16", f"seed={s}"]
        for s in (0, 1, 2)
    ]  # the pattern names lambda_multiplier: no folder override needed
    assert chains.next_jobs(plan, states[2:3]) == []  # nothing open: the rounds end


@pytest.mark.parametrize("pack,settled", [(1, 0), (1, 5), (2, 0), (3, 4)])
def test_packed_settled_or_not_every_record_answers_its_own_chain(pack, settled):
    """A pack's members answer by their grid number, a lone job by the overrides it was
    launched with: on a resume (grid jobs settled, not launched) a round job's launch number
    is not its grid number."""
    g = grid(variant=list(LAWS), lambda_multiplier=[0.5, 1.0, 2.0, 4.0], seed=[0, 1, 2])
    plan, states, rounds, batches, runs = refine(g, [8.0, 16.0], pack=pack, settled=settled)
    assert rounds == 1 and [s.status for s in states] == [tg.TargetStatus.HIT] * 4
    n_jobs = len(g) + sum(len(b) for b in batches)
    assert len(runs) == n_jobs  # every launched job answers exactly one chain
    for r in runs:
        c, a = LAWS[r["variant"]]
        assert r["l0"] == pytest.approx(c * r["lam"] ** -a)  # its own lambda, not a neighbour's
    # Four chains, three seeds each, every seed of every chain launched.
    assert sorted(len(b) for b in batches) == [12]


def test_per_seed_chains_place_every_seed_at_its_own_lambda():
    """l0_lambda_per=seed: seeds whose L0 differs by -25%..+30% at one lambda each land on the
    target (a shared lambda leaves the outer seeds off it); a round launches a chain's own
    seed only, and each record answers its own seed's chain."""
    scale = {0: 1.0, 1: 1.3, 2: 0.75}
    g = grid(variant=list(LAWS), lambda_multiplier=[0.5, 4.0], seed=[0, 1, 2])
    plan, states, rounds, batches, runs = refine(g, [8.0, 16.0], per_seed=True, seed_scale=scale)
    assert plan.seeded == tuple(plan.variants) and plan.seeds == ("0", "1", "2")
    assert plan.variants == [f"{v}, seed={s}" for v in LAWS for s in (0, 1, 2)]
    assert all(f"seed={v[-1]}" in plan.templates[v] for v in plan.variants)
    assert rounds == 1 and len(states) == 12
    assert all(s.status == tg.TargetStatus.HIT and len(s.l0_seeds) == 1 for s in states)
    assert all(abs(s.l0 / s.target - 1) < 0.01 for s in states)
    assert len(batches[0]) == 12  # one job per chain: its own seed at its own lambda
    for job in batches[0]:
        assert sum(o.startswith("seed=") for o in job) == 1
    for r in runs:
        assert r["variant"].endswith(f"seed={r['seed']}")
    lams = {(s.variant.split(",")[0], s.target): set() for s in states}
    for s in states:
        lams[s.variant.split(",")[0], s.target].add(s.lam)
    assert all(len(v) == 3 for v in lams.values())  # the seeds' lambdas differ

    # A TopK variant beside them is placed by its k, all seeds at once: one chain per target.
    with_topk = grid(variant=[*LAWS, "topk"], lambda_multiplier=[0.5, 4.0], seed=[0, 1, 2])
    plan, states, _, _, _ = refine(with_topk, [8.0], per_seed=True, seed_scale=scale)
    assert "topk" in plan.variants and "topk" not in plan.seeded
    (topk,) = [s for s in states if s.variant == "topk"]
    assert topk.status == tg.TargetStatus.HIT and len(topk.l0_seeds) == 3

    # The same seeds sharing one lambda per variant: the seed-mean lands, the seeds do not.
    _, shared, _, _, _ = refine(g, [8.0, 16.0], seed_scale=scale)
    assert all(s.status == tg.TargetStatus.HIT for s in shared)
    assert all(max(abs(x / s.target - 1) for x in s.l0_seeds) > 0.2 for s in shared)


def test_the_lambda_key_penalty_coefficient_labels_and_launches_every_seed():
    g = grid(variant=list(LAWS), lambda_multiplier=[1], **{"penalty.coefficient": [0.5, 4.0]},
             seed=[0, 1])  # fmt: skip
    plan, states, rounds, batches, runs = refine(
        g, [8.0, 16.0], pack=2, subdir="${variant}/lam${lambda_multiplier}_seed${seed}"
    )
    assert plan.lam_key == "penalty.coefficient"
    assert plan.variants == list(LAWS)  # no "?" label, and the coefficient is no variant axis
    assert {r["variant"] for r in runs} == set(LAWS)
    assert rounds == 1 and all(s.status == tg.TargetStatus.HIT for s in states)
    (batch,) = batches
    per_chain = {}
    for job in batch:
        ov = dict(o.split("=", 1) for o in job)
        per_chain.setdefault((ov["variant"], ov["l0_target"]), set()).add(ov["seed"])
        # Its folder names the coefficient: the sweep's pattern names only the multiplier,
        # which every round job shares with the grid (lam1).
        assert ov["hydra.sweep.subdir"] == (
            f"'${{variant}}/coef{ov['penalty.coefficient']}_seed${{seed}}'"
        )
    assert len(per_chain) == 4 and all(seeds == {"0", "1"} for seeds in per_chain.values())
    lines = tg.summary_lines(states)
    assert not any("?" in line for line in lines)
    assert all(" at lambda " in line for line in lines)


def test_a_coefficient_grid_that_also_sweeps_the_multiplier_is_refused_with_the_fix():
    g = grid(variant=["gated_original"], lambda_multiplier=[1, 2],
             **{"penalty.coefficient": [0.1]}, seed=[0])  # fmt: skip
    with pytest.raises(ValueError, match="lambda_multiplier=1 penalty.coefficient="):
        chains.plan_targets(g)


def test_a_topk_chain_is_keyed_by_k_in_folders_of_its_own():
    g = grid(variant=["topk", "gated_original"], lambda_multiplier=[1.0, 2.0], seed=[0, 1])

    plan, states, rounds, batches, runs = refine(g, [8.0], pack=2)
    assert plan.direct == {"topk": "sae.k"}
    assert rounds == 1
    topk = next(s for s in states if s.variant == "topk")
    assert topk.status == tg.TargetStatus.HIT and topk.knob == tg.K and topk.lam == 8
    k_jobs = [job for job in batches[0] if "sae.k=8" in job]
    assert len(k_jobs) == 2  # both seeds
    assert all("hydra.sweep.subdir='${variant}/k8_seed${seed}'" in job for job in k_jobs)
    assert {r["lam"] for r in runs if r["variant"] == "topk"} == {32.0, 16.0, 8.0}  # keyed by k


def test_a_conflicting_or_foreign_record_answers_no_chain():
    g = grid(variant=["gated_original"], lambda_multiplier=[1.0, 2.0], seed=[0])
    plan = chains.plan_targets(g)
    done = run_job(g[0], 0, "lambda_multiplier")
    conflict = {**run_job(g[1], 1, "lambda_multiplier"), "outcome": "conflict"}
    foreign = run_job(["variant=gated_dn_trainable_live", "lambda_multiplier=1", "seed=0"], 2,
                      "lambda_multiplier")  # fmt: skip
    returns = [(g[0], done), (g[1], conflict), (["variant=gated_dn_trainable_live"], foreign)]
    runs = chains.match_runs(returns, plan, dict(enumerate(g)))
    assert [(r["variant"], r["lam"]) for r in runs] == [("gated_original", 1.0)]


def test_the_folder_of_a_round_job_names_its_knob():
    pattern = "${variant}/lam${lambda_multiplier}_seed${seed}"
    assert chains.round_subdir(pattern, "lambda_multiplier", 2.5) is None
    assert chains.round_subdir(pattern, "sae.k", 6) == "${variant}/k6_seed${seed}"
    assert chains.round_subdir(pattern, "penalty.coefficient", 0.03) == (
        "${variant}/coef0.03_seed${seed}"
    )
    assert chains.round_subdir("${hydra.job.num}", "sae.k", 6) == "${hydra.job.num}_k6"
    assert chains.round_subdir(None, "sae.k", 6) is None


def test_one_round_variants_leave_the_grid_and_run_every_target_and_seed():
    """l0_placement=control for one variant: its grid points go, its jobs are one per target
    and seed (train.l0_target and the bookkeeping l0_target, a folder per target); the
    rounds variant keeps its grid; each controlled record answers its own target's chain."""
    g = grid(variant=["gated_original", "gated_dn_trainable_live"], lambda_multiplier=[1, 2],
             seed=[0, 1, 2])  # fmt: skip
    subdir = "${variant}/lam${lambda_multiplier}_seed${seed}"
    placement = lambda t: "control" if t[0] == "variant=gated_original" else "rounds"  # noqa: E731
    plan = chains.plan_targets(g, subdir, placement=placement)
    assert plan.one_round == ("gated_original",)
    kept = [j for j in g if plan.variant_of(j) not in plan.one_round]
    assert len(kept) == 6 and all("variant=gated_dn_trainable_live" in j for j in kept)
    jobs = chains.one_round_jobs(plan, [8.0, 16.0])
    assert len(jobs) == 1 * 2 * 3
    assert jobs[0] == ["variant=gated_original", "train.l0_target=8", "l0_target=8",
                       "hydra.sweep.subdir='${variant}/target8_seed${seed}'", "seed=0"]  # fmt: skip
    assert all(plan.variant_of(j) == "gated_original" for j in jobs)
    records = [(j, {"job": i, "dir": f"d{i}", "seed": int(j[-1][-1]), "l0": 8.2 if "=8" in j[1]
                    else 12.0, "status": "done", "lambda_multiplier": 1.0})
               for i, j in enumerate(jobs)]  # fmt: skip
    runs = chains.match_runs(records, plan, {})
    states = chains.place_targets(plan, runs, [8.0, 16.0], 0.1)
    placed = [s for s in states if s.variant == "gated_original"]
    assert [(s.status, s.knob) for s in placed] == [
        (tg.TargetStatus.HIT, tg.CONTROL),
        (tg.TargetStatus.UNREACHABLE, tg.CONTROL),
    ]
    assert "l0_placement=rounds" in placed[1].reason
    assert not [s for s in placed if s.status == tg.TargetStatus.PENDING]  # no second round
