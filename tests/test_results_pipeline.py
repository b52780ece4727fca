"""CI-sized version of the results pipeline (docs/results.md): a sweep file run through
`sae-sweep +sweep=...` with variant presets, ending in the report, plots and runs table that
docs/results/<sweep>/ holds. The full-size runs are documented commands, not part of CI."""

import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("gated_original", "gated_dn_trainable_live")


def test_tiny_sweep_produces_report_plots_and_runs_table(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, "-m", "sae_sweep", "+sweep=quick", "hydra/launcher=basic",
        f"variant={','.join(VARIANTS)}", "lambda_multiplier=1.0,4.0", "seed=0", "l0_targets=[]",
        "logger=disabled", "device=cpu", "train.steps=30", "train.batch_size=64",
        "data.d=16", "data.n_features=32", "data.n_eval=512",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    report = sweep / "report.md"
    assert report.exists(), proc.stdout[-3000:]
    md = report.read_text()
    assert "4 runs: 4 done" in md
    for v in VARIANTS:
        assert v in md

    plots = sweep / "plots"
    assert (plots / "frontier_fvu.png").stat().st_size > 0
    assert list(plots.glob("*.svg")), "no SVG plots"

    with open(sweep / "tables" / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert {r["status"] for r in rows} == {"done"}
    assert {r["variant"] for r in rows} == set(VARIANTS)
    assert all(float(r["l0"]) > 0 and float(r["fvu"]) >= 0 for r in rows)
