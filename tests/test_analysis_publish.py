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


def test_publish_links_the_frontier_runs_sae_artifacts(tmp_path, monkeypatch):
    """Online: the summary run uses each frontier SAE's artifact, the W&B Report lists them."""
    import json

    import wandb
    import wandb_workspaces.reports.v2 as wr

    from analysis.frontier import frontier_points
    from analysis.load import load_runs
    from analysis.variants import assign_variants

    monkeypatch.setenv("WANDB_MODE", "online")
    root = make_sweep(tmp_path / "s", seeds=(0,), lams=(0.1, 0.3, 1.0))
    # one point made worse than a cheaper one: it must not be linked
    for p in root.rglob("summary.json"):
        s = json.loads(p.read_text())
        if s.get("status") == "done":
            s["sae_artifact"] = f"sae-{p.parent.name}"
            if s["knobs"]["penalty.coefficient"] == 0.3 and s["knobs"]["penalty.kind"] == "l1":
                s["fvu"] = 5.0
            p.write_text(json.dumps(s))
    used, saved = [], {}

    class FakeRun(SimpleNamespace):
        def log(self, *a, **k): ...
        def log_artifact(self, *a, **k): ...
        def finish(self, *a, **k): ...
        def use_artifact(self, name):
            used.append(name)

    monkeypatch.setattr(wandb, "init", lambda **k: FakeRun(url="u", dir=None, entity="e"))
    monkeypatch.setattr(wandb, "Image", lambda *a, **k: None)

    class FakeReport:
        def __init__(self, project, entity, title, blocks):
            saved["blocks"] = blocks
            self.url = "r"

        def save(self): ...

    monkeypatch.setattr(wr, "Report", FakeReport)
    res = analysis.run_analysis(root, publish=True).publish  # project: the runs' logger.project
    assert res.ok, res.describe()

    runs, _ = assign_variants(load_runs(root))
    pts = frontier_points(runs, "fvu")
    on = {i.strip() for r in pts[pts["on_frontier"]]["run_ids"] for i in r.split(",")}
    expected = {f"sae-sweep/{a}:latest" for a in runs[runs["run_id"].isin(on)]["sae_artifact"]}
    assert sorted(used) == sorted(expected) and len(expected) == 5
    assert res.steps["frontier SAE artifacts"] == "ok: 5 of 5 frontier SAEs linked"
    text = "\n".join(b.text for b in saved["blocks"] if isinstance(b, wr.MarkdownBlock))
    for name in expected:
        short = name.split("/")[-1].removesuffix(":latest")
        assert f"https://wandb.ai/e/sae-sweep/artifacts/sae/{short}/latest" in text
