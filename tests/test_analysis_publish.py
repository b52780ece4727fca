"""Publishing to W&B: offline writes locally and says how to sync; online never
half-publishes silently (W&B mocked, no network)."""

from types import SimpleNamespace

try:
    from analysis_fixtures import make_sweep
except ImportError:  # tests/ imported as a package
    from tests.analysis_fixtures import make_sweep

import analysis
import analysis.publish as publish_mod
from analysis.cli import main


def test_publish_offline_writes_local_run_and_prints_sync(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    root = make_sweep(tmp_path / "s", seeds=(0,))
    assert main([str(root), "--publish"]) == 0
    out = capsys.readouterr().out
    assert "W&B publish (offline) to sae-sweep, group ablation" in out
    assert "wandb sync " in out
    assert "--publish --report-only" in out
    run_dirs = list((root / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    assert f"wandb sync {run_dirs[0]}" in out
    assert any(run_dirs[0].rglob("*.wandb"))  # the logged data, ready to sync
    assert (root / "report.md").exists() and (root / "report.html").exists()


def test_publish_disabled_logs_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = make_sweep(tmp_path / "s", seeds=(0,))
    paths = analysis.run_analysis(root, publish=True)
    assert paths.publish.ok
    assert "nothing logged" in paths.publish.describe()
    assert not (root / "wandb").exists()


def _fake_summary_run(*args, **kwargs):
    return SimpleNamespace(url="https://wandb.ai/e/p/runs/x", dir=None, entity="e")


def test_online_partial_publish_is_loud(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(publish_mod, "log_summary_run", _fake_summary_run)

    def fail(*args, **kwargs):
        raise RuntimeError("permission denied")

    monkeypatch.setattr(publish_mod, "build_wandb_report", fail)
    import wandb

    monkeypatch.setattr(wandb, "Api", lambda: SimpleNamespace(runs=lambda *a, **k: []))
    root = make_sweep(tmp_path / "s", seeds=(0,))
    assert main([str(root), "--publish", "--wandb", "e/p"]) == 1
    out = capsys.readouterr().out
    assert "summary run: ok" in out
    assert "W&B report: FAILED: RuntimeError: permission denied" in out
    assert "PARTIALLY PUBLISHED" in out


def test_online_publish_builds_report(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(publish_mod, "log_summary_run", _fake_summary_run)
    import wandb_workspaces.reports.v2 as wr

    saved = {}

    class FakeReport:
        def __init__(self, project, entity, title, blocks):
            saved.update(project=project, entity=entity, title=title, blocks=blocks)
            self.url = "https://wandb.ai/e/p/reports/r"

        def save(self):
            saved["saved"] = True

    monkeypatch.setattr(wr, "Report", FakeReport)
    root = make_sweep(tmp_path / "s", seeds=(0,))
    paths = analysis.run_analysis(root, publish=True, wandb=None)
    res = paths.publish
    assert res.ok, res.describe()
    assert res.report_url == "https://wandb.ai/e/p/reports/r"
    assert saved["saved"] and (saved["entity"], saved["project"]) == ("e", "sae-sweep")
    grids = [b for b in saved["blocks"] if isinstance(b, wr.PanelGrid)]
    assert len(grids) == 1
    scatter = [p for p in grids[0].panels if isinstance(p, wr.ScatterPlot)]
    assert {p.title for p in scatter} == {"fvu vs L0", "mse vs L0", "mmcs vs L0"}
    assert all(p.log_x for p in scatter)
    assert grids[0].runsets[0].filters == "Metric('Group') == 'ablation'"


def test_cli_reports_wandb_load_errors(tmp_path, monkeypatch, capsys):
    import wandb

    def no_login():
        raise wandb.errors.UsageError("No API key configured")

    monkeypatch.setattr(wandb, "Api", no_login)
    assert main(["--wandb", "e/p"]) == 2
    assert "could not load runs from W&B 'e/p'" in capsys.readouterr().err
