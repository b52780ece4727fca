"""docs/results.md: rebuilt from the committed run tables; verdicts say where they flip; the
claims are data (docs/results/claims.yaml) and a malformed claim is named."""

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from analysis import claims as cl
from analysis.results_page import (
    ResultsFolder,
    benchmark,
    inputs_table,
    pair_label,
    verdict_table,
)
from analysis.variants import assign_variants

ROOT = Path(__file__).resolve().parents[1]
SYNTH = cl.DataSet("synth", "synthetic", ("fvu",), ("fvu",))


@pytest.fixture(scope="module")
def rebuild():
    spec = importlib.util.spec_from_file_location("rebuild", ROOT / "docs/results/rebuild.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["rebuild"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("rebuild", None)


def test_the_committed_page_is_what_the_committed_tables_rebuild(rebuild):
    # Every number on the page comes from docs/results/<sweep>/runs.csv: a page edited by
    # hand, or tables changed without a rebuild, fail here.
    assert rebuild.main(["--check", "--page-only"]) == 0


def _sweep(fvu_b: dict[float, float], seeds=(0, 1, 2, 3, 4)) -> cl.Sweep:
    """Variants a and b at target L0s 4, 8, 16, 32; a's FVU is 0.1, b's fvu_b[target], with a
    little seed noise that pairing cancels."""
    rows = []
    for target, fb in fvu_b.items():
        for name, fvu in (("a_recipe", 0.1), ("b_recipe", fb)):
            for s in seeds:
                noise = 0.002 * (s - 2)
                rows.append({"variant": name, "seed": s, "status": "done", "l0": target,
                             "fvu": fvu + noise, "lambda_multiplier": 1 / target,
                             "l0_targets": (4, 8, 16, 32), "data.d": 64})  # fmt: skip
    runs, variants = assign_variants(pd.DataFrame(rows))
    return cl.Sweep(SYNTH, "gated_penalty", Path("x"), runs, variants, None)


def _verdict(sweep: cl.Sweep, expect: str) -> cl.Verdict:
    c = cl.Comparison(cl.Selection("a_recipe"), cl.Selection("b_recipe"), expect)
    claim = cl.Claim("t", "test", ("gated_penalty",), (c,))
    return cl.verdict(claim, sweep, c, "fvu")


def test_a_verdict_says_where_the_better_variant_changes_with_l0():
    # b 10% lower at L0 4 and 8, equal at 16, 10% higher at 32: the per-L0 verdicts say so;
    # the summary over the band [3, d/4] = [3, 16] averages 4, 8 and 16 (-7%).
    v = _verdict(_sweep({4: 0.09, 8: 0.09, 16: 0.1, 32: 0.11}), "b")
    assert v.per_l0() == "4: b better; 8: b better; 16: equivalent; 32: a better"
    assert v.words() == "b better" and v.answer() == "holds"
    assert v.difference().startswith(("-6.", "-7."))
    assert v.band() == "3-16 (4, 8, 16)"


def test_equal_variants_are_equivalent_and_the_claim_of_equivalence_holds():
    v = _verdict(_sweep({4: 0.1, 8: 0.1, 16: 0.1, 32: 0.1}), "equivalent")
    assert v.words() == "equivalent within ±5%"
    assert v.answer() == "holds" and v.difference().startswith("+0.00%")
    one = _verdict(_sweep({4: 0.09, 8: 0.09, 16: 0.09, 32: 0.09}), "a")
    assert one.words() == "b better" and one.per_l0().count("b better") == 4
    assert one.answer() == "contradicted"


def test_non_inferiority_holds_within_the_margin_and_not_beyond_it():
    # b 2% worse: no worse than a by more than 5%; 10% worse: a better, the claim fails.
    near = _verdict(_sweep({4: 0.102, 8: 0.102, 16: 0.102}), "no_worse")
    assert near.words() == "b no worse than a by more than 5%" and near.answer() == "holds"
    assert near.margin() == "5%, one-sided"
    far = _verdict(_sweep({4: 0.11, 8: 0.11, 16: 0.11}), "no_worse")
    assert far.words() == "a better" and far.answer() == "does not hold"


def test_the_dense_regime_is_never_in_a_verdict():
    # L0 32 is d/2 (in); at d = 48, 32 > d/2 is left out of the comparison.
    sweep = _sweep({4: 0.1, 8: 0.1, 16: 0.1, 32: 0.2})
    sweep.runs["data.d"] = 48
    v = _verdict(sweep, "b")
    assert v.per_l0() == "4: equivalent; 8: equivalent; 16: equivalent"
    assert v.band() == "3-12 (4, 8)"
    assert v.answer() == "not shown (equivalent)"


def test_a_relative_panel_of_pairs_with_their_own_references_names_each_pair():
    # Claim (d) compares a knob on against off within each penalty: its relative panel draws
    # each pair's b against its own a, labelled by what differs, then what they share.
    assert (
        pair_label("gated_original, init off, warm-up on", "gated_original, init on, warm-up on")
        == "init on vs init off\n(gated_original, warm-up on)"
    )
    assert pair_label("standard_dn", "gated_dn_trainable_live") == (
        "gated_dn_trainable_live vs standard_dn"
    )


def test_the_committed_claims_fill_every_field_of_the_page_and_name_their_switches():
    claims = cl.load_claims(ROOT / "docs/results/claims.yaml")
    template = (ROOT / "docs/results/page.md").read_text()
    for c in claims.claims:
        assert f"{{{{evidence_{c.key}}}}}" in template
    (d,) = [c for c in claims.claims if c.key == "d"]
    first = d.comparisons[0]
    assert first.a.short == "gated_original, init off, warm-up on"
    knobs = {"sae.encoder_init_transpose": False, "penalty.warmup_steps": 100}
    assert first.a.matches("gated_original", knobs)
    assert not first.b.matches("gated_original", knobs)
    assert not first.a.matches("gated_dn_trainable_live", knobs)


def _claims_file(tmp_path, claim: str) -> Path:
    path = tmp_path / "claims.yaml"
    path.write_text(
        "sweeps: [penalty]\n"
        "switches: {init: sae.encoder_init_transpose}\n"
        "data_sets:\n"
        "  - {key: s, title: synthetic, metrics: [fvu, mmcs], headline: [fvu]}\n"
        "claims:\n" + claim
    )
    return path


@pytest.mark.parametrize(
    ("claim", "error"),
    [
        ("  - {key: a, statement: x, sweep: penalty, comparisons: [{a: p, b: q, expect: c}]}\n",
         "expect 'c' is not one of"),
        ("  - {key: a, statement: x, sweep: archs, comparisons: [{a: p, b: q, expect: b}]}\n",
         "sweep 'archs' is not one of ['penalty']"),
        ("  - {key: a, statement: x, sweep: penalty, metrics: [fuv],\n"
         "     comparisons: [{a: p, b: q, expect: b}]}\n",
         "metrics ['fuv'] are not a data set's metrics"),
        ("  - {key: a, statement: x, sweep: penalty,\n"
         "     comparisons: [{a: {variant: p, warmup: on}, b: q, expect: b}]}\n",
         "'warmup' is not a switch"),
        ("  - {key: a, statment: x, sweep: penalty, comparisons: [{a: p, b: q, expect: b}]}\n",
         "unknown keys ['statment']"),
        ("  - {key: a, statement: x, sweep: penalty,\n"
         "     comparisons: [{a: p, b: q, expect: equivalent, margin: 5}]}\n",
         "margin 5: give a relative margin in (0, 1)"),
        ("  - {key: a, statement: x, sweep: penalty, margins: {fvu: 5},\n"
         "     comparisons: [{a: p, b: q, expect: equivalent}]}\n",
         "margin of fvu = 5: give a relative margin in (0, 1)"),
    ],
)  # fmt: skip
def test_a_malformed_claim_is_named_with_what_is_wrong(tmp_path, claim, error):
    with pytest.raises(cl.ClaimsError, match=r"claims\[0\]") as e:
        cl.load_claims(_claims_file(tmp_path, claim))
    assert error in str(e.value)


def test_a_claim_is_tested_on_each_data_set_with_its_own_headline_metrics(tmp_path):
    path = _claims_file(
        tmp_path,
        "  - key: a\n    statement: x\n    sweep: penalty\n    metrics: [headline, mmcs]\n"
        "    comparisons:\n      - {a: a_recipe, b: {variant: b_recipe, init: off}, expect: b}\n",
    )
    (claim,) = cl.load_claims(path).claims
    assert claim.metrics_of(SYNTH) == ["fvu", "mmcs"]
    assert claim.comparisons[0].b == cl.Selection(
        "b_recipe", (("init", "sae.encoder_init_transpose", False),)
    )


def test_a_claim_on_several_sweep_kinds_is_tested_where_its_variants_are(tmp_path):
    """Claim e on [penalty, archs]: the archs sweep has its pair, the penalty sweep does not
    and gives no row; the second data set tests claim b only, so claim e has no row there."""
    path = tmp_path / "claims.yaml"
    path.write_text(
        "sweeps: [penalty, archs]\n"
        "data_sets:\n"
        "  - {key: s, title: synthetic, metrics: [fvu], headline: [fvu]}\n"
        "  - {key: big, title: big, metrics: [fvu], headline: [fvu], claims: [b]}\n"
        "claims:\n"
        "  - {key: e, statement: x, sweep: [penalty, archs],\n"
        "     comparisons: [{a: a_recipe, b: b_recipe, expect: b}]}\n"
        "  - {key: b, statement: y, sweep: penalty,\n"
        "     comparisons: [{a: a_recipe, b: b_recipe, expect: b}]}\n"
    )
    claims = cl.load_claims(path)
    assert claims.claims[0].sweeps == ("penalty", "archs")
    pair = _sweep({4: 0.09, 8: 0.09, 16: 0.09})
    lacking = _sweep({4: 0.09, 8: 0.09, 16: 0.09})
    lacking.runs = lacking.runs[lacking.runs["variant"] == "a_recipe"]
    lacking.variants.order[:] = ["a_recipe"]
    big = cl.DataSet("big", "big", ("fvu",), ("fvu",), claims=("b",))
    sweeps = [
        replace(lacking, kind="penalty", folder=Path("s_penalty")),
        replace(pair, kind="archs", folder=Path("s_archs")),
        replace(pair, data=big, kind="penalty", folder=Path("big_penalty")),
    ]
    vs = cl.verdicts(claims, sweeps)
    assert [(v.claim.key, v.sweep.name) for v in vs] == [
        ("e", "s_archs"), ("b", "s_penalty"), ("b", "big_penalty")]  # fmt: skip
    # A row from a claim's second kind names the kind beside its data set.
    assert "| (e) | synthetic (archs) |" in verdict_table(vs)


def test_the_synthsaebench_section_has_every_variant_at_both_targets_and_each_gated_pair():
    folder = ResultsFolder.load(ROOT / "docs/results")
    text = benchmark(folder)
    assert "At L0 5, mean ± sd over seeds:" in text and "At L0 7, mean ± sd over seeds:" in text
    variants = ("gated_original", "gated_dn_trainable_live", "standard_dn", "topk", "batchtopk",
                "matryoshka_batchtopk", "jumprelu")  # fmt: skip
    for v in variants:
        assert text.count(f"| {v} | 3 |") == 2, v  # a row at each target, 3 seeds
    verdicts = [ln for ln in text.splitlines() if ln.startswith("- **")]
    # 2 gated x 4 modern pairs, at 2 targets, on MCC, F1 and FVU
    assert len(verdicts) == 2 * 4 * 2 * 3
    assert "commit `2883101`" in text

    without = ResultsFolder(folder.root, folder.claims,
                            [s for s in folder.sweeps if s.kind != "benchmark"])  # fmt: skip
    assert benchmark(without) == "No benchmark sweep is among the committed tables."


def test_the_input_files_checksums_are_listed_with_the_sweeps_that_read_them():
    old, new, other = (_sweep({8: 0.09}) for _ in range(3))
    new.runs["inputs.model/model.safetensors"] = "ab" * 32
    new.runs["inputs.dataset/stories.jsonl"] = "cd" * 32
    other.folder = Path("lm_recipe")
    other.runs["inputs.model/model.safetensors"] = "ab" * 32
    assert "do not record" in inputs_table([old])
    table = inputs_table([old, new, other])
    assert f"| `dataset/stories.jsonl` | `{'cd' * 32}` | x |" in table
    assert f"| `model/model.safetensors` | `{'ab' * 32}` | x, lm_recipe |" in table
    other.runs["inputs.model/model.safetensors"] = "ef" * 32  # another model file: its own row
    assert inputs_table([new, other]).count("model/model.safetensors") == 2
