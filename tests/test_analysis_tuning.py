"""Each variant at its own best tuned value, on constructed runs with known answers (no
training): the choice per variant, the comparison at the chosen values only, pilot seeds
kept out of the verdicts, the report's lines and tables, and `sae-analysis` reading the
tuning from the records or from --tune. Each test says who wins, by how much, and the
verdict word."""

import math
from pathlib import Path

import pandas as pd
import pytest

from analysis import claims as cl
from analysis import load_runs
from analysis.cli import main as cli_main
from analysis.model import analyse
from analysis.report import write_report
from analysis.tuning import declared
from tests.analysis_fixtures import config, summary, write_job

LRS = (0.001, 0.003, 0.01)
LAMS = (0.5, 1.0, 2.0, 4.0)
# The fake relation: fvu = factor[variant][lr] x 0.5 / sqrt(L0), times a small per-seed noise.
# `l1` is best at lr 0.001, `dn` at 0.01; the value best on average over both is 0.003,
# where `l1` wins by 20%; each at its best, `dn` wins by 1 - 0.9 / 0.95 = 5.26%.
FACTORS = {
    "l1": {0.001: 0.95, 0.003: 1.0, 0.01: 1.5},
    "dn": {0.001: 1.3, 0.003: 1.2, 0.01: 0.9},
}
NOISE = (1.0, 1.003, 0.998, 1.002)  # per seed, of `dn` only: paired seeds with a small spread


def l0_of(lam: float) -> float:
    return 32.0 / (1.0 + 2.0 * lam)  # 16, 10.7, 6.4, 3.56: inside the sparse regime of d = 64


def make_tuned_sweep(root: Path, seeds=(0, 1, 2, 3), criterion=None, factors=FACTORS,
                     declare=True, pilot_factors=None) -> Path:  # fmt: skip
    """A sweep of two variants x LRS x LAMS x seeds; `pilot_factors` replaces seed 0's."""
    root.mkdir(parents=True, exist_ok=True)
    crit = {"metric": "fvu", "at_l0": 6.4, "seeds": "same", "pilot_seeds": [], "shared": {}}
    crit |= criterion or {}
    i = 0
    for variant, kind in (("l1", "l1"), ("dn", "decoder_norm")):
        for lr in LRS:
            for lam in LAMS:
                for seed in seeds:
                    extra = {"tune": {"train.lr": list(LRS)}, "tune_criterion": crit} \
                        if declare else {}  # fmt: skip
                    cfg = config(seed=seed, variant=variant, **extra,
                                 **{"penalty.kind": kind, "penalty.coefficient": lam,
                                    "train.lr": lr, "data.d": 64})  # fmt: skip
                    table = pilot_factors if (seed == 0 and pilot_factors) else factors
                    noise = NOISE[seed % len(NOISE)] if variant == "dn" else 1.0
                    l0 = l0_of(lam)
                    fvu = table[variant][lr] * 0.5 / math.sqrt(l0) * noise
                    write_job(root / str(i), cfg, summary(cfg, l0, fvu))
                    i += 1
    return root


def test_each_variant_is_compared_at_its_own_best_lr(tmp_path):
    runs = load_runs(make_tuned_sweep(tmp_path / "s"))
    a = analyse(runs, metrics=["fvu"])
    t = a.tuning
    assert t is not None and t.spec.knobs == ("train.lr",)
    assert a.variants.order == ["l1", "dn"]  # the tuned knob makes no variant of its own
    assert {v: t.chosen(v) for v in t.variants} == {"l1": "0.001", "dn": "0.01"}
    assert t.text(t.shared) == "0.003"
    # Only each variant's runs at its best lr are compared: 4 lambdas x 4 seeds each.
    assert sorted(a.compared.groupby("variant_label")["train.lr"].unique().map(list).items()) \
        == [("dn", [0.01]), ("l1", [0.001])]  # fmt: skip
    assert len(a.compared) == 2 * len(LAMS) * 4
    (pair,) = a.metrics["fvu"].pairs
    assert (pair.a, pair.b) == ("l1", "dn")
    expected = 100 * (0.9 / 0.95 - 1)  # -5.26%: dn's fvu is lower, dn wins
    for pt in pair.points:
        assert pt.judged.effect.pct() == pytest.approx(expected, abs=0.2)
        assert pt.judged.words() == "b better"
    # How much tuning changed each variant: l1 0.95 vs 1.0 (-5%), dn 0.9 vs 1.2 (-25%).
    assert t.variants["l1"].change.pct() == pytest.approx(-5.0, abs=0.01)
    assert t.variants["dn"].change.pct() == pytest.approx(-25.0, abs=0.2)
    # At the shared lr l1 wins by 20%; each at its best dn wins: the report says so.
    (change,) = t.pairs
    assert change.shared.kind() == "a better"
    assert change.shared.effect.pct() == pytest.approx(20.0, abs=0.3)
    assert change.best.kind() == "b better"


def test_the_report_names_the_chosen_values_and_the_reversal(tmp_path):
    runs = load_runs(make_tuned_sweep(tmp_path / "s"))
    paths = write_report(runs, tmp_path / "out", analysis=analyse(runs, metrics=["fvu"]),
                         plots=False)  # fmt: skip
    assert paths.verdicts[0] == ("Each variant at its best train.lr (fvu at L0 6.4, chosen on "
                                 "the compared seeds 0, 1, 2, 3): l1 0.001, dn 0.01.")  # fmt: skip
    md = paths.report_md.read_text()
    assert "## Tuning: each variant at its best train.lr" in md
    assert "The same seeds chose the values and compare the variants" in md
    assert ("Tuning changes the verdict: `l1` wins at the shared value, `dn` wins each at its "
            "best") in md  # fmt: skip
    verdicts = pd.read_csv(tmp_path / "out" / "tables" / "verdicts.csv")
    assert set(verdicts["a train.lr"]) == {0.001} and set(verdicts["b train.lr"]) == {0.01}
    assert set(verdicts["verdict"]) == {"b better"}
    tuning = pd.read_csv(tmp_path / "out" / "tables" / "tuning.csv")
    chosen = tuning[tuning["chosen"] == "best"].set_index("variant")["train.lr"].to_dict()
    assert chosen == {"l1": 0.001, "dn": 0.01}
    assert tuning.set_index(["variant", "train.lr"]).loc[("dn", 0.01), "best vs shared, 95% CI"] \
        .startswith("-25.0")  # fmt: skip
    # Both bests are ends of the range tried: the report says the best may lie beyond.
    assert ("At the edge of the range tried: `l1` (train.lr 0.001 is the smallest value tried), "
            "`dn` (train.lr 0.01 is the largest value tried).") in md  # fmt: skip


def test_a_best_value_inside_the_range_tried_is_not_at_its_edge(tmp_path):
    inside = {"l1": {0.001: 1.1, 0.003: 1.0, 0.01: 1.5}, "dn": {0.001: 1.3, 0.003: 1.2, 0.01: 1.25}}
    t = analyse(load_runs(make_tuned_sweep(tmp_path / "s", factors=inside)), metrics=["fvu"]).tuning
    assert {v: (t.chosen(v), vt.edges) for v, vt in t.variants.items()} == {
        "l1": ("0.003", []), "dn": ("0.003", []),
    }  # fmt: skip


def test_a_sweep_resumed_with_a_longer_range_declares_every_value(tmp_path):
    """A value added past the edge on a resume: the runs of each launch declare their list."""
    runs = load_runs(make_tuned_sweep(tmp_path / "s"))
    runs["tune.train.lr"] = [(0.001, 0.003, 0.01)] * (len(runs) - 1) + [(0.001, 0.003, 0.01, 0.03)]
    assert declared(runs)[0] == {"train.lr": [0.001, 0.003, 0.01, 0.03]}


def test_pilot_seeds_choose_and_stay_out_of_the_verdicts(tmp_path):
    # Seed 0 alone prefers lr 0.003 for dn (0.8); the other seeds prefer 0.01 (0.9 < 1.2).
    pilot = {"l1": FACTORS["l1"], "dn": {0.001: 1.3, 0.003: 0.8, 0.01: 0.9}}
    root = make_tuned_sweep(tmp_path / "s", pilot_factors=pilot,
                            criterion={"seeds": "pilot", "pilot_seeds": [0]})  # fmt: skip
    a = analyse(load_runs(root), metrics=["fvu"])
    t = a.tuning
    assert {v: t.chosen(v) for v in t.variants} == {"l1": "0.001", "dn": "0.003"}
    assert t.seeds_choose == [0] and t.seeds_compare == [1, 2, 3]
    assert set(a.compared["seed"]) == {1, 2, 3}
    (pair,) = a.metrics["fvu"].pairs
    for pt in pair.points:  # dn at 0.003 (1.2) against l1 at 0.001 (0.95): l1 wins by 26%
        assert pt.judged.effect.n == 3
        assert pt.judged.effect.pct() == pytest.approx(100 * (1.2 / 0.95 - 1), abs=0.3)
        assert pt.judged.words() == "a better"
    md = write_report(a.runs, tmp_path / "out", analysis=a, plots=False).report_md.read_text()
    assert "chosen on pilot seeds 0, which no verdict uses" in md


def test_runs_without_tuning_are_analysed_as_before(tmp_path):
    root = make_tuned_sweep(tmp_path / "s", declare=False)
    a = analyse(load_runs(root), metrics=["fvu"])
    assert a.tuning is None and a.compared is a.runs
    # every lr is a variant of its own, as in any sweep that varies it
    assert len(a.variants.order) == 6 and "l1 (lr=0.001)" in a.variants.order


def test_sae_analysis_tunes_without_flags_and_on_request(tmp_path, capsys):
    tuned = make_tuned_sweep(tmp_path / "tuned")
    assert cli_main([str(tuned), "--metrics", "fvu"]) == 0
    assert "Each variant at its best train.lr" in capsys.readouterr().out
    plain = make_tuned_sweep(tmp_path / "plain", declare=False)
    code = cli_main([str(plain), "--metrics", "fvu", "--tune", "train.lr",
                     "--tune-criterion", "at_l0=6.4", "shared.train.lr=0.003"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "Each variant at its best train.lr (fvu at L0 6.4, chosen on the compared seeds " \
           "0, 1, 2, 3): l1 0.001, dn 0.01." in out  # fmt: skip
    assert cli_main([str(tuned), "--metrics", "fvu", "--no-tune"]) == 0
    assert "Each variant at its best" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tune-criterion", "at_l0=6.4"], "the runs declare no `tune`; name the knobs"),
        (["--tune", "train.lrr", "--tune-criterion", "at_l0=6.4"], "not a knob of these runs"),
        (["--tune", "train.lr"], "tune_criterion.at_l0 is not set"),
        (
            ["--tune", "train.lr", "--tune-criterion", "at_l0=6.4", "metric=l0_norm"],
            "is not a metric of the catalogue",
        ),
    ],
)
def test_bad_tuning_arguments_name_the_fix(tmp_path, capsys, args, message):
    plain = make_tuned_sweep(tmp_path / "plain", seeds=(0, 1), declare=False)
    assert cli_main([str(plain), "--metrics", "fvu", *args]) == 2
    assert message in capsys.readouterr().err


def _results_folder(tmp_path: Path, runs: pd.DataFrame, headline: str = "[fvu]"):
    """(claims, sweeps) of a results folder holding `runs` as its one sweep's committed table,
    with one claim: dn better than l1."""
    folder = tmp_path / "results" / "s_penalty"
    folder.mkdir(parents=True)
    runs.to_csv(folder / "runs.csv", index=False)
    path = tmp_path / "claims.yaml"
    path.write_text(
        "sweeps: [penalty]\n"
        "data_sets:\n"
        f"  - {{key: s, title: synthetic, metrics: {headline}, headline: {headline}}}\n"
        "claims:\n"
        "  - {key: a, statement: x, sweep: penalty, comparisons: [{a: l1, b: dn, expect: b}]}\n"
    )
    claims = cl.load_claims(path)
    return claims, cl.load_sweeps(tmp_path / "results", claims)


def test_a_claim_on_a_tuned_sweep_compares_each_variant_at_its_best(tmp_path):
    """The results page reads a sweep's committed runs table: a claim on a tuned sweep sees
    each variant at its best lr, as the sweep's own report does."""
    runs = load_runs(make_tuned_sweep(tmp_path / "s"))
    write_report(runs, tmp_path / "report", analysis=analyse(runs, metrics=["fvu"]), plots=False)
    committed = pd.read_csv(tmp_path / "report" / "tables" / "runs.csv")
    claims, (sweep,) = _results_folder(tmp_path, committed)
    assert sweep.variants.order == ["l1", "dn"]
    assert sorted(set(zip(sweep.compared["variant"], sweep.compared["train.lr"], strict=True))) \
        == [("dn", 0.01), ("l1", 0.001)]  # fmt: skip
    result = sweep.compare("l1", "dn", "fvu", 0.5, cl.Rules())
    assert {pt.judged.words() for pt in result.points} == {"b better"}
    assert result.points[0].judged.effect.pct() == pytest.approx(100 * (0.9 / 0.95 - 1), abs=0.2)


def test_the_results_page_shows_how_each_verdict_moves_with_tuning(tmp_path):
    """At the shared lr 0.003 l1 wins by 20%; each at its best (l1 0.001, dn 0.01) dn wins by
    5.3%: the page's tuning table gives both, and says the verdict moves."""
    from analysis.results_page import tuning_changes

    runs = load_runs(make_tuned_sweep(tmp_path / "s", criterion={"shared": {"train.lr": 0.003}}))
    claims, sweeps = _results_folder(tmp_path, runs)
    text = tuning_changes(claims, sweeps)
    assert "`train.lr` chosen by fvu at L0 6.4: `l1` 0.001, `dn` 0.01; shared: 0.003." in text
    (row,) = [ln for ln in text.splitlines() if ln.startswith("| (a) |")]
    shared, best, moves = [c.strip() for c in row.split("|")[5:8]]
    assert float(shared.split("%")[0]) == pytest.approx(20.0, abs=0.5)
    assert float(best.split("%")[0]) == pytest.approx(100 * (0.9 / 0.95 - 1), abs=0.3)
    assert shared.endswith(": a better") and best.endswith(": b better")
    assert moves == "yes"
    # Without tuning the page says so.
    untuned = [cl.Sweep(sw.data, sw.kind, sw.folder, sw.runs, sw.variants, None) for sw in sweeps]
    assert tuning_changes(claims, untuned).startswith("No sweep of these tables tunes")


def test_the_results_page_says_whether_another_headline_metric_would_choose_alike(tmp_path):
    """A best by FVU need not be best by MMCS: the page names the variants whose choice the
    data set's other headline metric would change. Here MMCS (higher is better) prefers lr
    0.003 for l1, and agrees with FVU for dn."""
    from analysis.results_page import tuning_changes

    runs = load_runs(make_tuned_sweep(tmp_path / "s", criterion={"shared": {"train.lr": 0.003}}))
    prefers = {("l1", 0.003): 0.95, ("dn", 0.01): 0.97}
    runs["mmcs"] = [prefers.get((v, lr), 0.9) for v, lr in zip(runs["variant"], runs["train.lr"],
                                                                strict=True)]  # fmt: skip
    claims, sweeps = _results_folder(tmp_path, runs, headline="[fvu, mmcs]")
    text = tuning_changes(claims, sweeps)
    assert "By mmcs the choice would differ: `l1` 0.003 (not 0.001)." in text


def test_a_reference_l0_no_run_spans_tunes_nothing_and_says_how_to_fix_it(tmp_path):
    runs = load_runs(make_tuned_sweep(tmp_path / "s", seeds=(0, 1), criterion={"at_l0": 24}))
    a = analyse(runs, metrics=["fvu"])  # the runs span L0 3.6-16: 24 is outside every curve
    assert all(vt.best is None for vt in a.tuning.variants.values())
    assert a.compared.empty and a.metrics["fvu"].pairs == []
    md = write_report(runs, tmp_path / "out", analysis=a, plots=False).report_md.read_text()
    assert "No tuned value of `l1`, `dn` can be read at L0 24" in md
    assert "Fix: a tune_criterion.at_l0 inside the sparse L0 range the runs cover" in md


@pytest.mark.parametrize("aimed_at, chosen", [(4.0, "0.01"), (8.0, "0.001")])
def test_the_criterion_reads_the_grid_and_the_runs_aimed_at_the_reference_l0(tmp_path, aimed_at,
                                                                             chosen):  # fmt: skip
    """Runs aimed at another target (rounds of a value already chosen, which the other values
    never get) do not move the criterion: with them, a sweep would choose differently at its end
    than before those rounds. Aimed at the reference L0 they count like any of its runs."""
    criterion = {"metric": "fvu", "at_l0": 8.0, "seeds": "same", "pilot_seeds": [], "shared": {}}
    root = make_tuned_sweep(tmp_path / "s", criterion=criterion)
    for seed in range(4):  # dn at lr 0.001, right at the reference L0, far better than any lr
        cfg = config(seed=seed, variant="dn", l0_target=aimed_at,
                     tune={"train.lr": list(LRS)}, tune_criterion=criterion,
                     **{"penalty.kind": "decoder_norm", "penalty.coefficient": 1.5,
                        "train.lr": 0.001, "data.d": 64})  # fmt: skip
        write_job(root / f"round{seed}", cfg, summary(cfg, 8.0, 0.01))
    t = analyse(load_runs(root), metrics=["fvu"]).tuning
    assert t.chosen("dn") == chosen and t.chosen("l1") == "0.001"
