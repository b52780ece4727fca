"""Loading runs from a hand-made sweep folder tree and from W&B (public API mocked)."""

import math
from types import SimpleNamespace

import pytest

try:
    from analysis_fixtures import config, flat, make_sweep, summary, write_job
except ImportError:  # tests/ imported as a package
    from tests.analysis_fixtures import config, flat, make_sweep, summary, write_job

import analysis
from analysis.load import find_job_dirs, load_history, load_wandb_runs


def test_load_sweep_tree(tmp_path):
    root = make_sweep(tmp_path / "sweep")
    # Weights saved with their own config inside a job must not look like a job.
    (root / "0" / "sae").mkdir()
    (root / "0" / "sae" / "config.yaml").write_text("d_sae: 64\n")
    runs = analysis.load_runs(root)

    assert len(runs) == 18  # 16 done + 1 failed + 1 unfinished, one of them nested
    assert runs["run_id"].is_unique
    assert "ablation/nested/3" in set(runs["run_id"])
    assert runs["status"].value_counts().to_dict() == {"done": 16, "failed": 1, "unfinished": 1}
    assert set(runs["sweep"]) == {"ablation"}  # from sweep.json
    # Knobs as dotted columns, lists as tuples, listed in attrs.
    assert runs.loc[0, "sae.kind"] == "gated"
    assert runs.loc[0, "train.adam_betas"] == (0.0, 0.999)
    assert {"penalty.kind", "penalty.coefficient", "seed"} <= set(runs.attrs["knobs"])
    # Metrics as columns.
    done = runs[runs["status"] == "done"]
    assert done["l0"].notna().all() and done["fvu"].notna().all()
    assert done["loss_recovered"].isna().all()  # null in a synthetic summary
    failed = runs[runs["status"] == "failed"].iloc[0]
    assert "out of memory" in failed["error"]
    assert math.isnan(failed["l0"])
    # The unfinished job has no summary; its torn metrics.jsonl still gives its last step.
    unfinished = runs[runs["status"] == "unfinished"].iloc[0]
    assert unfinished["last_step"] == 40
    assert unfinished["penalty.kind"] == "decoder_norm"


def test_job_with_only_hydra_config_is_unfinished(tmp_path):
    job = tmp_path / "s" / "0" / ".hydra"
    job.mkdir(parents=True)
    (job / "config.yaml").write_text("seed: 3\npenalty: {coefficient: 0.5}\n")
    assert find_job_dirs(tmp_path / "s") == [tmp_path / "s" / "0"]
    runs = analysis.load_runs(tmp_path / "s")
    assert runs.loc[0, "status"] == "unfinished"
    assert runs.loc[0, "seed"] == 3


def test_several_sweeps_and_missing_folder(tmp_path):
    for name in ("a", "b"):
        cfg = config()
        write_job(tmp_path / name / "0", cfg, summary(cfg, 10.0, 0.1, sweep=name))
    runs = analysis.load_runs([tmp_path / "a", tmp_path / "b"])
    assert sorted(runs["run_id"]) == ["a/0", "b/0"]
    with pytest.raises(FileNotFoundError):
        analysis.load_runs(tmp_path / "nope")


def test_load_history_skips_torn_line(tmp_path):
    make_sweep(tmp_path / "s")
    hist = load_history(tmp_path / "s" / "17")
    assert hist["step"].tolist() == [0, 10, 20, 30, 40]


class FakeRun(SimpleNamespace):
    pass


def _fake_runs():
    cfg = config(**{"penalty.kind": "decoder_norm", "penalty.coefficient": 0.3})
    s = summary(cfg, 12.0, 0.2)
    done = FakeRun(
        id="abc", url="https://wandb.ai/e/p/runs/abc", group="ablation", state="finished",
        job_type="train",
        # W&B config: nested config plus W&B's own keys; older API versions wrap values.
        config={**cfg, "seed": {"value": 5, "desc": None}, "_wandb": {"x": 1}},
        # W&B summaries may only carry the eval/... names.
        summary={k: v for k, v in s.items() if k not in ("l0", "fvu")}
        | {"eval/l0": 12.0, "eval/fvu": 0.2, "_step": 100},
    )  # fmt: skip
    crashed = FakeRun(
        id="def", url="u2", group="ablation", state="crashed", job_type="train",
        config=config(), summary={"status": "running", "_step": 3},
    )  # fmt: skip
    ours = FakeRun(id="sum", url="u3", group="ablation", state="finished", job_type="analysis",
                   config={}, summary={})  # fmt: skip
    return [done, crashed, ours]


def test_load_wandb_runs_with_mocked_public_api(monkeypatch):
    calls = {}

    class FakeApi:
        def runs(self, path, filters=None):
            calls["path"], calls["filters"] = path, filters
            return _fake_runs()

    import wandb

    monkeypatch.setattr(wandb, "Api", FakeApi)
    runs = load_wandb_runs("e/p", group="ablation")
    assert calls == {"path": "e/p", "filters": {"group": "ablation"}}
    assert len(runs) == 2  # the analysis summary run is not an SAE
    done = runs[runs["run_id"] == "e/p/abc"].iloc[0]
    assert done["status"] == "done"
    assert done["source"] == "wandb"
    assert done["l0"] == 12.0 and done["fvu"] == 0.2
    assert done["seed"] == 5
    assert done["penalty.kind"] == "decoder_norm"
    assert "_wandb.x" not in runs.columns
    assert runs[runs["run_id"] == "e/p/def"].iloc[0]["status"] == "failed"
    # Same columns as a local load.
    assert set(flat(config())) <= set(runs.columns)


def test_run_analysis_from_wandb_only(monkeypatch, tmp_path):
    import wandb

    monkeypatch.setattr(
        wandb, "Api", lambda: SimpleNamespace(runs=lambda path, filters=None: _fake_runs())
    )
    paths = analysis.run_analysis([], tmp_path / "out", wandb="e/p", group="ablation")
    text = paths.report_md.read_text()
    assert "e/p/def" in text  # the crashed run is listed


def test_analysis_from_wandb_loads_one_sweep_instance(monkeypatch, tmp_path, capsys):
    """Two runs of one sweep file are two instances (W&B groups): without --group the
    analysis refuses to mix them and names them; --group picks one, `all` takes both."""
    import wandb

    from analysis.cli import main

    def runs(path, filters=None):
        earlier = [FakeRun(**{**vars(r), "group": "ablation-20240501-090000-cd34",
                                      "id": f"old{r.id}"}) for r in _fake_runs()]  # fmt: skip
        both = [FakeRun(**{**vars(r), "group": "ablation-20240601-120000-ab12"})
                for r in _fake_runs()] + earlier  # fmt: skip
        group = (filters or {}).get("group")
        return [r for r in both if group is None or r.group == group]

    monkeypatch.setattr(wandb, "Api", lambda: SimpleNamespace(runs=runs))
    assert main(["--wandb", "e/p", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "holds 2 sweep instances (groups): ablation-20240601-120000-ab12, " in err
    assert "Pick one with --group ID" in err
    one = analysis.run_analysis([], tmp_path / "b", wandb="e/p",
                                group="ablation-20240601-120000-ab12")  # fmt: skip
    assert one.n_runs == 2
    both = analysis.run_analysis([], tmp_path / "c", wandb="e/p", group="all")
    assert both.n_runs == 4


def test_folder_of_several_sweeps(tmp_path):
    make_sweep(tmp_path / "multirun" / "2024-06-01" / "12-00-00")  # sweep.json names it
    other = tmp_path / "multirun" / "2024-06-02" / "09-00-00"
    cfg = config()
    write_job(other / "0", cfg, summary(cfg, 10.0, 0.1, sweep=None))
    (other / "multirun.yaml").write_text("hydra: {}\n")
    runs = analysis.load_runs(tmp_path / "multirun")
    assert runs["sweep"].value_counts().to_dict() == {"ablation": 18, "09-00-00": 1}
