"""Records read defensively: which fields of a job's summary.json have the wrong type.

sae-sweep writes every summary, but a file edited by hand, half copied, or written by
another version can hold `knobs` as a string or `l0` as text. One such record must not
crash a whole analysis, status or export, nor drop its job without a word: each of them reads
summaries through `read_checked_summary`, which calls a record with any `summary_problems`
(or not JSON at all) unreadable, naming the file and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..evaluation.catalogue import METRICS

MAPPING_FIELDS = ("knobs", "versions")
TEXT_FIELDS = ("status", "error", "traceback", "variant", "sweep")
COUNT_FIELDS = ("steps", "resumed_from_step")
_NONFINITE = {"nan", "inf", "+inf", "-inf", "infinity", "-infinity"}  # how jobs write them


def summary_problems(summary: Any) -> list[str]:
    """What is malformed in a summary (empty: nothing), one phrase per field."""
    if not isinstance(summary, dict):
        return [f"it holds a {type(summary).__name__}, not a JSON object"]
    problems = []
    for key in MAPPING_FIELDS:
        if summary.get(key) is not None and not isinstance(summary[key], dict):
            problems.append(_wrong(key, summary[key], "a mapping"))
    for key in TEXT_FIELDS:
        if summary.get(key) is not None and not isinstance(summary[key], str):
            problems.append(_wrong(key, summary[key], "text"))
    for key in COUNT_FIELDS:
        value = summary.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(_wrong(key, value, "a whole number"))
    for key in METRICS:
        if not _is_metric_value(summary.get(key)):
            problems.append(_wrong(key, summary[key], "a number"))
    return problems


def read_checked_summary(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A summary.json read defensively: (summary, None) when it is readable and well formed,
    (None, what makes it unreadable, naming the file) when not, (None, None) when there is
    none (the job has not finished)."""
    path = Path(path)
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"unreadable {path}: {exc}"
    problems = summary_problems(summary)
    return (None, unreadable_message(path, problems)) if problems else (summary, None)


def unreadable_message(path: Path, problems: list[str]) -> str:
    return f"unreadable {Path(path)}: {'; '.join(problems)}. Fix: correct or delete the field"


def _is_metric_value(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and value.strip().lower() in _NONFINITE


def _wrong(key: str, value: Any, expected: str) -> str:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return f"field `{key}` is {shown} ({type(value).__name__}), not {expected}"
