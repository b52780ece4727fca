"""End to end: a real tiny sweep trained by `sae-sweep` into tmp_path, then analysed."""

import subprocess
import sys
from pathlib import Path

import pytest

import analysis
from analysis.plots import frontier_plot, series_labels

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_real_tiny_sweep_is_analysed(tmp_path):
    pytest.importorskip("sae_sweep.main")
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, "-m", "sae_sweep", "--multirun",
        "penalty=l1,decoder_norm", "penalty.coefficient=0.03,1.0",
        "logger=disabled", "device=cpu", "train.steps=5", "train.batch_size=64",
        "data.n_eval=512", "data.d=16", "data.n_features=32",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

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
