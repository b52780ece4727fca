"""A sweep's `tune`: the spec's checks (each names its fix), the grid expanded by the tuned
values with a folder per value, target chains per (variant, tuned value), and a tiny real
sweep whose report names each variant's chosen value and whose re-run trains nothing."""

import json

import pandas as pd
import pytest
from omegaconf import OmegaConf

from sae_sweep.export.cli import export_sweep
from sae_sweep.launch_checks import launch_problems
from sae_sweep.sweep.planning import chains
from sae_sweep.sweep.planning.grid import grid_jobs
from sae_sweep.sweep.planning.tuning import config_problems, expand, folder_pattern, grid_problems
from sae_sweep.sweep.tuned_stages import staged
from sae_sweep.tuning import tune_spec
from tests.sweep_fixtures import jobs, run_sweep_in_process

LR = {"train.lr": [0.001, 0.003, 0.01]}


@pytest.mark.parametrize(
    "tune, criterion, targets, message",
    [
        ({"train.lr": []}, {"at_l0": 8}, [], "tune.train.lr=[]: give a non-empty list"),
        ({"train.lr": 0.001}, {"at_l0": 8}, [], "give a non-empty list of values"),
        ({"seed": [0, 1]}, {"at_l0": 8}, [], "seed cannot be tuned (seeds pair"),
        ({"lambda_multiplier": [1, 2]}, {"at_l0": 8}, [], "it traces the frontier"),
        (LR, {"at_l0": 8, "metric": "l0_norm"}, [], "is not a metric of the catalogue"),
        (LR, {"at_l0": 8, "metric": "steps"}, [], "with a better direction"),
        (LR, {}, [8, 16], "tune_criterion.at_l0 is not set"),
        (LR, {"at_l0": 12}, [8, 16], "at_l0=12 is not one of l0_targets [8, 16]"),
        (LR, {"at_l0": 8, "seeds": "pilot"}, [], "needs the seeds that choose"),
        (LR, {"at_l0": 8, "pilot_seeds": [0]}, [], "set tune_criterion.seeds=pilot"),
        (LR, {"at_l0": 8, "seeds": "some"}, [], "write same"),
        (LR, {"at_l0": 8, "shared": {"train.lr": 0.5}}, [], "is not among its tuned values"),
        (LR, {"at_l0": 8, "shared": {"train.steps": 5}}, [], "train.steps is not tuned"),
        (LR, {"at_l0": 8, "metrc": "fvu"}, [], "tune_criterion has no field metrc"),
        (LR, {"at_l0": 8, "other_targets": "some"}, [], "write chosen"),
    ],
)
def test_bad_tuning_names_the_fix(tune, criterion, targets, message):
    with pytest.raises(ValueError, match=None) as e:
        tune_spec(tune, criterion, targets)
    assert message in str(e.value)


def test_a_good_spec_and_its_defaults():
    spec = tune_spec(LR, {"metric": "fvu"}, [16])
    assert spec.knobs == ("train.lr",) and spec.at_l0 == 16 and spec.seeds == "same"
    assert spec.other_targets == "chosen"  # the other targets: the chosen and shared values
    assert staged(spec, [8, 16]) and not staged(spec, [16])  # a target besides the reference
    assert not staged(tune_spec(LR, {"at_l0": 16, "other_targets": "every"}, [8, 16]), [8, 16])
    assert tune_spec({}, {"at_l0": 3}, []) is None  # no tuning: the criterion is not read


def test_grid_and_config_problems_name_the_fix():
    spec = tune_spec(LR, {"at_l0": 8, "seeds": "pilot", "pilot_seeds": [5]})
    problems = grid_problems(spec, {"train.lr": ["0.1"], "seed": ["0", "1"]})
    assert any("train.lr is tuned and also set by the grid" in p for p in problems)
    assert any("pilot_seeds [5] are not seeds of the grid (seed=0,1)" in p for p in problems)
    spec = tune_spec(LR, {"at_l0": 8, "seeds": "pilot", "pilot_seeds": [0]})
    assert any("leave 1 seed(s) to compare" in p
               for p in grid_problems(spec, {"seed": ["0", "1"]}))  # fmt: skip
    cfg = OmegaConf.create({"train": {"lr": 0.001, "steps": 10}})
    assert config_problems(spec, cfg) == []
    bad = tune_spec({"train.lrr": [1, 2], "train": [1, 2]}, {"at_l0": 8})
    problems = config_problems(bad, cfg)
    assert "tune.train.lrr: train.lrr is not a key of the config (keys under train: lr, steps)" \
        in problems[0]  # fmt: skip
    assert "train is a group of keys, not one knob" in problems[1]


def test_the_grid_expands_by_the_tuned_values_and_each_value_is_its_own_chain():
    spec = tune_spec(LR | {"train.batch_size": [64, 128]}, {"at_l0": 6}, [6])
    axes = expand({"variant": ["a", "b"], "lambda_multiplier": ["1", "4"], "seed": ["0", "1"]},
                  spec)  # fmt: skip
    assert list(axes) == ["variant", "train.lr", "train.batch_size", "lambda_multiplier", "seed"]
    grid = grid_jobs(axes)
    assert len(grid) == 2 * 3 * 2 * 2 * 2
    pattern = folder_pattern("${variant}/lam${lambda_multiplier}_seed${seed}", spec)
    assert pattern == ("${variant}/lam${lambda_multiplier}_seed${seed}_lr${train.lr}"
                       "_batch_size${train.batch_size}")  # fmt: skip
    assert folder_pattern("${variant}/${train.lr}/${train.batch_size}", spec) == \
        "${variant}/${train.lr}/${train.batch_size}"  # fmt: skip
    plan = chains.plan_targets(grid, pattern)
    assert len(plan.variants) == 2 * 3 * 2  # a chain per (variant, tuned value)
    assert "variant=a, train.lr=0.003, train.batch_size=128" in plan.variants
    states = chains.place_targets(plan, [], [6.0], 0.1)
    assert {s.variant for s in states} == set(plan.variants)
    # placed by control (one round, no grid): a job per (variant, tuned value, target, seed),
    # each in a folder that names its tuned values
    control = chains.plan_targets(grid, pattern, placement=lambda template: chains.CONTROL)
    one_round = chains.one_round_jobs(control, [6.0])
    assert len(one_round) == 2 * 3 * 2 * 2
    assert {o for job in one_round for o in job if o.startswith("hydra.sweep.subdir")} == {
        "hydra.sweep.subdir='${variant}/target6_seed${seed}_lr${train.lr}"
        "_batch_size${train.batch_size}'"
    }


def test_a_bad_tuning_refuses_the_launch_before_anything_is_written():
    cfg = OmegaConf.create({
        "train": {"lr": 0.001}, "seed": 0, "l0_targets": [8],
        "tune": {"train.lr": [0.001, 0.003]}, "tune_criterion": {"at_l0": 6, "metric": "fvu"},
        "hydra": {"sweeper": {"params": {"train.lr": "0.1,0.2"}}, "overrides": {"task": []}},
    })  # fmt: skip
    problems = launch_problems(cfg, sweep=True)
    assert any("at_l0=6 is not one of l0_targets [8]" in p for p in problems)
    cfg.l0_targets, cfg.data = [], {"d": 16}  # without targets the reference must be sparse
    cfg.tune_criterion.at_l0 = 9
    assert any("at_l0=9 is above the dense limit max_l0_fraction x d = 8" in p
               for p in launch_problems(cfg, sweep=True))  # fmt: skip
    cfg.tune_criterion.at_l0 = 8
    assert [p for p in launch_problems(cfg, sweep=True) if "tune" in p] == [
        "train.lr is tuned and also set by the grid (train.lr=0.1,0.2 in hydra.sweeper.params or "
        "on the command line): drop it there, tune.train.lr gives its values"
    ]


@pytest.mark.slow
def test_real_tuned_sweep_compares_each_variant_at_its_best_lr_and_resumes(tmp_path, monkeypatch,
                                                                            capfd):  # fmt: skip
    """Two variants x two learning rates on tiny synthetic jobs, placed on L0 6 per (variant,
    lr): the report names the value each variant is compared at; a re-run trains nothing.
    The seeds of a (variant, lr) share a lambda (fewer rounds on such short, noisy jobs)."""
    d = tmp_path / "sweep"
    args = ["variant=gated_original,gated_dn_trainable_live", "seed=0,1", "lambda_multiplier=1,4",
            "train.steps=120", "l0_targets=[6]", "l0_placement=rounds", "l0_lambda_per=variant",
            "l0_max_rounds=4",
            "tune={train.lr: [0.002, 0.004]}",
            "tune_criterion={metric: fvu}"]  # fmt: skip
    proc = run_sweep_in_process(monkeypatch, capfd, d, *args,
                                "hydra.sweeper.analysis=true", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    manifest = json.loads((d / "sweep.json").read_text())
    assert manifest["grid"]["train.lr"] == ["0.002", "0.004"]
    done = jobs(d)  # every job folder names its lr; every variant trained at both, both seeds
    assert all(k.endswith(("_lr0.002", "_lr0.004")) for k in done), sorted(done)
    trained = {(k.split("/")[0], k.rsplit("_lr", 1)[1], k.split("_seed")[1][0]) for k in done}
    assert trained == {(v, lr, s) for v in ("gated_original", "gated_dn_trainable_live")
                       for lr in ("0.002", "0.004") for s in "01"}  # fmt: skip
    targets = json.loads((d / "targets.json").read_text())["targets"]
    assert {t["variant"] for t in targets} == {  # a target chain per (variant, lr)
        f"variant={v}, train.lr={lr}" for v in ("gated_original", "gated_dn_trainable_live")
        for lr in ("0.002", "0.004")
    }  # fmt: skip

    runs = pd.read_csv(d / "tables" / "runs.csv")
    tuning = pd.read_csv(d / "tables" / "tuning.csv")
    chosen = tuning[tuning["chosen"] == "best"].set_index("variant")["train.lr"].to_dict()
    assert set(chosen) == {"gated_original", "gated_dn_trainable_live"}
    assert (tuning["seeds"] == 2).all()  # both seeds read at L0 6 for every (variant, lr)
    for v, lr in chosen.items():  # the best is the lower fvu at L0 6
        rows = tuning[tuning["variant"] == v].set_index("train.lr")["fvu at L0 6"]
        assert rows[lr] == rows.min()
    order = list(dict.fromkeys(tuning["variant"]))  # the report's variant order
    line = ("Each variant at its best train.lr (fvu at L0 6, chosen on the compared seeds 0, 1): "
            + ", ".join(f"{v} {chosen[v]:g}" for v in order) + ".")  # fmt: skip
    assert line in proc.stdout
    verdicts = pd.read_csv(d / "tables" / "verdicts.csv")
    assert (verdicts["a train.lr"] == chosen[verdicts["a"][0]]).all()
    assert set(runs["train.lr"]) == {0.002, 0.004}  # every run is in the runs table
    # a frontier export is each variant's frontier at its best value, as the analysis compares
    exported = export_sweep(d, tmp_path / "exported", "fvu")
    by_path = runs.set_index("path")["train.lr"]
    assert {(v, by_path[p]) for v, p in zip(exported["variant_label"], exported["path"],
                                            strict=True)} == set(chosen.items())  # fmt: skip

    before = set(jobs(d))
    proc = run_sweep_in_process(monkeypatch, capfd, d, *args, cwd=tmp_path)
    assert proc.returncode == 0 and set(jobs(d)) == before
    assert all(j["outcome"] == "skipped" for j in json.loads((d / "jobs.json").read_text())["jobs"])


@pytest.mark.slow
def test_other_targets_train_only_the_chosen_and_the_shared_value(tmp_path, monkeypatch, capfd):
    """`other_targets: chosen` (the default): the reference L0 6 is placed at every lr first;
    then only the lr the analysis chooses there, and the declared shared one, go on to L0 4.
    The lr that is neither trains no round at L0 4; the report chooses what the sweep chose;
    a re-run trains nothing."""
    d = tmp_path / "sweep"
    lrs = ("0.001", "0.002", "0.004")
    args = ["variant=gated_original", "seed=0", "lambda_multiplier=1,4", "train.steps=120",
            "l0_targets=[4,6]", "l0_placement=rounds", "l0_lambda_per=variant",
            "tune={train.lr: [0.001, 0.002, 0.004]}",
            "tune_criterion={metric: fvu, at_l0: 6, shared: {train.lr: 0.002}}"]  # fmt: skip
    proc = run_sweep_in_process(monkeypatch, capfd, d, *args,
                                "hydra.sweeper.analysis=true", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    recorded = json.loads((d / "targets.json").read_text())
    chosen = recorded["tuned"]["chosen"]["gated_original"]
    assert chosen in lrs and recorded["tuned"]["at_l0"] == 6
    chains_at = {t["variant"].rsplit("=", 1)[1]: [] for t in recorded["targets"]}
    for t in recorded["targets"]:
        chains_at[t["variant"].rsplit("=", 1)[1]].append(t["target"])
    kept = {chosen, "0.002"}
    assert {lr for lr, ts in chains_at.items() if 4 in ts} == kept  # L0 4: chosen and shared
    assert all(6 in chains_at[lr] for lr in lrs)  # L0 6: every lr
    assert recorded["tuned"]["chains_left_out"] == 3 - len(kept)
    runs = pd.read_csv(d / "tables" / "runs.csv")
    aimed_at_4 = runs[runs["l0_target"] == 4]
    assert {f"{lr:g}" for lr in aimed_at_4["train.lr"]} <= kept and len(aimed_at_4)
    tuning = pd.read_csv(d / "tables" / "tuning.csv")  # the report chooses as the sweep did
    best = tuning[tuning["chosen"] == "best"].set_index("variant")["train.lr"]
    assert f"{best['gated_original']:g}" == chosen

    before = set(jobs(d))
    proc = run_sweep_in_process(monkeypatch, capfd, d, *args, cwd=tmp_path)
    assert proc.returncode == 0 and set(jobs(d)) == before
    assert (
        json.loads((d / "targets.json").read_text())["tuned"]["chosen"]
        == recorded["tuned"]["chosen"]
    )
