"""Target-L0 placement driven by fake lambda -> L0 relations (no training), then one real
small targeted sweep."""

import json
import math

import pandas as pd
import pytest

from sae_sweep.sweep.planning import targets as tg
from tests.sweep_fixtures import jobs, run_sweep_in_process


def _refine(l0_of, grid, targets, tol=0.1, max_rounds=3, seeds=(0, 1)):
    """Run the sweeper's loop on a fake relation: grid, then rounds of proposals."""
    runs = [{"variant": "v", "lam": lam, "seed": s, "l0": l0_of(lam, s), "status": "done"}
            for lam in grid for s in seeds]  # fmt: skip
    rounds = 0
    while True:
        points = tg.points_from_runs(runs, len(seeds))
        tried = {r["lam"] for r in runs}
        states = [tg.place("v", points["v"], t, tol, tried) for t in targets]
        todo = {s.lam for s in states if s.status == tg.TargetStatus.PENDING}
        if not todo or rounds >= max_rounds:
            return tg.give_up_pending(states, points, rounds), rounds, runs
        rounds += 1
        runs += [{"variant": "v", "lam": lam, "seed": s, "l0": l0_of(lam, s), "status": "done"}
                 for lam in sorted(todo) for s in seeds]  # fmt: skip


def power_law(lam, seed):
    """L0 = 40 lambda^-1.3, seeds 2% apart; saturates at 120 (dense end), floor 0.5."""
    return min(120.0, max(0.5, 40.0 * lam**-1.3)) * (1 + 0.02 * (seed - 0.5))


def test_reachable_targets_hit_within_tolerance_in_one_round():
    states, rounds, runs = _refine(power_law, [0.5, 1, 2, 4], [4, 8, 16, 32, 64])
    assert rounds == 1
    assert [s.status for s in states] == [tg.TargetStatus.HIT] * 5
    for s in states:
        assert abs(s.l0 - s.target) <= 0.1 * s.target
        assert len(s.l0_seeds) == 2  # all seeds at the same lambda
        assert s.l0 == pytest.approx(sum(s.l0_seeds) / 2)


@pytest.mark.parametrize("c,a", [(40.0, 1.3), (10.0, 0.7), (200.0, 2.5)])
@pytest.mark.parametrize("grid", [[0.5, 1, 2, 4], [1, 4], [8, 16]])
def test_an_exact_power_law_is_placed_in_exactly_one_round(c, a, grid):
    """L0 = c lambda^-a is a line in log-log: the interpolation between the bracketing lambdas,
    and the extrapolation of the end segment up to EXTRAPOLATE x beyond the grid, land on
    every target at once (to the 4 significant digits of a proposed lambda)."""
    l0s = [c * lam**-a for lam in grid]
    span = (tg.EXTRAPOLATE**-a, tg.EXTRAPOLATE**a)  # the L0 range the fit may extrapolate to
    lo, hi = min(l0s) * span[0], max(l0s) * span[1]
    targets = [t for t in (1, 2, 4, 8, 16, 32, 64, 128) if lo < t < hi]
    states, rounds, _ = _refine(lambda lam, seed: c * lam**-a, grid, targets, tol=0.002)
    assert len(targets) >= 3 and rounds == 1
    assert all(s.status == tg.TargetStatus.HIT for s in states), states
    for s in states:
        assert s.l0 == pytest.approx(s.target, rel=0.002)


def test_two_close_proposals_do_not_read_as_saturation():
    """One round's proposals can land 1% apart in lambda (one clamped at EXTRAPOLATE, one
    inside): the change of L0 between them is small however steep the curve; extrapolating
    from them declared L0 16 of an L0 = 40 lambda^-1.3 law unable to rise above 16.2."""
    states, rounds, _ = _refine(lambda lam, seed: 40.0 * lam**-1.3, [8, 16], [16, 32, 64])
    assert [s.status for s in states] == [tg.TargetStatus.HIT] * 3, states
    assert rounds == 2  # 32 and 64 lie beyond EXTRAPOLATE x the grid: a second round


def test_target_beyond_saturation_is_unreachable_with_reason():
    states, rounds, _ = _refine(power_law, [0.5, 1, 2, 4], [200])
    (s,) = states
    assert s.status == tg.TargetStatus.UNREACHABLE
    assert "outside the range" in s.reason and "rises above" in s.reason
    assert rounds <= 3


def test_non_monotone_relation_is_declared_not_looped():
    def bumpy(lam, seed):  # falls, rises again, falls: crosses L0 20 three times
        return {0.5: 60, 1: 15, 2: 30, 4: 10}.get(lam, 20)

    states, rounds, _ = _refine(bumpy, [0.5, 1, 2, 4], [20])
    (s,) = states
    assert s.status == tg.TargetStatus.UNREACHABLE
    assert "not monotone" in s.reason and rounds == 0


def test_jump_in_l0_ends_within_max_rounds_with_reason():
    def cliff(lam, seed):  # the mixed case: L0 drops from 40 to 3 at lambda 1.5
        return 40.0 if lam < 1.5 else 3.0

    states, rounds, runs = _refine(cliff, [0.5, 1, 2, 4], [16], max_rounds=10)
    (s,) = states
    assert s.status == tg.TargetStatus.UNREACHABLE
    assert "jumps" in s.reason or "rounds" in s.reason
    lams = [r["lam"] for r in runs]
    assert len(lams) == len(set(zip(lams, [r["seed"] for r in runs], strict=True)))  # no repeats


def test_rounds_limit_reports_closest_run():
    def curved(lam, seed):  # not a power law: one log-log step cannot land exactly
        return 60.0 * math.exp(-lam)

    states, rounds, _ = _refine(curved, [0.5, 4], [8], tol=0.001, max_rounds=1)
    (s,) = states
    assert rounds == 1 and s.status == tg.TargetStatus.UNREACHABLE
    assert "after 1 refinement rounds" in s.reason and s.l0 is not None


def test_incomplete_seeds_do_not_count_as_a_hit():
    runs = [{"variant": "v", "lam": 1.0, "seed": 0, "l0": 8.0, "status": "done"},
            {"variant": "v", "lam": 1.0, "seed": 1, "l0": None, "status": "failed"},
            {"variant": "v", "lam": 2.0, "seed": 0, "l0": 4.0, "status": "done"},
            {"variant": "v", "lam": 2.0, "seed": 1, "l0": 4.1, "status": "done"}]  # fmt: skip
    points = tg.points_from_runs(runs, n_seeds=2)
    s = tg.place("v", points["v"], 8.0, 0.1, tried={1.0, 2.0})
    assert s.status != tg.TargetStatus.HIT


def test_a_controlled_miss_names_both_causes_and_their_fixes():
    """Control has no second round: a miss says how to tell a control phase too short for
    the run (L0 drifted after lambda froze) from a variant control cannot steer, and the fix
    of each (a 60-step run missed targets 8 and 16 and was told only to use rounds)."""
    hit = tg.place_controlled("v", [tg.Point(8.0, (7.6, 8.1), True)], 8.0, 0.1)
    assert hit.status is tg.TargetStatus.HIT and hit.knob == tg.CONTROL
    miss = tg.place_controlled("v", [tg.Point(16.0, (11.0, 12.0), True)], 16.0, 0.1)
    assert miss.status is tg.TargetStatus.UNREACHABLE
    assert "reached L0 11.5" in miss.reason and "train_l0_at_freeze" in miss.reason
    assert "train.l0_control_fraction" in miss.reason and "l0_placement=rounds" in miss.reason
    unfinished = tg.place_controlled("v", [tg.Point(16.0, (15.0,), False)], 16.0, 0.1)
    assert unfinished.reason == "not every seed finished"


def test_direct_k_variant_is_run_at_k_equal_target():
    s = tg.place_direct("topk", [], 16, 0.1)
    assert s.status == tg.TargetStatus.PENDING and s.lam == 16
    done = [tg.Point(16.0, (16.0, 16.0), True)]
    hit = tg.place_direct("topk", done, 16, 0.1)
    assert hit.status == tg.TargetStatus.HIT
    missed = tg.place_direct("topk", [tg.Point(16.0, (9.0, 9.0), True)], 16, 0.1)
    assert missed.status == tg.TargetStatus.UNREACHABLE
    # Every state of a direct variant says its position is a k, not a lambda.
    assert s.knob == hit.knob == missed.knob == tg.K
    assert hit.as_dict()["knob"] == "k"
    assert tg.place("v", [], 8.0, 0.1, tried=set()).knob == tg.LAMBDA
    # Rounds run out (l0_max_rounds=0) before k = 16 ran: the closest run is still a k.
    grid = {"topk": [tg.Point(59.0, (40.0, 41.0), True)]}
    (gave_up,) = tg.give_up_pending([s], grid, rounds=0)
    assert gave_up.status == tg.TargetStatus.UNREACHABLE and gave_up.knob == tg.K
    assert gave_up.lam == 59.0
    assert tg.direct_l0_knob({"kind": "topk", "k": 32}) == "sae.k"
    assert tg.direct_l0_knob({"kind": "gated"}) is None


def test_summary_columns_line_up_with_long_recipe_labels():
    """A recipe sweep's labels name several overrides (about 80 characters): the L0 and
    status columns still start at one place on every line."""
    long = "variant=gated_original, sae.encoder_init_transpose=True, penalty.warmup_steps=0"
    states = [
        tg.TargetState("topk", 8, tg.TargetStatus.HIT, 8, 8.0, [8.0, 8.0], knob=tg.K),
        tg.TargetState(long, 16, tg.TargetStatus.HIT, 0.31, 15.2, [15.0, 15.4]),
        tg.TargetState(long, 32, tg.TargetStatus.UNREACHABLE, 0.05, 60.0, reason="saturated"),
    ]
    lines = tg.summary_lines(states)
    assert len({ln.index(" L0 ") for ln in lines}) == 1
    assert len({ln.index(s.status.value) for ln, s in zip(lines, states, strict=True)}) == 1
    assert "L0 8 at k 8" in lines[0] and "L0 15.2 at lambda 0.31" in lines[1]
    assert lines[2].endswith("L0 60 at lambda 0.05: saturated")  # the reason set off


@pytest.mark.parametrize("targets,tol,msg", [([0, 8], 0.1, "positive"), ([8], 1.5, "l0_tolerance")])
def test_bad_target_settings_name_the_fix(targets, tol, msg):
    with pytest.raises(ValueError, match=msg):
        tg.validate_targets(targets, tol, 3)


@pytest.mark.slow
def test_real_targeted_sweep_lands_on_targets_and_reports_paired_verdicts(tmp_path, monkeypatch,
                                                                          capfd):  # fmt: skip
    """The sweeper end to end on tiny synthetic jobs (d = 16): one command runs the grid
    and the refinement rounds, then the analysis; a re-run trains nothing. TopK is placed
    by its k (sae.k = 6), in folders of its own: its target runs keep the grid's
    lambda_multiplier, so the lambda alone would put them in a grid job's folder."""
    d = tmp_path / "sweep"
    args = ["variant=gated_dn_trainable_live,topk", "seed=0,1", "lambda_multiplier=1,4",
            "train.steps=120", "l0_targets=[6]", "l0_placement=rounds"]  # fmt: skip
    proc = run_sweep_in_process(monkeypatch, capfd, d, *args,
                                "hydra.sweeper.analysis=true", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    summary = {line.split(" L0 ")[0].strip(): line for line in proc.stdout.splitlines()
               if " hit " in line}  # fmt: skip
    assert " at k 6" in summary["topk"]
    assert " at lambda " in summary["gated_dn_trainable_live, seed=1"]
    report = json.loads((d / "targets.json").read_text())
    assert report["rounds"] >= 1
    knobs = {s["variant"]: s["knob"] for s in report["targets"]}
    # TopK's seeds share k = 6; the gated variant's seeds each find their own lambda.
    assert knobs == {"topk": "k", "gated_dn_trainable_live, seed=0": "lambda",
                     "gated_dn_trainable_live, seed=1": "lambda"}  # fmt: skip
    for s in report["targets"]:
        assert s["status"] == "hit", s  # both variants reach L0 6 on this data
        assert abs(s["l0"] - 6) <= 0.6 and len(s["l0_seeds"]) == (2 if s["knob"] == "k" else 1)
    table = json.loads((d / "jobs.json").read_text())["jobs"]
    assert {j["l0_target"] for j in table} >= {6.0, None}  # refinement jobs name their target
    assert all(math.isfinite(j["l0"]) for j in table)
    topk = {j["dir"]: j for j in table if j["dir"].startswith("topk/")}
    assert {"topk/k6_seed0", "topk/k6_seed1"} <= set(topk), sorted(topk)
    assert all(j["k"] == 6 and j["lambda_multiplier"] == 1.0 for d, j in topk.items()
               if d.startswith("topk/k6"))  # fmt: skip

    # The report opens with a paired verdict at the target; the grid's lambda 0.5 runs
    # (L0 > d/2 = 8) are dense and appear in no verdict.
    md = (d / "report.md").read_text()
    first = md.split("## Verdicts per matched L0 (paired seeds, Holm-adjusted)\n")[1]
    first = first.split("##")[0]
    fvu_line = next(ln for ln in first.splitlines() if ln.startswith("- **fvu**"))
    assert "at L0 6, 2 seeds" in fvu_line
    verdict = fvu_line.rsplit("**", 2)[-2]  # the last bold phrase is the verdict word
    assert verdict.split(" (")[0] in {"b better", "a better", "equivalent within ±5%",
                                      "inconclusive"}, fvu_line  # fmt: skip
    assert (d / "plots" / "relative_fvu.png").stat().st_size > 1000
    verdicts = pd.read_csv(d / "tables" / "paired_fvu.csv")
    assert (verdicts["L0"] == 6).all()
    runs = pd.read_csv(d / "tables" / "runs.csv")
    assert (runs["l0"] > 8).any()  # dense runs exist, and are in the runs table

    # Re-running the same command resumes: nothing new is trained, no duplicate job.
    before = set(jobs(d))
    proc = run_sweep_in_process(monkeypatch, capfd, d, *args, cwd=tmp_path)
    assert proc.returncode == 0 and set(jobs(d)) == before
    assert all(j["outcome"] == "skipped" for j in json.loads((d / "jobs.json").read_text())["jobs"])


def test_one_round_target_sweep_launches_variants_x_targets_x_seeds(tmp_path, monkeypatch, capfd):
    """l0_placement=control (TopK's preset's own; set here for every variant): no grid, no
    refinement round; every (variant, target, seed) is one job, in a folder of its own
    target, steering its lambda (train.l0_target) or at sae.k = target; targets.json says
    where each landed; a re-run trains nothing."""
    d = tmp_path / "sweep"
    args = ["variant=gated_dn_trainable_live,topk", "seed=0,1", "lambda_multiplier=1,2,4",
            "train.steps=60", "l0_targets=[4,6]", "l0_placement=control"]  # fmt: skip
    proc = run_sweep_in_process(monkeypatch, capfd, d, *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    ran = jobs(d)
    assert sorted(ran) == sorted(
        f"{v}/{tag}{t}_seed{s}" for v, tag in (("gated_dn_trainable_live", "target"), ("topk", "k"))
        for t in (4, 6) for s in (0, 1)
    )  # fmt: skip
    table = json.loads((d / "jobs.json").read_text())["jobs"]
    assert len(table) == 8 and {j["l0_target"] for j in table} == {4.0, 6.0}
    controlled = json.loads((d / "gated_dn_trainable_live/target6_seed1/summary.json").read_text())
    assert controlled["knobs"]["train.l0_target"] == 6.0
    assert controlled["l0_control"]["target"] == 6.0
    report = json.loads((d / "targets.json").read_text())
    assert report["rounds"] == 0
    knobs = {(s["variant"], s["target"]): s["knob"] for s in report["targets"]}
    assert set(knobs.values()) == {"l0_target", "k"} and len(knobs) == 4
    assert json.loads((d / "sweep.json").read_text())["n_jobs"] == 8

    before = set(jobs(d))  # re-run: every job skipped, none added
    proc = run_sweep_in_process(monkeypatch, capfd, d, *args, cwd=tmp_path)
    assert proc.returncode == 0 and set(jobs(d)) == before
    assert all(j["outcome"] == "skipped" for j in json.loads((d / "jobs.json").read_text())["jobs"])
