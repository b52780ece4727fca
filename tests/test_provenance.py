"""Provenance: each run records its commit and whether the tree was clean, the report warns
when the compared runs mix code versions or uncommitted trees, `require_clean_tree=true`
refuses to start from an unclean tree, and a sweep's target L0s must stay below the dense
limit from the start."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from analysis.load import load_runs
from analysis.provenance import provenance_warnings
from analysis.report import write_report
from analysis.variants import LABEL, assign_variants
from sae_sweep import launch_checks
from sae_sweep.config.schema import Config, job_config
from sae_sweep.config.validation import target_limit_problems
from sae_sweep.job import run_job
from sae_sweep.main import CONF_DIR
from sae_sweep.record import versions as rv
from sae_sweep.sweep import available_sweeps
from sae_sweep.sweep.running.task import resolved_config
from tests.analysis_fixtures import make_sweep
from tests.conftest import small_config
from tests.sweep_fixtures import env


def git(repo, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


@pytest.fixture
def repo(tmp_path):
    """A committed checkout: two tracked files and an ignored folder."""
    root = tmp_path / "checkout"
    root.mkdir()
    git(root, "init", "-q")
    (root / "a.py").write_text("a = 1\n")
    (root / "b.py").write_text("b = 1\n")
    (root / ".gitignore").write_text("runs/\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "first")
    return root


@pytest.fixture
def fresh_versions():
    rv.versions.cache_clear()
    yield
    rv.versions.cache_clear()


def test_a_tree_is_clean_until_a_tracked_or_untracked_file_changes(repo):
    head = git(repo, "rev-parse", "HEAD")
    (repo / "runs").mkdir()
    (repo / "runs" / "out.json").write_text("{}")  # ignored files never count
    tree = rv.code_tree(repo)
    assert (tree.commit, tree.clean, tree.label) == (head, True, head)
    assert rv.unclean_tree_message(tree) is None

    (repo / "a.py").write_text("a = 2\n")
    (repo / "new.py").write_text("")
    tree = rv.code_tree(repo)
    assert (tree.commit, tree.clean, tree.label) == (head, False, head + "+dirty")
    assert sorted(line[3:] for line in tree.changed) == ["a.py", "new.py"]


def test_code_installed_inside_a_checkout_but_not_at_its_top_has_no_commit(repo):
    # A wheel installed into a virtual environment that lies inside some checkout: that
    # checkout's commit is not the code's, so the commit is unknown, which is not an error.
    site = repo / "runs" / "lib" / "site-packages"
    site.mkdir(parents=True)
    tree = rv.code_tree(site)
    assert (tree.commit, tree.clean, tree.label) == (None, None, None)
    assert rv.unclean_tree_message(tree) is None


def test_a_run_from_a_dirty_tree_records_it_and_the_report_names_it(
    repo, tmp_path, monkeypatch, fresh_versions
):
    head = git(repo, "rev-parse", "HEAD")
    (repo / "b.py").write_text("b = 2\n")
    monkeypatch.setattr(rv, "CODE_ROOT", repo)
    out = tmp_path / "sweep" / "0"
    summary = run_job(small_config(**{"train__steps": 20}), out)

    assert summary["versions"]["git_commit"] == head + "+dirty"
    assert summary["versions"]["git_clean"] is False
    assert summary["versions"]["sae-sweep"]  # the package version is there either way
    assert json.loads((out / "summary.json").read_text())["versions"]["git_clean"] is False
    (row,) = load_runs(tmp_path / "sweep").to_dict("records")
    assert (row["git_commit"], row["git_clean"]) == (head, False)


def test_a_run_from_an_installed_package_records_its_version_and_no_commit(
    repo, monkeypatch, fresh_versions
):
    site = repo / "runs" / "site-packages"
    site.mkdir(parents=True)
    monkeypatch.setattr(rv, "CODE_ROOT", site)
    found = rv.versions()
    assert found["git_commit"] is None and found["git_clean"] is None
    assert found["sae-sweep"]


def _set_versions(sweep, pick) -> None:
    """Rewrite each finished job's recorded versions: pick(penalty.kind) -> versions."""
    for path in sweep.rglob("summary.json"):
        s = json.loads(path.read_text())
        if s.get("status") == "done":
            s["versions"] = pick(s["knobs"]["penalty.kind"])
            path.write_text(json.dumps(s))


def test_the_report_warns_about_runs_from_uncommitted_trees_naming_the_variants(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")  # 2 variants x 4 lambdas x 2 seeds done
    # the decoder_norm runs: an uncommitted tree (older records: only the "+dirty" suffix)
    _set_versions(sweep, lambda kind: {"git_commit": "c0ffee" + ("+dirty" * (kind != "l1"))})
    runs = load_runs(sweep)
    done = runs[runs["status"] == "done"]
    assert done["git_commit"].eq("c0ffee").all()
    assert done.groupby("penalty.kind")["git_clean"].agg(set).to_dict() == {
        "l1": {True},
        "decoder_norm": {False},
    }
    labelled, _ = assign_variants(runs)
    dn = labelled.loc[labelled["penalty.kind"] == "decoder_norm", LABEL].iloc[0]
    (line,) = provenance_warnings(labelled)  # one commit: no code-version warning
    assert "8 of 16 finished runs were made from a tree with uncommitted changes" in line
    assert f": 8 runs of {dn}." in line

    paths = write_report(runs, tmp_path / "report", plots=False)
    opening = paths.report_md.read_text().split("## ")[0]  # before the first section
    assert line in opening


def test_the_report_warns_when_the_runs_mix_code_versions():
    runs = pd.DataFrame(
        {
            "status": ["done"] * 5 + ["failed"],
            LABEL: ["a", "a", "b", "b", "b", "b"],
            "git_commit": ["1111111aaaa", "1111111aaaa", "1111111aaaa", "2222222bbbb",
                           "2222222bbbb", "3333333cccc"],
            "git_clean": [True] * 6,
        }
    )  # fmt: skip
    (line,) = provenance_warnings(runs)  # the failed run's commit compares nothing
    assert "come from 2 code versions" in line
    assert "commit 1111111aa (2 runs of a, 1 of b); commit 2222222bb (2 runs of b)" in line
    runs["git_commit"] = "1111111aaaa"
    assert provenance_warnings(runs) == []  # one clean commit: nothing to say
    runs["git_clean"] = [True, True, True, True, False, False]  # a table read back from CSV
    (line,) = provenance_warnings(runs[["git_commit", "git_clean", "status", LABEL]])
    assert "1 of 5 finished runs were made from a tree with uncommitted changes" in line
    assert ": 1 run of b." in line


def test_installed_package_versions_count_as_code_versions_and_unknown_runs_do_not():
    runs = pd.DataFrame(
        {
            "status": ["done"] * 4,
            LABEL: ["a", "a", "b", "b"],
            "versions.git_commit": [None] * 4,
            "versions.sae-sweep": ["0.3.0", "0.3.0", "0.4.0", None],
        }
    )
    (line,) = provenance_warnings(runs)
    assert "sae-sweep 0.3.0 (2 runs of a); sae-sweep 0.4.0 (1 run of b)" in line
    runs["versions.sae-sweep"] = ["0.3.0", "0.3.0", "0.3.0", None]
    assert provenance_warnings(runs) == []


# -- launch checks ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def _hydra():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def _compose(*overrides: str, hydra: bool = True):
    return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def test_require_clean_tree_refuses_a_dirty_checkout_naming_the_files(_hydra, repo, monkeypatch):
    for i in range(7):
        (repo / f"new{i}.py").write_text("")
    (repo / "a.py").write_text("a = 3\n")
    monkeypatch.setattr(launch_checks, "code_tree", lambda: rv.code_tree(repo))
    cfg = _compose("require_clean_tree=true")
    for start in (launch_checks.LaunchChecks().on_run_start,
                  launch_checks.LaunchChecks().on_multirun_start):  # fmt: skip
        with pytest.raises(SystemExit) as refused:
            start(config=cfg)
        message = str(refused.value.code)
        assert "require_clean_tree=true" in message and "uncommitted changes" in message
        assert "a.py, new0.py, new1.py, new2.py, new3.py and 3 more" in message
        assert "Fix: commit (or stash) the changes" in message

    # without the option, or from a clean tree, the launch goes on
    launch_checks.LaunchChecks().on_run_start(config=_compose())
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "second")
    launch_checks.LaunchChecks().on_run_start(config=cfg)


def test_require_clean_tree_is_a_launch_option_that_never_reaches_a_job(_hydra):
    cfg = _compose("require_clean_tree=true", "variant=gated_original", hydra=False)
    cfg = OmegaConf.to_object(cfg)
    assert cfg.require_clean_tree is True
    job = job_config(cfg)
    assert type(job) is Config and not hasattr(job, "require_clean_tree")
    assert "require_clean_tree" not in resolved_config(cfg)


def test_a_target_above_the_dense_limit_is_rejected_naming_the_largest_allowed():
    (problem,) = target_limit_problems([4, 8, 16, 32], 0.1, 64, 0.5)
    assert problem.startswith("l0_targets 32 cannot stay below the dense limit on d = 64")
    assert "the largest allowed target is 29.09" in problem  # 0.5 x 64 / 1.1
    assert "'l0_targets=[4,8,16,29]'" in problem
    assert list(target_limit_problems([4, 8, 16, 29], 0.1, 64, 0.5)) == []
    assert list(target_limit_problems([4, 8, 16, 32], 0.1, None, 0.5)) == []  # d unknown
    (problem,) = target_limit_problems([8, 16], 0.1, 64, 0.25)
    assert "l0_targets 16 " in problem and "largest allowed target is 14.55" in problem


@pytest.mark.parametrize("sweep", available_sweeps())
def test_every_committed_sweep_keeps_its_targets_below_the_dense_limit(_hydra, sweep):
    cfg = _compose(f"+sweep={sweep}")
    assert launch_checks.launch_problems(cfg, sweep=True) == []
    # the input width is data.d, or the hidden width of a SynthSAEBench model
    width = "data.model.hidden_dim" if "model" in cfg.data else "data.d"
    too_high = _compose(f"+sweep={sweep}", "l0_targets=[4,8,16,32]", f"{width}=64")
    (problem,) = launch_checks.launch_problems(too_high, sweep=True)
    assert "largest allowed target is 29.09" in problem


def test_the_limit_follows_max_l0_fraction_and_a_swept_d(_hydra):
    cfg = _compose("+sweep=quick", "l0_targets=[8,16]")
    with open_dict(cfg):  # the limit the analysis applies at the sweep's end
        cfg.hydra.sweeper.max_l0_fraction = 0.25
    (problem,) = launch_checks.launch_problems(cfg, sweep=True)
    assert "largest allowed target is 14.55" in problem
    # a grid over d: the narrowest d bounds the targets
    cfg = _compose("+sweep=quick", "l0_targets=[8,16]")
    with open_dict(cfg):
        cfg.hydra.sweeper.params["data.d"] = "128,16"
    (problem,) = launch_checks.launch_problems(cfg, sweep=True)
    assert "on d = 16" in problem and "largest allowed target is 7.273" in problem


def test_a_sweep_with_a_target_above_the_limit_refuses_to_start(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "sae_sweep", "+sweep=quick", f"hydra.sweep.dir={sweep_dir}",
         "data.d=16", "l0_targets=[4,8]", "logger=disabled", "device=cpu"],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "sae-sweep refuses to start" in proc.stderr
    assert "l0_targets 8 cannot stay below the dense limit on d = 16" in proc.stderr
    assert "the largest allowed target is 7.273" in proc.stderr
    assert not sweep_dir.exists()  # refused before anything was written
