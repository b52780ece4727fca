"""End to end: a real tiny sweep trained by `sae-sweep --multirun` (no sweep file) into
tmp_path, in this process, then analysed."""

import analysis
from analysis.plots import frontier_plot, series_labels
from tests.sweep_fixtures import run_cli_in_process


def test_real_tiny_sweep_is_analysed(tmp_path, monkeypatch, capfd):
    sweep = tmp_path / "sweep"
    monkeypatch.chdir(tmp_path)
    code, out = run_cli_in_process(
        monkeypatch, capfd, "--multirun",
        "penalty=l1,decoder_norm", "penalty.coefficient=0.03,1.0",
        "logger=disabled", "device=cpu", "train.steps=5", "train.batch_size=64",
        "data.n_eval=512", "data.d=16", "data.n_features=32", "threads=1",
        f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert code == 0, out[-3000:]

    runs = analysis.load_runs(sweep)
    assert len(runs) == 4
    assert (runs["status"] == "done").all()
    assert runs["l0"].gt(0).all() and runs["fvu"].notna().all()

    paths = analysis.run_analysis(sweep)
    assert paths.report_md.parent == sweep
    md = paths.report_md.read_text()
    assert "4 runs: 4 done" in md
    a = analysis.analyse(runs)
    assert len(a.variants.order) == 2
    assert {"fvu", "mse", "mmcs"} <= set(a.metrics)
    assert (sweep / "plots" / "frontier_fvu.png").exists()
    assert series_labels(frontier_plot(a.runs, "fvu", order=a.variants.order)) == a.variants.order
