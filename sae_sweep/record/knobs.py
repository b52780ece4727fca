"""The summary's `knobs`: a job's resolved config as flat dotted keys (`sae.kind`,
`penalty.coefficient`, ...), the columns the analysis groups runs by."""

from __future__ import annotations

from typing import Any


def flat_knobs(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"a.b": value}; an empty mapping stays one key."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flat_knobs(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
