"""Variants: which knobs vary in a sweep, a label per variant, and like-with-like checks.

A variant is one setting of every knob that varies across the loaded runs, except
- the frontier axis (`penalty.coefficient`, `lambda_multiplier`, or `sae.k` for the
  architectures whose L0 it sets, TopK and BatchTopK): it traces the frontier,
  and the per-variant lambda calibration (`lambda_scale`, `lambda_exponent`) that maps the
  multiplier to the coefficient: it is fixed by the variant, never a recipe difference;
- the seed: seeds of one (variant, lambda) point are aggregated; so are knobs that follow
  the seed one-to-one (REPLICATE, e.g. `data.seed=${seed}`: every seed draws its own
  synthetic data), which makes each paired seed a replicate of data and initialisation;
- bookkeeping keys (`logger.*`, names, paths, `device`, logging intervals): they never
  change what is trained;
- knobs of one code version only (`train.tf32`, renamed `train.matmul_dtype`): set to one
  value in the records of some sae-sweep commits and absent from those of others. A sweep
  resumed across an upgrade keeps its variants (its launch policy allows the same).
A knob derived from another (`sae.d_sae` from `sae.expansion_factor` at a fixed input
width, see DERIVED) is folded into it when the two vary one-to-one, so two variants that
differ in expansion factor differ in one knob, not two. Knobs that merely vary together in
one sweep (unit-norm decoder and resampling, switched off together) are not folded: they
are two knobs, and a comparison across them is not like with like.

Labels name the varying knobs' values, leaving out null ones (not applicable to the
variant). If a `variant` column exists (sweeps may name their variants) it is the label, extended by
any varying knob the name does not determine; the differing knobs are still computed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sae_sweep.models import ARCHITECTURES, l0_knobs

CONTROL_AXIS = ("train.l0_target",)
"""A controlled run's point is its target: its seeds each end at a lambda of their own."""
FRONTIER_AXIS = ("penalty.coefficient", "lambda_multiplier", *l0_knobs(), *CONTROL_AXIS)
FRONTIER_ORDER = ("lambda_multiplier", "penalty.coefficient", *l0_knobs(), *CONTROL_AXIS)
"""Which of the frontier-axis columns traces a sweep's frontier, in order of preference."""
LAMBDA_CALIBRATION = ("lambda_scale", "lambda_exponent")
SEED = "seed"
REPLICATE = ("data.seed",)
"""Knobs folded into the seed when each seed has one value of them (and vice versa)."""
VARIANT_NAME = "variant"
LABEL = "variant_label"
CODE_VERSION = ("versions.git_commit", "versions.sae-sweep")
"""Record columns that name the code a run was trained with, most precise first."""

DERIVED = {"sae.d_sae": "sae.expansion_factor"}
"""{knob: the knob it is computed from}."""

_BOOKKEEPING_PREFIXES = ("logger.", "hydra.", "wandb.", "versions.", "tune.", "tune_criterion.")
_BOOKKEEPING_KEYS = {"device", "name", "sweep", "output_dir", "run_dir", "rerun_failed"}
# Target-L0 settings steer where lambda goes, not what is trained; a recipe name labels a bundle.
_BOOKKEEPING_KEYS |= {"l0_targets", "l0_tolerance", "l0_max_rounds", "l0_target", "l0_placement",
                      "recipe"}  # fmt: skip
# The tuning settings steer the sweep and its analysis (a run's tuned value is its own knob).
_BOOKKEEPING_KEYS |= {"tune", "tune_criterion", "tune_criterion.shared"}
# Last dotted component: names, paths, folders, logging/checkpoint intervals.
_BOOKKEEPING_LEAF = re.compile(
    r"^(.*_)?(name|names|path|paths|dir|dirs|root|file|log_every|checkpoint_every|save_every)$"
)


def is_bookkeeping(key: str) -> bool:
    """True for knobs that never change what is trained (logger.*, names, paths, device).

    Everything under `data.` is a knob: a different dataset or model name is different data.
    """
    if key in _BOOKKEEPING_KEYS or key.startswith(_BOOKKEEPING_PREFIXES):
        return True
    if key.startswith("data."):
        return False
    return bool(_BOOKKEEPING_LEAF.match(key.rsplit(".", 1)[-1]))


def value_key(v: Any) -> str:
    """A stable string for grouping: None/NaN -> 'None', floats to 12 significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "None"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.12g}"
    if isinstance(v, tuple | list):
        return "(" + ", ".join(value_key(x) for x in v) + ")"
    return str(v)


def knob_columns(df: pd.DataFrame) -> list[str]:
    """The config knobs among `df`'s columns (from `df.attrs`, else dotted names)."""
    knobs = df.attrs.get("knobs")
    if knobs:
        return [k for k in knobs if k in df.columns]
    top = {SEED, VARIANT_NAME, "lambda_multiplier", "device", "dtype"}
    return [
        c
        for c in df.columns
        if (("." in c and not c.startswith(("versions.", "eval/", "train/"))) or c in top)
    ]


def frontier_axis(df: pd.DataFrame) -> str | None:
    """The column that traces a frontier: the first of `lambda_multiplier`,
    `penalty.coefficient`, `sae.k` that varies (a TopK sweep over `sae.k` has lambda 0),
    else the first present, else None."""
    present = [c for c in FRONTIER_ORDER if c in df.columns and df[c].notna().any()]
    varying = [c for c in present if _keys(df, c).nunique() > 1]
    return (varying or present or [None])[0]


def point_keys(df: pd.DataFrame) -> pd.Series:
    """One key per frontier point: the values of every frontier-axis column together. Runs
    of one variant with the same key are seeds of one point. (A TopK variant's target-L0
    runs share the grid's `lambda_multiplier` and differ in `sae.k`.)"""
    cols = [c for c in FRONTIER_ORDER if c in df.columns and df[c].notna().any()]
    keys = pd.Series("", index=df.index, dtype=object)
    for c in cols:
        keys = keys + "|" + _keys(df, c)
    return keys


def point_axis(df: pd.DataFrame) -> str | None:
    """The frontier-axis column that names the points of one variant's runs: the first whose
    values alone tell its points apart (`sae.k` for TopK with target runs), else
    `frontier_axis`."""
    n = point_keys(df).nunique()
    for c in FRONTIER_ORDER:
        if c in df.columns and df[c].notna().any() and _keys(df, c).nunique() == n > 1:
            return c
    return frontier_axis(df)


def _keys(df: pd.DataFrame, col: str) -> pd.Series:
    return df[col].map(value_key)


def varying_knobs(df: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """(knobs that define variants, {alias knob: the knob it is folded into}).

    Computed over all loaded runs, finished or not, so a variant whose every run failed
    is still a variant.
    """
    candidates = [
        k
        for k in knob_columns(df)
        if k not in FRONTIER_AXIS + LAMBDA_CALIBRATION and k != SEED and not is_bookkeeping(k)
    ]
    candidates.sort(key=lambda k: k != VARIANT_NAME)  # a sweep's own names come first
    keys = {k: _keys(df, k) for k in candidates}
    varying = [
        k
        for k in candidates
        if keys[k].nunique() > 1
        and not (k in REPLICATE and _follows_seed(df, keys[k]))
        and not _one_version_only(df, keys[k])
    ]
    kept: list[str] = []
    aliases: dict[str, str] = {}
    for k in varying:
        src = DERIVED.get(k)
        if src in varying:
            pair = pd.DataFrame({"a": keys[k], "b": keys[src]}).drop_duplicates()
            if pair["a"].is_unique and pair["b"].is_unique:
                aliases[k] = src
                continue
        kept.append(k)
    return kept, aliases


def _one_version_only(df: pd.DataFrame, keys: pd.Series) -> bool:
    """True when a knob has one value where it is set and is absent (null) elsewhere, and no
    code version wrote both kinds of record: a knob added, removed or renamed between two
    versions, not a setting of the sweep. Runs that recorded no version (still running)
    are left out of the check; without any version column it never applies."""
    if keys[keys != "None"].nunique() != 1:
        return False
    for col in CODE_VERSION:
        if col not in df or df[col].nunique() < 2:
            continue  # one version wrote every record (or none says): the null is a setting
        version = df[col].map(value_key)
        known = version != "None"
        with_knob = set(version[known & (keys != "None")])
        without = set(version[known & (keys == "None")])
        return bool(with_knob) and bool(without) and not (with_knob & without)
    return False


def _follows_seed(df: pd.DataFrame, keys: pd.Series) -> bool:
    """True when `keys` and the seed determine each other (one value per seed and back)."""
    if SEED not in df:
        return False
    pair = pd.DataFrame({"k": keys, "s": _keys(df, SEED)}).drop_duplicates()
    return bool(pair["k"].is_unique and pair["s"].is_unique)


def short_names(keys: list[str], among: list[str] | None = None) -> dict[str, str]:
    """Shortest dotted suffix of each key that is unique among `among` (default: `keys`):
    `penalty.kind` (not `kind`, if `sae.kind` is a knob too), `aux_decoder`."""
    among = list(among or keys)
    out = {}
    for k in keys:
        parts = k.split(".")
        for n in range(1, len(parts) + 1):
            cand = ".".join(parts[-n:])
            others = [o for o in among if o != k and (o == cand or o.endswith("." + cand))]
            if not others:
                out[k] = cand
                break
        else:
            out[k] = k
    return out


@dataclass
class Variants:
    """What distinguishes the variants of a set of runs."""

    knobs: list[str]
    """Knobs that vary (aliases folded), `variant` first if the sweep names its variants."""
    aliases: dict[str, str]
    """{derived knob: the varying knob it was folded into}."""
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """{label: {knob: value}} for every knob in `knobs` except `variant`."""
    order: list[str] = field(default_factory=list)
    """Labels in a stable order (first appearance in the runs)."""

    def differing(self, a: str, b: str) -> dict[str, tuple[Any, Any]]:
        """{knob: (value in a, value in b)} for the knobs in which variants a and b differ."""
        sa, sb = self.settings[a], self.settings[b]
        return {
            k: (sa.get(k), sb.get(k))
            for k in self.knobs
            if k != VARIANT_NAME and value_key(sa.get(k)) != value_key(sb.get(k))
        }

    def counted(self, a: str, b: str) -> list[str]:
        """The differing knobs that count against like with like.

        A knob that is null (not applicable) in one variant and set in the other, while
        another knob with values on both sides differs, follows from that other knob
        (`penalty.decoder_norm_grad` is null with `penalty.kind=l1`): it is not counted.
        """
        skip = irrelevant_knobs(self.settings[a].get("sae.kind"))
        skip |= irrelevant_knobs(self.settings[b].get("sae.kind"))
        diff = {k: v for k, v in self.differing(a, b).items() if k not in skip}
        both = [k for k, (va, vb) in diff.items() if value_key(va) != "None" != value_key(vb)]
        return both if both else list(diff)

    def like_with_like(self, a: str, b: str) -> bool:
        """True when a and b differ in at most one knob (see `counted`)."""
        return len(self.counted(a, b)) <= 1


def irrelevant_knobs(kind: Any) -> set[str]:
    """Knobs with no effect on the architecture `kind` (its registry entry): not counted
    against like with like (TopK has no penalty to choose, JumpReLU only l0)."""
    if kind is None or value_key(kind) == "None":
        return set()
    arch = ARCHITECTURES.get(value_key(kind))
    return set(arch.irrelevant_knobs) if arch else set()


def assign_variants(df: pd.DataFrame) -> tuple[pd.DataFrame, Variants]:
    """A copy of `df` with a `variant_label` column, and the `Variants` description."""
    df = df.copy()
    knobs, aliases = varying_knobs(df)
    real = [k for k in knobs if k != VARIANT_NAME]
    short = short_names(real, knob_columns(df))

    def fmt(k: str, v: Any) -> str:
        return f"{short[k]}={value_key(v)}"

    def describe(i: int, keys: list[str]) -> str:
        """Label parts of row i; null (not applicable) knobs are left out."""
        return ", ".join(fmt(k, df[k].iloc[i]) for k in keys if value_key(df[k].iloc[i]) != "None")

    if len(df) == 0:
        df[LABEL] = pd.Series(dtype=object)
        return df, Variants(knobs, aliases)

    if VARIANT_NAME in knobs:
        names = _keys(df, VARIANT_NAME)
        # Knobs the variant name does not determine are added to the label.
        extra = [k for k in real if (_keys(df, k).groupby(names).nunique() > 1).any()]
        labels = []
        for i, name in enumerate(names):
            parts = describe(i, extra)
            labels.append(name + (f" ({parts})" if parts else ""))
    elif real:
        labels = [describe(i, real) or "defaults" for i in range(len(df))]
    else:
        name = None
        if VARIANT_NAME in df.columns and df[VARIANT_NAME].notna().any():
            name = value_key(df[VARIANT_NAME].dropna().iloc[0])
        labels = [name or "all runs"] * len(df)
    df[LABEL] = labels

    v = Variants(knobs, aliases)
    for label, g in df.groupby(LABEL, sort=False):
        v.order.append(label)
        v.settings[label] = {k: g[k].iloc[0] for k in real}
    return df, v
