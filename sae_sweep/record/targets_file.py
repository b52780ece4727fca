"""targets.json, read back: what a target-L0 sweep recorded of its chains
(sweep/lifecycle.py writes it; layout.TARGETS names it). Read by the sweep when it resumes
and by the analysis' report, so both read it alike; it imports nothing of either."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SEED_CHAIN = ", seed="
"""How a per-seed chain's label names its seed: "gated_original, seed=0" (planning/chains.py
writes it, `lambda_per_of` reads it)."""


def lambda_per_of(targets_json: Mapping[str, Any]) -> str:
    """How the sweep placed its seeds, "seed" or "variant" (`l0_lambda_per`): as the file
    records, else by seed when its chains are named by seed ("gated_original, seed=0"), else
    by variant (a file made before seeds found their own lambdas)."""
    if targets_json.get("l0_lambda_per"):
        return str(targets_json["l0_lambda_per"])
    chains = targets_json.get("targets") or []
    by_seed = any(SEED_CHAIN in str(t.get("variant", "")) for t in chains if isinstance(t, dict))
    return "seed" if by_seed else "variant"
