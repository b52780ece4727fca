"""docs/results.md: rebuilt from the committed run tables; verdicts say where they flip."""

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rebuild():
    spec = importlib.util.spec_from_file_location("rebuild", ROOT / "docs/results/rebuild.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["rebuild"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("rebuild", None)


def test_the_committed_page_is_what_the_committed_tables_rebuild(rebuild):
    # Every number on the page comes from docs/results/<sweep>/runs.csv: a page edited by
    # hand, or tables changed without a rebuild, fail here.
    assert rebuild.main(["--check", "--page-only"]) == 0


def _sweep(rebuild, fvu_b: dict[float, float], seeds=(0, 1, 2, 3, 4)) -> object:
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
    runs, variants = rebuild.assign_variants(pd.DataFrame(rows))
    return rebuild.Sweep(rebuild.SYNTHETIC, "gated_penalty", Path("x"), runs, variants, None)


def _verdict(rebuild, sweep, expect: str):
    c = rebuild.Comparison(rebuild.named("a_recipe"), rebuild.named("b_recipe"), expect)
    claim = rebuild.Claim("t", "test", "gated_penalty", (c,))
    return rebuild.Verdict(claim, sweep, "fvu", rebuild._compare(sweep, c, "fvu"), expect)


def test_a_verdict_says_where_the_better_variant_changes_with_l0(rebuild):
    v = _verdict(rebuild, _sweep(rebuild, {4: 0.09, 8: 0.09, 16: 0.1, 32: 0.11}), "b")
    assert v.words() == (
        "depends on L0: `b_recipe` better at L0 4, 8; no difference detected at L0 16; "
        "`a_recipe` better at L0 32"
    )
    assert v.answer() == "holds at some L0 only"
    assert v.band() == "4-32"


def test_equal_variants_get_no_difference_detected_and_the_claim_of_equality_holds(rebuild):
    v = _verdict(rebuild, _sweep(rebuild, {4: 0.1, 8: 0.1, 16: 0.1, 32: 0.1}), "equal")
    assert v.words().startswith("no difference detected with 5 seeds (CI ±")
    assert v.answer() == "holds"
    one = _verdict(rebuild, _sweep(rebuild, {4: 0.09, 8: 0.09, 16: 0.09, 32: 0.09}), "a")
    assert one.words() == "`b_recipe` better at every matched L0"
    assert one.answer() == "contradicted"


def test_the_dense_regime_is_never_in_a_verdict(rebuild):
    # L0 32 is d/2 (in); at d = 48, 32 > d/2 is left out of the comparison.
    sweep = _sweep(rebuild, {4: 0.1, 8: 0.1, 16: 0.1, 32: 0.2})
    sweep.runs["data.d"] = 48
    v = _verdict(rebuild, sweep, "b")
    assert v.band() == "4-16"
    assert v.answer() == "not confirmed"


def test_a_relative_panel_of_pairs_with_their_own_references_names_each_pair(rebuild):
    # Claim (d) compares a knob on against off within each penalty: its relative panel draws
    # each pair's b against its own a, labelled by what differs, then what they share.
    assert (
        rebuild._pair_label(
            "gated_original, init off, warm-up on", "gated_original, init on, warm-up on"
        )
        == "init on vs init off\n(gated_original, warm-up on)"
    )
    assert rebuild._pair_label("standard_dn", "gated_dn_trainable_live") == (
        "gated_dn_trainable_live vs standard_dn"
    )
