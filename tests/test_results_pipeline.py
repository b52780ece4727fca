"""CI-sized version of the results pipeline (docs/results.md): a sweep file run through
`sae-sweep +sweep=...` with variant presets, ending in the report, plots and runs table that
docs/results/<sweep>/ holds. The full-size runs are documented commands, not part of CI.
The sweep is conftest's shared one (`finished_sweep`), analysed at its end."""

import csv

VARIANTS = ("gated_original", "gated_dn_frozen_detached")


def test_tiny_sweep_produces_report_plots_and_runs_table(finished_sweep):
    sweep = finished_sweep
    report = sweep / "report.md"
    assert report.exists()
    md = report.read_text()
    assert "12 runs: 12 done" in md
    for v in VARIANTS:
        assert v in md

    plots = sweep / "plots"
    assert (plots / "frontier_fvu.png").stat().st_size > 0
    assert list(plots.glob("*.svg")), "no SVG plots"

    with open(sweep / "tables" / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    assert {r["status"] for r in rows} == {"done"}
    assert {r["variant"] for r in rows} == set(VARIANTS)
    assert all(float(r["l0"]) > 0 and float(r["fvu"]) >= 0 for r in rows)
