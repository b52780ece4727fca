"""Which code made each run, and the report's warning when the compared runs do not share it.

A record's `versions` (sae_sweep/record/versions.py) holds `git_commit`, the commit of the
checkout the run was made from with `+dirty` when its tree had uncommitted changes, and
(records since `git_clean` was added) `git_clean`; both null for a run from an installed
package, named by its `sae-sweep` version instead. The runs table carries them as
`git_commit` (the bare commit) and `git_clean` (True, False, or None when unknown);
`provenance` derives both from `versions.git_commit` for tables written before they were
columns (the committed docs/results/*/runs.csv).

A comparison of runs made by different code, or by code no commit holds, may measure the
change of code as much as the change of recipe: `provenance_warnings` says so, with how many
runs of which variants, at the top of the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from sae_sweep.record.versions import DIRTY

SHORT = 9
"""Characters of a commit shown in a warning."""


def _known(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v) != ""


def commit_and_clean(versions: Mapping[str, Any]) -> tuple[str | None, bool | None]:
    """(commit, clean) from a record's `versions`: `git_clean` when recorded, else whether
    the commit has no `+dirty` suffix; (None, None) when no commit is known."""
    label = versions.get("git_commit")
    if not _known(label):
        return None, None
    label = str(label)
    commit = label.removesuffix(DIRTY)
    clean = versions.get("git_clean")
    if isinstance(clean, str):
        clean = {"true": True, "false": False}.get(clean.strip().lower())
    if isinstance(clean, bool | np.bool_):
        return commit, bool(clean)
    return commit, not label.endswith(DIRTY)


def provenance(runs: pd.DataFrame) -> pd.DataFrame:
    """(git_commit, git_clean, code) per run: the columns where the table has them, else
    derived from `versions.git_commit`; `code` names the code version (the commit, else
    `sae-sweep <version>`, else None)."""
    rows = []
    for _, r in runs.iterrows():
        commit, clean = r.get("git_commit"), r.get("git_clean")
        if not _known(commit):
            versions = {
                "git_commit": r.get("versions.git_commit"),
                "git_clean": r.get("versions.git_clean"),
            }
            commit, clean = commit_and_clean(versions)
        else:
            commit, clean = commit_and_clean({"git_commit": commit, "git_clean": clean})
        package = r.get("versions.sae-sweep")
        code = commit if commit else (f"sae-sweep {package}" if _known(package) else None)
        rows.append({"git_commit": commit, "git_clean": clean, "code": code})
    return pd.DataFrame(rows, index=runs.index, columns=["git_commit", "git_clean", "code"])


def provenance_warnings(runs: pd.DataFrame, label: str = "variant_label") -> list[str]:
    """Warning lines for the finished runs (those a comparison uses): one when they come
    from more than one code version, one when any was made from an uncommitted tree; each
    names how many runs of which variants. Empty when every run names one clean commit (or
    no run names its code, as in records older than the versions)."""
    done = runs[runs["status"] == "done"] if "status" in runs else runs
    if done.empty:
        return []
    prov = provenance(done)
    variants = done[label] if label in done else done.get("variant", pd.Series("", done.index))
    variants = variants.fillna("").astype(str)
    lines = []
    codes = prov["code"].dropna()
    if codes.nunique() > 1:
        parts = [
            f"{_short(code)} ({_per_variant(variants[codes.index[codes == code]])})"
            for code in dict.fromkeys(codes)
        ]
        lines.append(
            f"Provenance: the compared runs come from {codes.nunique()} code versions, so a "
            f"difference may be the code's, not the recipe's: {'; '.join(parts)}."
        )
    unclean = prov["git_clean"] == False  # noqa: E712 -- None (unknown) is not unclean
    if unclean.any():
        lines.append(
            f"Provenance: {int(unclean.sum())} of {len(done)} finished runs were made from a "
            f"tree with uncommitted changes, whose code no commit holds: "
            f"{_per_variant(variants[unclean])}. Rerun from a committed tree "
            "(`require_clean_tree=true` refuses to start otherwise)."
        )
    return lines


def _short(code: str) -> str:
    return code if code.startswith("sae-sweep ") else f"commit {code[:SHORT]}"


def _per_variant(variants: pd.Series) -> str:
    """'12 runs of a, 3 of b' ('1 run of a, ...'), variants in order of appearance."""
    counts = variants.value_counts().reindex(list(dict.fromkeys(variants)))
    parts = [f"{n} of {v or 'unnamed'}" for v, n in counts.items()]
    parts[0] = parts[0].replace(" of ", " run of " if counts.iloc[0] == 1 else " runs of ", 1)
    return ", ".join(parts)
