"""Target-L0 chains that move on their own (sweep/chain_pipeline.py) through the sweep's
lifecycle (sweep/lifecycle.py), with a fake launcher whose jobs take a time per variant: a fast
chain's next round goes out before a slow chain's round ends, job numbers stay unique, and
targets.json records each target's rounds. No training."""

from __future__ import annotations

import json
import os
import threading
import time
from itertools import pairwise

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from sae_sweep.record import layout
from sae_sweep.sweep import lifecycle
from sae_sweep.sweep.chain_pipeline import PIPELINED_LAUNCHERS, why_rounds
from sae_sweep.sweep.lifecycle import Sweep
from sae_sweep.sweep.running.task import ENV_LAUNCH_ID
from sae_sweep.sweep.running.threads import ENV_JOBS_AT_ONCE
from tests.sweep_fixtures import jobs, run_sweep_in_process

SLURM, SUBMITIT_LOCAL = PIPELINED_LAUNCHERS
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def l0_of(variant: str, lam: float) -> float:
    """A curved lambda -> L0 relation (not a power law), so a tight target takes rounds."""
    scale = {"fast": 40.0, "slow": 60.0}[variant]
    return scale / (lam + 0.15 * lam**2)


class Loader:
    """Composes every job alike: Sweep.launch only needs its folder name and `pack`."""

    def load_sweep_config(self, master, overrides):
        return OmegaConf.create({"hydra": {"sweep": {"subdir": "job"}, "job": {"num": 0}},
                                 "pack": 1, "sae": {"kind": "gated"}})  # fmt: skip


class DelayedLauncher:
    """Each launch takes its variant's time (round jobs only; the grid's are instant) and
    returns a finished record per job, its L0 from `l0_of`. Launches may come from several
    threads at once, as with submitit; each is logged with its start and end."""

    def __init__(self, sweep_dir, delays: dict[str, float]):
        self.sweep_dir, self.delays = sweep_dir, delays
        self.launches: list[dict] = []
        self._lock = threading.Lock()

    def launch(self, jobs, initial_job_idx):
        started = time.monotonic()
        parsed = [dict(o.split("=", 1) for o in job) for job in jobs]
        variants = {p["variant"] for p in parsed}
        is_round = any("l0_target" in p for p in parsed)
        time.sleep(max(self.delays[v] for v in variants) if is_round else 0.0)
        results = []
        for n, (job, p) in enumerate(zip(jobs, parsed, strict=True), start=initial_job_idx):
            record = {"job": n, "dir": f"j{n}", "outcome": "done", "status": "done",
                      "seed": int(p["seed"]), "launch_id": os.environ[ENV_LAUNCH_ID],
                      "l0": l0_of(p["variant"], float(p["lambda_multiplier"]))}  # fmt: skip
            (self.sweep_dir / f"j{n}").mkdir(parents=True)
            (self.sweep_dir / f"j{n}" / layout.JOB).write_text(json.dumps(record))
            results.append(JobReturn(overrides=list(job), status=JobStatus.COMPLETED,
                                     _return_value=record))  # fmt: skip
        with self._lock:
            self.launches.append({"variants": variants, "round": is_round, "first": initial_job_idx,
                                  "n": len(jobs), "budget": os.environ[ENV_JOBS_AT_ONCE],
                                  "start": started, "end": time.monotonic()})  # fmt: skip
        return results


def _sweep(tmp_path, launcher, target: str = SUBMITIT_LOCAL, launcher_options=None,
           lambda_per: str = "variant", **options):  # fmt: skip
    """A sweep whose chains are (variant, target), seeds sharing a lambda, unless
    `lambda_per` is "seed" (the default of real sweeps: a chain per seed)."""
    config = OmegaConf.create({
        "sweep": "unit", "l0_targets": [8], "l0_tolerance": 0.01, "l0_max_rounds": 4,
        "l0_lambda_per": lambda_per,
        "hydra": {"sweep": {"dir": str(tmp_path)},
                  "launcher": {"_target_": target, **(launcher_options or {})},
                  "overrides": {"task": []}},
    })  # fmt: skip
    return Sweep(config, launcher, Loader(), analysis=False, **options)


ARGS = ["variant=fast,slow", "seed=0,1", "lambda_multiplier=1,4"]


pytestmark = pytest.mark.usefixtures("sweep_env")


def _targets(sweep_dir) -> dict:
    return json.loads((sweep_dir / layout.TARGETS).read_text())


def test_a_fast_chain_launches_its_next_round_before_a_slow_chains_round_ends(tmp_path):
    launcher = DelayedLauncher(tmp_path, {"fast": 0.05, "slow": 1.5})
    _sweep(tmp_path, launcher).run(ARGS)
    rounds = [launch for launch in launcher.launches if launch["round"]]
    assert all(len(launch["variants"]) == 1 for launch in rounds)  # one chain per launch
    fast = sorted((r for r in rounds if r["variants"] == {"fast"}), key=lambda r: r["start"])
    slow = sorted((r for r in rounds if r["variants"] == {"slow"}), key=lambda r: r["start"])
    assert len(fast) >= 2 and slow, launcher.launches
    assert fast[1]["start"] < slow[0]["end"]  # no waiting for the slow chain's round

    # Launch numbers of launches from several threads never overlap, and run without a gap.
    numbers = sorted(n for launch in launcher.launches
                     for n in range(launch["first"], launch["first"] + launch["n"]))  # fmt: skip
    assert numbers == list(range(len(numbers)))
    # One thread budget for every chain's jobs: submitit_local runs both chains' 2 seeds.
    assert {r["budget"] for r in rounds} == {"4"}

    report = _targets(tmp_path)
    assert report["per_chain"] is True
    by_variant = {s["variant"]: s for s in report["targets"]}
    assert {s["status"] for s in by_variant.values()} == {"hit"}
    assert by_variant["fast"]["rounds"] == len(fast) and by_variant["slow"]["rounds"] == len(slow)
    assert report["rounds"] == max(len(fast), len(slow))
    assert lifecycle.take_exit_code() == 0


def test_per_seed_chains_each_launch_their_own_seed(tmp_path):
    """l0_lambda_per=seed: four chains (2 variants x 2 seeds), each launch one job of one
    seed; every chain hit, named by its seed in targets.json."""
    launcher = DelayedLauncher(tmp_path, {"fast": 0.05, "slow": 0.3})
    _sweep(tmp_path, launcher, lambda_per="seed").run(ARGS)
    rounds = [launch for launch in launcher.launches if launch["round"]]
    assert rounds and all(launch["n"] == 1 for launch in rounds)
    report = _targets(tmp_path)
    assert sorted(s["variant"] for s in report["targets"]) == [
        "fast, seed=0", "fast, seed=1", "slow, seed=0", "slow, seed=1"]  # fmt: skip
    assert {s["status"] for s in report["targets"]} == {"hit"}
    assert all(len(s["l0_seeds"]) == 1 for s in report["targets"])


def test_slurm_array_parallelism_caps_the_chains_in_flight(tmp_path):
    """array_parallelism=2 with 2 seeds: one chain's jobs at a time, never two chains'."""
    launcher = DelayedLauncher(tmp_path, {"fast": 0.2, "slow": 0.2})
    _sweep(tmp_path, launcher, target=SLURM, launcher_options={"array_parallelism": 2}).run(ARGS)
    rounds = sorted((r for r in launcher.launches if r["round"]), key=lambda r: r["start"])
    assert len(rounds) >= 2 and {v for r in rounds for v in r["variants"]} == {"fast", "slow"}
    assert all(a["end"] <= b["start"] for a, b in pairwise(rounds))  # one at a time
    assert _targets(tmp_path)["per_chain"] is True


def test_chains_on_their_own_land_where_rounds_do(tmp_path):
    """The same targets, lambdas and rounds per chain, by rounds (the launcher waits for every
    chain) and per chain: chains of different variants never read each other's runs."""
    reports, launches = [], []
    for pipeline in (True, False):
        folder = tmp_path / str(pipeline)
        launcher = DelayedLauncher(folder, {"fast": 0.0, "slow": 0.0})
        _sweep(folder, launcher, pipeline_rounds=pipeline).run(ARGS)
        reports.append(_targets(folder))
        launches.append([launch for launch in launcher.launches if launch["round"]])
    per_chain, by_rounds = reports
    assert per_chain["per_chain"] is True and by_rounds["per_chain"] is False

    # the job folders differ: per chain, which chain's jobs get the next numbers is a race
    def placed(report):
        return [{k: v for k, v in t.items() if k != "dirs"} for t in report["targets"]]

    assert placed(per_chain) == placed(by_rounds)
    # By rounds, each launch holds every open chain's jobs (both, until one is placed).
    assert launches[1][0]["variants"] == {"fast", "slow"}
    assert sum(r["n"] for r in launches[0]) == sum(r["n"] for r in launches[1])


def test_a_launcher_that_cannot_run_chains_on_their_own_keeps_rounds(tmp_path, capsys):
    launcher = DelayedLauncher(tmp_path, {"fast": 0.0, "slow": 0.0})
    _sweep(tmp_path, launcher, target=JOBLIB).run(ARGS)
    assert _targets(tmp_path)["per_chain"] is False
    assert [r["variants"] for r in launcher.launches if r["round"]][0] == {"fast", "slow"}
    assert "target L0s after" in capsys.readouterr().out
    assert "JoblibLauncher" in why_rounds(JOBLIB, None)
    assert "job number" in why_rounds(SUBMITIT_LOCAL, "${variant}_${hydra.job.num}")
    assert why_rounds(SUBMITIT_LOCAL, "${variant}/lam${lambda_multiplier}_seed${seed}") is None


def test_a_chain_whose_launch_fails_stops_the_others_and_ends_the_sweep(tmp_path):
    """A failure in one chain's launch (here the slow chain's launcher raising) is raised by
    the sweep; no chain launches after it, and the sweep still ends with its records."""

    class Failing(DelayedLauncher):
        def launch(self, jobs, initial_job_idx):
            if any("variant=slow" in job and any(o.startswith("l0_target=") for o in job)
                   for job in jobs):  # fmt: skip
                time.sleep(0.3)
                raise RuntimeError("the scheduler refused the submission")
            return super().launch(jobs, initial_job_idx)

    launcher = Failing(tmp_path, {"fast": 0.2, "slow": 0.0})
    with pytest.raises(RuntimeError, match="refused"):
        _sweep(tmp_path, launcher).run(ARGS)
    failed_at = time.monotonic()
    time.sleep(0.5)  # a chain still in flight ends, and launches nothing after the failure
    assert all(r["start"] < failed_at for r in launcher.launches)
    assert json.loads((tmp_path / layout.MANIFEST).read_text())["ended"]


@pytest.mark.slow
def test_a_real_joblib_target_sweep_keeps_rounds_and_handles_every_target(tmp_path, monkeypatch,
                                                                          capfd):  # fmt: skip
    """joblib's workers are shared by every launch of the process, so its chains keep rounds:
    a variant placed by rounds ends every target hit or given up with its reason, each with
    the rounds it took, and a re-run into the folder trains nothing."""
    d = tmp_path / "sweep"
    args = ["variant=gated_dn_frozen_live", "seed=0,1", "lambda_multiplier=1,4",
            "train.steps=60", "l0_targets=[4,6]", "l0_max_rounds=2",
            "hydra.launcher.n_jobs=2"]  # fmt: skip
    proc = run_sweep_in_process(monkeypatch, capfd, d, *args, cwd=tmp_path, launcher="joblib")
    assert proc.returncode == 0, proc.stdout[-3000:]
    report = _targets(d)
    assert report["per_chain"] is False and len(report["targets"]) == 4  # 2 seeds x 2 targets
    for s in report["targets"]:
        assert s["status"] in {"hit", "unreachable"}, s
        assert 0 <= s["rounds"] <= report["rounds"] <= 2 and (s["status"] == "hit" or s["reason"])
    before = set(jobs(d))
    proc = run_sweep_in_process(monkeypatch, capfd, d, *args, cwd=tmp_path, launcher="joblib")
    assert proc.returncode == 0 and set(jobs(d)) == before
    assert all(j["outcome"] == "skipped" for j in json.loads((d / "jobs.json").read_text())["jobs"])


def test_a_resumed_sweep_keeps_the_seed_placement_its_targets_were_made_with(tmp_path):
    """A folder whose targets.json predates l0_lambda_per (its seeds shared a lambda) resumes
    by variant, so the rerun trains no new round jobs; so does one recorded by variant. The
    command line's l0_lambda_per places anew; a new folder takes the configured value."""
    launcher = DelayedLauncher(tmp_path, {"fast": 0.0, "slow": 0.0})
    sweep = _sweep(tmp_path, launcher, lambda_per="seed")
    assert sweep.lambda_per() == "seed"  # no targets.json yet
    targets = tmp_path / layout.TARGETS
    targets.write_text(json.dumps({"targets": [{"variant": "fast", "target": 8}]}))
    assert sweep.lambda_per() == "variant"
    named = {"targets": [{"variant": "fast, seed=0", "target": 8}]}  # chains named by seed
    targets.write_text(json.dumps(named))
    assert _sweep(tmp_path, launcher, lambda_per="variant").lambda_per() == "seed"
    targets.write_text(json.dumps({"targets": [], "l0_lambda_per": "seed"}))
    assert _sweep(tmp_path, launcher, lambda_per="variant").lambda_per() == "seed"
    asked = _sweep(tmp_path, launcher, lambda_per="variant")
    asked.config.hydra.overrides.task = ["l0_lambda_per=variant"]
    assert asked.lambda_per() == "variant"


def test_targets_json_records_how_the_seeds_were_placed(tmp_path):
    launcher = DelayedLauncher(tmp_path, {"fast": 0.0, "slow": 0.0})
    _sweep(tmp_path, launcher, lambda_per="seed").run(ARGS)
    assert _targets(tmp_path)["l0_lambda_per"] == "seed"


@pytest.mark.parametrize("pipeline", [True, False])
def test_a_tuned_sweep_takes_only_the_chosen_and_shared_values_past_the_reference(
    tmp_path, monkeypatch, pipeline
):
    """tune_criterion.other_targets: chosen, per chain and by rounds: L0 8 (the reference) at
    every lr, then L0 4 only at each variant's chosen lr and the shared 0.003. The choice is
    faked here (fast chooses 0.001, slow the shared value); tests/test_sweep_tuning.py makes it
    through the analysis on real runs."""
    from sae_sweep.sweep import tuned_stages

    def choose(sweep_dir, spec, runs):
        identity = {}
        for r in runs:
            variant, lr = (part.split("=")[1] for part in r["variant"].split(", "))
            identity[r["variant"]] = (variant, (lr,))
        best = {"fast": ("0.001",), "slow": ("0.003",)}
        return tuned_stages.Choice(identity, best, ("0.003",), {"fast": "0.001", "slow": "0.003"})

    monkeypatch.setattr(tuned_stages, "choose", choose)
    launcher = DelayedLauncher(tmp_path, {"fast": 0.0, "slow": 0.0})
    sweep = _sweep(tmp_path, launcher, pipeline_rounds=pipeline)
    sweep.config.l0_targets = [4, 8]
    sweep.config.tune = {"train.lr": [0.001, 0.003, 0.01]}
    sweep.config.tune_criterion = {"at_l0": 8, "shared": {"train.lr": 0.003}}
    sweep.config.train = {"lr": 0.003}
    sweep.run(ARGS)

    report = _targets(tmp_path)
    chains = {(t["variant"], t["target"]) for t in report["targets"]}
    every_lr_at_8 = {(f"variant={v}, train.lr={lr}", 8.0) for v in ("fast", "slow")
                     for lr in ("0.001", "0.003", "0.01")}  # fmt: skip
    kept_at_4 = {
        (f"variant={v}, train.lr={lr}", 4.0)
        for v, lr in (("fast", "0.001"), ("fast", "0.003"), ("slow", "0.003"))
    }
    assert chains == every_lr_at_8 | kept_at_4
    assert {t["status"] for t in report["targets"]} == {"hit"}
    assert report["tuned"] == {"at_l0": 8, "other_targets": "chosen", "at_edge": {},
                               "chosen": {"fast": "0.001", "slow": "0.003"},
                               "chains_left_out": 3}  # fmt: skip
    assert report["per_chain"] is pipeline
    assert lifecycle.take_exit_code() == 0
