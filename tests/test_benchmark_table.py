"""The report's SynthSAEBench table: per variant and target L0, the ground-truth metrics'
mean and spread over seeds, and the verdicts of gated against each modern architecture."""

from __future__ import annotations

import pandas as pd
import pytest

import analysis
from analysis.benchmark_table import benchmark_tables, benchmark_values, gated_verdicts
from analysis.effects import fmt
from analysis.model import analyse

try:
    from analysis_fixtures import config, summary, write_job
except ImportError:  # tests/ imported as a package
    from tests.analysis_fixtures import config, summary, write_job

VARIANTS = (("gated_original", "gated", 1.0), ("batchtopk", "batchtopk", 1.2),
            ("standard_dn", "standard", 0.9))  # fmt: skip


def _runs(ground_truth: bool = True) -> pd.DataFrame:
    """Three variants on one L0 curve (L0 = 32 / multiplier: 32, 16, 8, 4), 3 seeds; the
    ground-truth metrics scale with the variant's factor and 2% per seed."""
    rows = []
    for variant, kind, scale in VARIANTS:
        for lam in (1, 2, 4, 8):
            for s in (0, 1, 2):
                mcc = 0.5 * scale * (1 + 0.02 * s) * (1 + 0.01 * lam)
                row = {"variant": variant, "sae.kind": kind, "lambda_multiplier": lam, "seed": s,
                       "l0": 32.0 / lam, "fvu": 0.1 * (1 + 0.01 * s) / scale, "status": "done",
                       "run_id": f"{variant}{lam}{s}", "data.d": 64, "sweep": "synth",
                       "l0_targets": (4.0, 8.0), "l0_tolerance": 0.1}  # fmt: skip
                if ground_truth:
                    row |= {"mcc": mcc, "f1": 0.8 * mcc, "uniqueness": 0.9 - 0.01 * s,
                            "explained_variance": 1 - row["fvu"]}  # fmt: skip
                rows.append(row)
    return pd.DataFrame(rows)


def test_table_holds_each_variants_seed_mean_and_spread_at_each_target():
    values = benchmark_values(analyse(_runs()))
    at8 = values[(values["target"] == 8.0) & (values["variant"] == "batchtopk")]
    mcc = at8.set_index("metric").loc["mcc"]
    seeds = [0.5 * 1.2 * (1 + 0.02 * s) * 1.04 for s in (0, 1, 2)]  # multiplier 4: L0 8
    assert mcc["seeds"] == 3
    assert mcc["mean"] == pytest.approx(sum(seeds) / 3)
    assert mcc["sd"] == pytest.approx(pd.Series(seeds).std())
    tables = benchmark_tables(values)
    assert sorted(tables) == [4.0, 8.0]
    table = tables[8.0].set_index("variant")
    assert list(table.index) == ["gated_original", "batchtopk", "standard_dn"]
    assert list(table.columns) == ["seeds", "L0", "F1", "MCC", "uniqueness", "explained variance"]
    assert (
        table.loc["batchtopk", "MCC"] == f"{fmt(mcc['mean'])} ± {fmt(mcc['sd'])}"
    )  # 0.636 ± 0.0125
    assert table.loc["batchtopk", "L0"] == "achieved L0 8-8"


def test_verdicts_pair_gated_with_the_modern_architectures_only():
    lines = gated_verdicts(analyse(_runs()))
    assert lines and all("`batchtopk` vs `gated_original`" in line for line in lines)
    assert {line.split("**")[1] for line in lines} == {"mcc", "f1", "fvu"}
    assert sum("at L0 8," in line for line in lines) == 3
    assert all(line.endswith("**b better**") for line in lines)  # 20% better everywhere


def _sweep_folder(root, ground_truth: bool, kinds: set[str] | None = None):
    """`_runs` as job records (only the variants of `kinds`, if given): what `sae-analysis`
    and the end of a sweep read."""
    for i, r in _runs(ground_truth).iterrows():
        if kinds is not None and r["sae.kind"] not in kinds:
            continue
        knobs = {"sae.kind": r["sae.kind"], "data.d": 64, "l0_targets": [4.0, 8.0]}
        cfg = config(seed=r["seed"], variant=r["variant"], lambda_multiplier=r["lambda_multiplier"],
                     **knobs)  # fmt: skip
        truth = {k: r[k] for k in ("mcc", "f1", "uniqueness") if k in r}
        write_job(root / str(i), cfg, summary(cfg, r["l0"], r["fvu"], **truth))
    return root


def test_report_shows_the_table_only_with_ground_truth_metrics(tmp_path):
    with_truth = analysis.run_analysis(_sweep_folder(tmp_path / "a", ground_truth=True))
    md = with_truth.report_md.read_text()
    assert "## Ground-truth table (SynthSAEBench form)" in md and "### L0 8" in md
    assert "Not at this target" not in md  # every variant has a point at both targets
    assert "`batchtopk` vs `gated_original`" in md.split("Gated against each modern")[1]
    assert (tmp_path / "a" / "tables" / "benchmark_table.csv").exists()
    # the same table as text, which the end of a sweep prints last: a line per target, and
    # per target a header and a row per variant
    text = with_truth.benchmark
    assert [line for line in text if line.startswith("at L0")] == [
        "at L0 4 (mean ± sd over seeds):", "at L0 8 (mean ± sd over seeds):"]  # fmt: skip
    assert all(v in text[1] and v in text[3] for v in ("batchtopk", "gated_original"))
    assert "F1" in text[1] and "MCC" in text[1]
    without = analysis.run_analysis(_sweep_folder(tmp_path / "b", ground_truth=False))
    assert "Ground-truth table" not in without.report_md.read_text()
    assert without.benchmark == []


def test_a_sweep_without_a_modern_architecture_has_no_gated_against_modern_part(tmp_path):
    """The quick sweep's gated variants on the built-in data have ground-truth metrics: their
    table is shown, and no section for a comparison the sweep cannot make."""
    root = _sweep_folder(tmp_path / "gated_only", ground_truth=True, kinds={"gated", "standard"})
    md = analysis.run_analysis(root).report_md.read_text()
    assert "## Ground-truth table (SynthSAEBench form)" in md
    assert "Gated against each modern architecture" not in md
