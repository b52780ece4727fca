"""Plots, report and CLI on a hand-made sweep folder."""

import pandas as pd

try:
    from analysis_fixtures import make_sweep
except ImportError:  # tests/ imported as a package
    from tests.analysis_fixtures import make_sweep

import analysis
from analysis.cli import main
from analysis.plots import frontier_plot, save_figure, series_labels
from analysis.report import analyse


def test_plot_has_one_series_per_variant_and_files_are_written(tmp_path):
    a = analyse(analysis.load_runs(make_sweep(tmp_path / "s")))
    fig = frontier_plot(a.runs, "fvu", order=a.variants.order)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert series_labels(fig) == a.variants.order  # one labelled line per variant
    assert [t.get_text() for t in ax.get_legend().get_texts()] == a.variants.order
    # Every finished run is a faint point: one scatter per variant, 8 runs each.
    runs = [c for c in ax.collections if c.get_label().startswith("_runs")]
    assert len(runs) == 2 and all(len(c.get_offsets()) == 8 for c in runs)
    assert all(c.get_alpha() < 0.5 for c in runs)
    # One colour and one marker per variant.
    lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    assert len({ln.get_color() for ln in lines}) == 2
    assert len({ln.get_marker() for ln in lines}) == 2
    paths = save_figure(fig, tmp_path / "plots", "fvu")
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_frontier_plot_of_three_variants_from_a_plain_dataframe():
    rows = []
    for v, scale in (("x", 1.0), ("y", 0.9), ("z", 1.1)):
        for lam, l0 in ((0.1, 30.0), (1.0, 3.0), (0.5, 40.0)):
            rows.append({"variant_label": v, "penalty.coefficient": lam, "l0": l0,
                         "fvu": scale / l0, "status": "done", "run_id": f"{v}{lam}"})  # fmt: skip
    fig = frontier_plot(pd.DataFrame(rows), "fvu")
    assert series_labels(fig) == ["x", "y", "z"]
    # (0.5 -> L0 40) is a better point than (0.1 -> L0 30)? No: higher L0, lower FVU: kept.
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == 3


def test_report_lists_failed_and_unfinished_runs(tmp_path):
    root = make_sweep(tmp_path / "s")
    paths = analysis.run_analysis(root)
    assert paths.report_md == root / "report.md"
    md = paths.report_md.read_text()
    html = paths.report_html.read_text()
    for text in (md, html):
        assert "Failed and unfinished runs (2)" in text
        assert "ablation/16" in text and "CUDA out of memory" in text
        assert "ablation/17" in text and "unfinished" in text
        assert "Verdicts per matched L0 (paired seeds, Holm-adjusted)" in text
    # The report opens with the verdicts; decoder_norm has 20% lower FVU at every seed.
    first = md.split("## Verdicts per matched L0 (paired seeds, Holm-adjusted)")[1].split("##")[0]
    line = next(ln for ln in first.splitlines() if ln.startswith("- **fvu**"))
    assert "2 seeds: `penalty.kind=decoder_norm` vs" in line and "-20.00%" in line
    assert line.endswith(": **b better**")
    assert md.index("## Verdicts") < md.index("## Variants")
    assert "plots/frontier_fvu.png" in md
    assert "data:image/png;base64," in html  # the HTML is one self-contained file
    assert {p.name for p in paths.plots} >= {"frontier_fvu.png", "frontier_fvu.svg",
                                              "frontier_mse.png", "frontier_mmcs.svg",
                                              "relative_fvu.png"}  # fmt: skip
    assert not any("loss_recovered" in p.name for p in paths.plots)  # not LM data
    assert all(p.exists() for p in paths)
    runs_csv = pd.read_csv(root / "tables" / "runs.csv")
    assert len(runs_csv) == 18


def test_not_like_with_like_warning_in_report(tmp_path):
    root = make_sweep(tmp_path / "s")
    # Make the decoder_norm variant also drop the unit-norm constraint: two knobs differ.
    for cfg_path in root.rglob("config.yaml"):
        text = cfg_path.read_text()
        if "kind: decoder_norm" in text:
            cfg_path.write_text(text.replace("unit_norm_decoder: true", "unit_norm_decoder: false"))
    md = analysis.run_analysis(root, tmp_path / "out").report_md.read_text()
    assert md.count("not like with like") == 1  # once per pair, not once per metric
    assert "`train.unit_norm_decoder`" in md


def test_two_recipes_are_compared_as_bundles(tmp_path):
    root = make_sweep(tmp_path / "s")
    for cfg_path in root.rglob("config.yaml"):
        text = cfg_path.read_text()
        recipe = "paper" if "kind: l1" in text else "april_update"
        text = text.replace("unit_norm_decoder: true", f"unit_norm_decoder: {recipe == 'paper'}")
        cfg_path.write_text(text + f"recipe: {recipe}\n")
    md = analysis.run_analysis(root, tmp_path / "out").report_md.read_text()
    assert "not like with like" not in md
    assert md.count("recipe vs recipe") == 1
    note = next(ln for ln in md.splitlines() if "recipe vs recipe" in ln)
    assert "`penalty.kind`" in note and "`train.unit_norm_decoder`" in note


def test_report_when_every_run_failed(tmp_path):
    root = make_sweep(tmp_path / "s", seeds=(0,), lams=(0.1,))
    for s in root.rglob("summary.json"):
        s.write_text('{"status": "failed", "error": "boom"}')
    md = analysis.run_analysis(root).report_md.read_text()
    assert "No finished run" in md
    assert "Failed and unfinished runs (4)" in md


def test_cli_prints_report_and_plot_paths(tmp_path, capsys):
    root = make_sweep(tmp_path / "s")
    out = tmp_path / "out"
    assert main([str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.md'}" in printed
    assert str(out / "plots" / "frontier_fvu.png") in printed
    assert (out / "report.html").exists()


def test_cli_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err


def test_diverged_and_zero_l0_runs_are_listed_not_plotted(tmp_path):
    import json

    root = make_sweep(tmp_path / "s")
    for job, patch in (("0", {"fvu": "nan", "mse": "inf"}), ("1", {"l0": 0.0})):
        p = root / job / "summary.json"
        p.write_text(json.dumps(json.loads(p.read_text()) | patch))  # NaN/inf as strings
    a = analyse(analysis.load_runs(root))
    assert a.runs.set_index("run_id").loc["ablation/0", "mse"] == float("inf")
    assert "ablation/0" not in a.metrics["fvu"].points["run_ids"].str.cat(sep=",")
    md = analysis.run_analysis(root).report_md.read_text()
    section = md.split("Finished runs not on any frontier (2)")[1]
    assert "ablation/0" in section and "fvu = nan" in section
    assert "ablation/1" in section and "L0 = 0.0" in section


def test_report_tables_do_not_change_with_the_last_bits_of_the_arithmetic(tmp_path):
    # The same runs computed on another machine differ in the 16th digit; the tables written
    # from them must not (a rebuild elsewhere changes no committed file). The runs table
    # holds the recorded values themselves and keeps them exact.
    runs = analysis.load_runs(make_sweep(tmp_path / "s"))
    nudged = runs.assign(fvu=runs["fvu"] * (1 + 3e-16), mse=runs["mse"] * (1 - 3e-16))
    assert (nudged["fvu"] != runs["fvu"]).any()
    written = {}
    for name, r in (("exact", runs), ("nudged", nudged)):
        paths = analysis.write_report(r, tmp_path / name, generated="here", plots=False)
        written[name] = {p.name: p.read_bytes() for p in paths.tables}
    assert {"frontier_fvu.csv", "paired_fvu.csv", "comparisons_fvu.csv"} <= set(written["exact"])
    changed = {n for n in written["exact"] if written["exact"][n] != written["nudged"][n]}
    assert changed == {"runs.csv"}
    frontier = pd.read_csv(tmp_path / "exact" / "tables" / "frontier_fvu.csv")
    assert all(len(f"{v:.15g}".replace(".", "").lstrip("0")) <= 8 for v in frontier["fvu"])
    kept = pd.read_csv(tmp_path / "exact" / "tables" / "runs.csv")
    assert kept["fvu"].dropna().tolist() == runs["fvu"].dropna().tolist()


def test_the_targets_section_says_how_the_seeds_were_placed(tmp_path):
    """A sweep placed per seed says each seed hits on its own; one whose seeds shared a lambda
    (its targets.json records so, or names no seed, as before the choice existed) says the
    seed mean hits."""
    runs = analysis.load_runs(make_sweep(tmp_path / "s"))
    per_seed = {"targets": [{"variant": "a, seed=0", "target": 8.0, "status": "hit"}],
                "l0_tolerance": 0.1, "rounds": 1, "max_rounds": 3}  # fmt: skip
    shared = {**per_seed, "targets": [{"variant": "a", "target": 8.0, "status": "hit"}]}
    for name, targets, words in (
        ("seed", per_seed, "each seed is placed at a lambda of its own, and hits a target when "
                           "its L0 is within 10%"),
        ("named", {**shared, "l0_lambda_per": "seed"}, "each seed is placed at a lambda of its"),
        ("variant", shared, "a target is hit when the seed-mean L0 is within 10%"),
    ):  # fmt: skip
        paths = analysis.write_report(runs, tmp_path / name, targets=targets, plots=False)
        assert words in paths.report_md.read_text(), name
