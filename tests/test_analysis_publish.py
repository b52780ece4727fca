"""Publishing to W&B: offline writes locally and prints the one command that uploads; online
builds W&B's real Report (wandb-workspaces) and sends it to a W&B server in the test process
(tests/wandb_server.py): only the network is replaced. The report's spec is checked as the
server receives it: the sweep instance's run sets, panels on the metric keys a real job
logs, figures the summary run really logged, the blocks in order, links on the configured
host; re-publishing updates the same report; nothing is linked before the jobs are on W&B."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import small_config
from wandb_log import offline_run
from wandb_server import FakeApi, FakeWandbServer

try:
    from analysis_fixtures import make_sweep
except ImportError:  # tests/ imported as a package
    from tests.analysis_fixtures import make_sweep

import analysis
from analysis.cli import main
from analysis.load import find_job_dirs
from analysis.publish import MAX_TITLE
from sae_sweep.evaluation.catalogue import title as title_of
from sae_sweep.record import layout

INSTANCE = "ablation-20240601-120000-ab12"


@pytest.fixture(scope="module")
def job_summary_keys(tmp_path_factory) -> set[str]:
    """The summary keys a real job sends to W&B (a tiny offline job, read from its log)."""
    from sae_sweep.config.schema import LoggerMode
    from sae_sweep.job import run_job

    saved = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "offline"
    try:
        cfg = small_config(train__steps=10)
        cfg.logger.mode = LoggerMode.offline
        job = tmp_path_factory.mktemp("job")
        run_job(cfg, job)
        import wandb

        wandb.teardown()
    finally:
        os.environ.pop("WANDB_MODE") if saved is None else os.environ.update(WANDB_MODE=saved)
    return offline_run(job)["summary_keys"]


def instance_sweep(root: Path) -> tuple[Path, list[str]]:
    """`make_sweep` as a sweep run now leaves it: an instance id in sweep.json, named
    variants, each job's W&B run id in its folder. Returns the folder and the run ids."""
    make_sweep(root, seeds=(0, 1))
    manifest = json.loads((root / layout.MANIFEST).read_text())
    (root / layout.MANIFEST).write_text(json.dumps({**manifest, "id": INSTANCE}))
    ids = []
    for i, job in enumerate(find_job_dirs(root)):
        config = layout.read_config(job)
        config["variant"] = f"{config['penalty']['kind']}_v"
        (job / layout.CONFIG).write_text(yaml.safe_dump(config))
        (job / layout.WANDB_RUN_ID).write_text(f"run{i}")
        ids.append(f"run{i}")
    return root, ids


@pytest.fixture
def server(monkeypatch) -> FakeWandbServer:
    """Online W&B with the server in this process: `wandb.Api()` reaches it, a W&B run
    logs what it would upload to its local log (read back by tests/wandb_log.py), and
    `wandb sync` uploads to it."""
    import wandb

    import analysis.sync

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_SILENT", "true")
    srv = FakeWandbServer()
    monkeypatch.setattr(wandb, "Api", lambda *a, **k: FakeApi(srv))
    real_init = wandb.init
    monkeypatch.setattr(wandb, "init", lambda **k: real_init(**{**k, "mode": "offline"}))
    monkeypatch.setattr(analysis.sync, "wandb_sync", srv.wandb_sync)
    return srv


def _blocks(spec: dict) -> list[dict]:
    return [b for b in spec["blocks"] if b["type"] != "paragraph"]


def _text(block: dict) -> str:
    if block["type"] == "markdown-block":
        return block["content"]
    return "".join(c.get("text", "") for c in block.get("children", []))


def test_publish_offline_writes_local_run_and_prints_one_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    root, _ = instance_sweep(tmp_path / "s")
    assert main([str(root), "--publish"]) == 0
    out = capsys.readouterr().out
    assert f"W&B publish (offline) to sae-sweep, group {INSTANCE}" in out
    assert f"    WANDB_MODE=online sae-analysis {root} --publish\n" in out
    sent = offline_run(root)
    assert sent["run"].run_group == INSTANCE and sent["run"].job_type == "analysis"
    assert {"runs", "verdicts", "figures/frontier_fvu", "figures/relative_fvu"} <= sent[
        "history_keys"
    ]
    record = json.loads((root / layout.WANDB_PUBLISH).read_text())
    assert record["summary_run_id"] == sent["run"].run_id
    # publishing again continues the same summary run: no second runs table in W&B
    assert main([str(root), "--publish"]) == 0
    runs = sorted((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and {p.name.rsplit("-", 1)[-1] for p in runs} == {
        record["summary_run_id"]
    }


def test_publish_disabled_logs_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = make_sweep(tmp_path / "s", seeds=(0,))
    paths = analysis.run_analysis(root, publish=True)
    assert paths.publish.ok
    assert "nothing logged" in paths.publish.describe()
    assert not (root / "wandb").exists()


def test_bad_inputs_are_refused_before_anything_is_sent(tmp_path, server, capsys):
    import wandb_workspaces.reports.v2 as wr

    root, ids = instance_sweep(tmp_path / "s")
    server.add_runs(ids, INSTANCE)
    assert main([str(root), "--publish", "--title", "x" * (MAX_TITLE + 1)]) == 2
    assert f"W&B takes at most {MAX_TITLE}: shorten --title" in capsys.readouterr().err
    assert main([str(root), "--publish", "--wandb", "e/my project"]) == 2
    assert "'my project' is not a valid name" in capsys.readouterr().err
    assert not (root / "wandb").exists() and not server.upserts
    # the limit is W&B's own: its Report refuses one character more
    wr.Report(project="p", entity="e", title="x" * MAX_TITLE)
    with pytest.raises(ValueError):
        wr.Report(project="p", entity="e", title="x" * (MAX_TITLE + 1))


def test_online_publish_sends_a_report_of_the_sweep_instance(
    tmp_path, server, job_summary_keys
):  # fmt: skip
    root, ids = instance_sweep(tmp_path / "s")
    server.add_runs(ids, INSTANCE)
    server.add_runs(["other1"], "ablation-20240501-090000-cd34")  # an earlier instance
    res = analysis.run_analysis(root, publish=True).publish
    assert res.ok, res.describe()
    assert res.steps["jobs on W&B"] == f"ok: {len(ids)} job runs in group {INSTANCE}"
    assert res.steps["W&B report"] == "ok: new report"
    (sent,) = server.upserts
    assert (sent["entityName"], sent["projectName"]) == ("e", "sae-sweep")
    assert sent["displayName"] == f"ablation: 2 variants ({INSTANCE})"
    assert res.report_url.startswith("https://wandb.example.org/e/sae-sweep/reports/")
    blocks = _blocks(server.spec)

    # what the sweep is, then the verdicts first
    about = _text(blocks[0])
    assert "`ablation`" in about and INSTANCE in about and "abc123" in about
    assert _text(blocks[1]).startswith("Verdicts") and "| verdict |" in _text(blocks[2])

    # per compared metric: a live scatter of the instance's job runs, one run set per
    # variant, on the keys jobs really log; then the report's figures from the summary run
    grids = [b for b in blocks if b["type"] == "panel-grid"]
    live = [g for g in grids if g["metadata"]["runSets"][0]["name"] != "summary run"]
    figures = [g for g in grids if g["metadata"]["runSets"][0]["name"] == "summary run"]
    metrics = ["fvu", "mse", "mmcs"]
    assert len(live) == len(figures) == len(metrics)
    summary_run = offline_run(root)
    for metric, grid, fig in zip(metrics, live, figures, strict=True):
        runsets = grid["metadata"]["runSets"]
        assert [r["name"] for r in runsets] == ["l1_v", "decoder_norm_v"]  # the plots' order
        for rs in runsets:
            keys = {(f["key"]["section"], f["key"]["name"]): (f["op"], f["value"])
                    for f in rs["filters"]["filters"]}  # fmt: skip
            assert keys[("run", "group")] == ("=", INSTANCE)
            assert keys[("run", "jobType")] == ("!=", "analysis")
            assert keys[("config", "variant.value")] == ("=", rs["name"])
            assert rs["project"] == {"name": "sae-sweep", "entityName": "e", "id": "e/sae-sweep"}
        (scatter,) = grid["metadata"]["panelBankSectionConfig"]["panels"]
        cfg = scatter["config"]
        assert scatter["viewType"] == "Scatter Plot"
        assert (cfg["xAxis"], cfg["yAxis"]) == ("summary:l0", f"summary:{metric}")
        assert {cfg["xAxis"][8:], cfg["yAxis"][8:]} <= job_summary_keys
        assert cfg["xAxisLogScale"] is True
        assert cfg.get("yAxisLogScale", False) is (metric != "mmcs")  # as in the report's plots
        assert cfg.get("showMinYAxisLine" if metric != "mmcs" else "showMaxYAxisLine") is True
        media = [
            p["config"]["mediaKeys"] for p in fig["metadata"]["panelBankSectionConfig"]["panels"]
        ]
        assert media == [[f"figures/frontier_{metric}"], [f"figures/relative_{metric}"]]
        assert {k for (k,) in media} <= summary_run["history_keys"]
        fig_filters = {
            f["key"]["name"]: f["value"]
            for f in fig["metadata"]["runSets"][0]["filters"]["filters"]
        }
        assert fig_filters == {"group": INSTANCE, "jobType": "analysis"}
    # runs coloured by variant, in the report plots' colours
    colours = live[0]["metadata"]["customRunColors"]
    assert len(set(colours.values())) == 2 and set(colours) <= set(ids)
    headings = [_text(b) for b in blocks if b["type"] == "heading"]
    assert headings[:4] == [
        "Verdicts (paired seeds at matched L0, 95% CI)",
        f"{title_of('fvu')} against L0 (lower is better)",
        f"{title_of('mse')} against L0 (lower is better)",
        f"{title_of('mmcs')} against L0 (higher is better)",
    ]
    assert headings[-1] == "Failed and unfinished runs (2)"

    # publishing again updates the same report
    record = json.loads((root / layout.WANDB_PUBLISH).read_text())
    again = analysis.run_analysis(root, publish=True).publish
    assert again.ok and again.steps["W&B report"] == "ok: updated"
    assert server.upserts[-1]["id"] == record["report_id"] == "view1"
    assert "W&B report (updated)" in again.describe()


def test_nothing_is_linked_before_the_jobs_are_on_wandb_and_publish_syncs_them(tmp_path, server):
    import wandb

    root, ids = instance_sweep(tmp_path / "s")
    server.add_runs(ids[:-3], INSTANCE)
    res = analysis.run_analysis(root, publish=True, publish_cmd="CMD").publish
    assert not res.ok
    assert res.steps["jobs on W&B"].startswith(f"FAILED: 3 of {len(ids)} job runs are not on W&B")
    assert "upload them: CMD" in res.steps["jobs on W&B"]
    assert res.steps["W&B report"].startswith("skipped") and not server.upserts
    assert not (root / "wandb").exists()  # no summary run either

    # the three jobs logged offline (the default): publishing uploads them first
    for job in find_job_dirs(root)[-3:]:
        run_id = (job / layout.WANDB_RUN_ID).read_text()
        wandb.init(dir=str(job), id=run_id, group=INSTANCE, job_type="train",
                   project="sae-sweep").finish()  # fmt: skip
    res = analysis.run_analysis(root, publish=True).publish
    assert res.ok, res.describe()
    assert res.steps["sync"] == "ok: 3 offline runs uploaded now, 0 earlier"
    assert res.steps["jobs on W&B"] == f"ok: {len(ids)} job runs in group {INSTANCE}"
    assert res.steps["W&B report"] == "ok: new report"
    assert {cwd for _, cwd in server.syncs} == set(find_job_dirs(root)[-3:])  # in each job


def test_online_partial_publish_is_loud(tmp_path, server, capsys):
    root, ids = instance_sweep(tmp_path / "s")
    server.add_runs(ids, INSTANCE)
    server.fail_upsert = PermissionError("permission denied")
    assert main([str(root), "--publish", "--wandb", "e/sae-sweep"]) == 1
    out = capsys.readouterr().out
    assert "summary run: ok" in out
    assert "W&B report: FAILED: PermissionError: permission denied" in out
    assert "PARTIALLY PUBLISHED" in out
    assert f"run again: WANDB_MODE=online sae-analysis {root} --wandb e/sae-sweep --publish" in out


def test_cli_reports_wandb_load_errors(tmp_path, monkeypatch, capsys):
    import wandb

    def no_login():
        raise wandb.errors.UsageError("No API key configured")

    monkeypatch.setattr(wandb, "Api", no_login)
    assert main(["--wandb", "e/p"]) == 2
    assert "could not load runs from W&B 'e/p'" in capsys.readouterr().err


def test_publish_links_the_frontier_runs_sae_artifacts(tmp_path, server, monkeypatch):
    """Online: the summary run uses each frontier SAE's artifact, the W&B Report links them
    on the configured host."""
    import wandb

    from analysis.frontier import frontier_points
    from analysis.load import load_runs
    from analysis.variants import assign_variants

    root, ids = instance_sweep(tmp_path / "s")
    server.add_runs(ids, INSTANCE)
    # one point made worse than a cheaper one: it must not be linked
    for p in root.rglob("summary.json"):
        s = json.loads(p.read_text())
        if s.get("status") == "done":
            s["sae_artifact"] = f"sae-{p.parent.name}"
            if s["knobs"]["penalty.coefficient"] == 0.3 and s["knobs"]["penalty.kind"] == "l1":
                s["fvu"] = 5.0
            p.write_text(json.dumps(s))
    used = []

    class SummaryRun(SimpleNamespace):
        def log(self, *a, **k): ...
        def log_artifact(self, *a, **k): ...
        def finish(self, *a, **k): ...
        def use_artifact(self, name):
            used.append(name)

    # the summary run's use of artifacts needs the server's artifact registry
    monkeypatch.setattr(
        wandb, "init", lambda **k: SummaryRun(url="u", dir=None, entity="e", id="s1")
    )
    res = analysis.run_analysis(root, publish=True).publish  # project: the runs' logger.project
    assert res.ok, res.describe()

    runs, _ = assign_variants(load_runs(root))
    pts = frontier_points(runs, "fvu")
    on = {i.strip() for r in pts[pts["on_frontier"]]["run_ids"] for i in r.split(",")}
    expected = {f"e/sae-sweep/{a}:latest" for a in runs[runs["run_id"].isin(on)]["sae_artifact"]}
    assert sorted(used) == sorted(expected) and len(expected) >= 4
    assert (
        res.steps["frontier SAE artifacts"]
        == f"ok: {len(expected)} of {len(expected)} frontier SAEs linked"
    )
    text = "\n".join(b["content"] for b in _blocks(server.spec) if b["type"] == "markdown-block")
    for name in expected:
        short = name.split("/")[-1].removesuffix(":latest")
        assert f"https://wandb.example.org/e/sae-sweep/artifacts/sae/{short}/latest" in text
