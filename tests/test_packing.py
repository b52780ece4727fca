"""Packed jobs, in this process: SAEs trained together on one batch stream end exactly as
when each trains alone; one failing member fails alone; an interrupted pack resumes every
member; and the pure grouping of grid jobs into packs."""

import json

import pytest
import torch
from safetensors.torch import load_file

from sae_sweep.config.schema import LaunchConfig, NormGrad
from sae_sweep.job import run_job, run_jobs
from sae_sweep.models import StandardSAEConfig
from sae_sweep.record import layout
from sae_sweep.sweep.planning.packing import (
    member_config,
    pack_file,
    pack_jobs,
    pack_key,
    read_pack,
    write_pack,
)
from sae_sweep.sweep.running import task
from sae_sweep.training.divergence import TrainingDivergedError
from tests.conftest import small_config

METRICS = ("l0", "fvu", "mse", "dead_fraction", "mmcs", "steps")


def _members():
    """Different architectures, penalties and recipes: what a pack holds in a sweep."""
    return [
        small_config(penalty__coefficient=1.0),
        small_config(penalty__coefficient=3.0, penalty__decoder_norm_grad=NormGrad.detached),
        small_config(sae=StandardSAEConfig(expansion_factor=4), penalty__coefficient=0.5),
        small_config(
            resample__enabled=True, resample__at_steps=[20, 40], resample__dead_window_steps=5
        ),  # fmt: skip
    ]


def _assert_same_weights(dir_a, dir_b):
    a = load_file(str(dir_a / layout.WEIGHTS))
    b = load_file(str(dir_b / layout.WEIGHTS))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)


def test_packed_members_end_as_when_each_trains_alone_and_a_diverging_one_fails_alone(tmp_path):
    configs = _members()
    diverging = small_config(train__lr=1e30, train__grad_clip=None)
    for i, cfg in enumerate(configs):
        run_job(cfg, tmp_path / "alone" / str(i))
    packed = [*configs, diverging]
    outcomes = run_jobs([(cfg, tmp_path / "packed" / str(i)) for i, cfg in enumerate(packed)])

    assert isinstance(outcomes[-1], TrainingDivergedError)
    failed = layout.read_summary(tmp_path / "packed" / "4")
    assert failed["status"] == "failed" and "TrainingDivergedError" in failed["error"]
    for i in range(len(configs)):
        alone = layout.read_summary(tmp_path / "alone" / str(i))
        together = layout.read_summary(tmp_path / "packed" / str(i))
        assert together["status"] == "done" and outcomes[i]["status"] == "done"
        assert {k: together[k] for k in METRICS} == pytest.approx({k: alone[k] for k in METRICS})
        _assert_same_weights(tmp_path / "alone" / str(i), tmp_path / "packed" / str(i))
        assert together["threads"] == torch.get_num_threads()


def test_a_pack_estimates_the_normalisation_once_per_setting(tmp_path, monkeypatch):
    import sae_sweep.job as job

    calls = []
    estimate = job.estimate_norm_scale
    monkeypatch.setattr(job, "estimate_norm_scale", lambda *a: calls.append(a[1]) or estimate(*a))
    configs = [small_config(train__steps=2, penalty__coefficient=c) for c in (1.0, 2.0, 4.0)]
    configs.append(small_config(train__steps=2, train__norm_estimate_batches=3))
    outcomes = run_jobs([(cfg, tmp_path / str(i)) for i, cfg in enumerate(configs)])

    assert sorted(calls) == [3, 8]  # the three members with the default setting share one
    alone = run_job(configs[1], tmp_path / "alone")
    assert outcomes[1]["norm_scale"] == alone["norm_scale"] != outcomes[3]["norm_scale"]


def test_an_interrupted_pack_resumes_every_member_to_the_same_weights(tmp_path, monkeypatch):
    """Through the sweep job: the pack file, the skip/resume policy per member, job.json."""
    # threads: this process keeps its thread count (a sweep job sets its share of the cores)
    configs = [LaunchConfig(**vars(c), threads=torch.get_num_threads()) for c in _members()[:3]]
    for i, cfg in enumerate(configs):
        run_job(cfg, tmp_path / "alone" / str(i))
    sweep = tmp_path / "sweep"
    members = [{"job": i, "subdir": f"m{i}", "dir": str(sweep / f"m{i}"),
                "config": task.resolved_config(cfg)} for i, cfg in enumerate(configs)]  # fmt: skip
    assert [task.resolved_config(member_config(m["config"])) for m in members] == [
        m["config"] for m in members
    ]
    monkeypatch.setenv(task.ENV_LAUNCH_ID, "L1")
    write_pack(pack_file(sweep, "L1", 0), members)

    import sae_sweep.training.loop as loop

    real_save = loop.save_checkpoint

    def save_then_die(directory, *, step, **kw):
        real_save(directory, step=step, **kw)
        if step == 30 and directory.parent.name == "m1":  # m0 and m1 saved step 30, m2 not
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        task.run_sweep_job(configs[0], sweep / "m0", 0, "m0", sweep_dir=sweep)
    assert {layout.read_summary(sweep / f"m{i}")["status"] for i in range(3)} == {"interrupted"}
    monkeypatch.setattr(loop, "save_checkpoint", real_save)

    monkeypatch.setenv(task.ENV_LAUNCH_ID, "L2")
    write_pack(pack_file(sweep, "L2", 0), members)
    records = task.run_sweep_job(configs[0], sweep / "m0", 0, "m0", sweep_dir=sweep)
    assert [r["action"] for r in records] == ["resume", "resume", "new"]
    assert [r["outcome"] for r in records] == ["done"] * 3
    steps = [layout.read_summary(sweep / f"m{i}")["resumed_from_step"] for i in range(3)]
    assert steps == [30, 30, 0]
    for i in range(3):
        _assert_same_weights(tmp_path / "alone" / str(i), sweep / f"m{i}")
        lines = [json.loads(x) for x in (sweep / f"m{i}" / layout.METRICS).open()]
        logged = [x["step"] for x in lines if "train/loss" in x]
        assert len(logged) == len(set(logged)), "metrics logged twice across the resume"
        assert json.loads((sweep / f"m{i}" / layout.JOB).read_text())["launch_id"] == "L2"

    records = task.run_sweep_job(configs[0], sweep / "m0", 0, "m0", sweep_dir=sweep)
    assert [r["action"] for r in records] == ["skip_done"] * 3


def _resolved(**kw):
    return task.resolved_config(small_config(**kw))


def test_jobs_pack_only_with_jobs_that_share_their_batches():
    configs = [
        _resolved(penalty__coefficient=1.0),  # 0
        _resolved(seed=1),  # 1: another seed, another stream
        _resolved(penalty__coefficient=2.0),  # 2
        _resolved(train__batch_size=64),  # 3
        _resolved(penalty__coefficient=4.0, train__lr=1e-3),  # 4
        _resolved(penalty__coefficient=8.0),  # 5
    ]
    assert pack_key(configs[0]) == pack_key(configs[5]) != pack_key(configs[1])
    assert pack_jobs(configs, 1) == [[0], [1], [2], [3], [4], [5]]
    assert pack_jobs(configs, 2) == [[0, 2], [1], [3], [4, 5]]
    assert pack_jobs(configs, 8) == [[0, 2, 4, 5], [1], [3]]
    assert sorted(i for p in pack_jobs(configs, 3) for i in p) == list(range(6))


def test_every_job_of_a_packed_sweep_carries_its_grid_number(tmp_path, monkeypatch):
    """A pack of one gets a pack file too: the target-L0 rounds find each result's overrides
    by grid number, and a lone job's launch number differs from it once others are packed."""
    from omegaconf import OmegaConf

    from sae_sweep.sweep.lifecycle import Sweep

    class Launcher:
        calls = []

        def launch(self, jobs, initial_job_idx):
            self.calls.append((jobs, initial_job_idx))
            return []

    config = OmegaConf.create({"hydra": {"launcher": {"_target_": "basic"},
                                         "sweep": {"dir": str(tmp_path)}}})  # fmt: skip
    sweep = Sweep(config, Launcher(), config_loader=None)
    sweep.launch_id = "L"
    seeds = [0, 1, 0, 0, 1]  # seed 1's jobs train on another stream than seed 0's

    def compose(overrides, job_num):
        config = {**_resolved(seed=seeds[job_num]), "pack": 2}
        member = {"job": job_num, "subdir": str(job_num), "dir": str(tmp_path / str(job_num)),
                  "config": config}  # fmt: skip
        return {"task": config, "member": member}

    monkeypatch.setattr(sweep, "compose", compose)
    batch = [[f"seed={s}", f"n={i}"] for i, s in enumerate(seeds)]
    sweep.launch(batch)

    # packs [0, 2], [1, 4], [3], each launched under its first member's overrides
    assert Launcher.calls == [([batch[0], batch[1], batch[3]], 0)]
    grid_numbers = [[m["job"] for m in read_pack(pack_file(tmp_path, "L", n))] for n in range(3)]
    assert grid_numbers == [[0, 2], [1, 4], [3]]
