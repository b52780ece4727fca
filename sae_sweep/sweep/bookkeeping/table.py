"""The end-of-sweep table: one row per job of the launch, done / failed / skipped.

Built from the `job.json` each job leaves in its folder (see task.py), so it works after
any launcher, and also when the launch itself was cut short. Printed, and saved as
`<sweep dir>/jobs.md` (readable) and `<sweep dir>/jobs.json`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ...record import layout
from ...record.atomic import atomic_write_json, atomic_write_text
from ...record.layout import JOB as JOB_FILE
from ...record.layout import TABLE_JSON, TABLE_MD

OUTCOMES = ("done", "failed", "interrupted", "skipped", "conflict", "running")
COLUMNS = ("job", "dir", "outcome", "action", "status", "resumed_from_step", "l0_target", "l0",
           "fvu", "wall_s", "error")  # fmt: skip
TARGETS_FILE = layout.TARGETS  # written by the target-L0 sweeper


def collect(sweep_dir: Path, launch_id: str | None = None) -> list[dict[str, Any]]:
    """The job records under `sweep_dir` (of one launch when `launch_id` is given).

    A record still saying `running` belongs to a job that never finished (killed).
    """
    rows = []
    for path in sorted(Path(sweep_dir).rglob(JOB_FILE)):
        row = layout.read_json(path)
        if row is None:
            continue
        if launch_id is None or row.get("launch_id") == launch_id:
            rows.append(row)
    _add_hit_targets(sweep_dir, rows)
    return sorted(rows, key=lambda r: (r.get("job") is None, r.get("job"), r.get("dir")))


def _add_hit_targets(sweep_dir: Path, rows: list[dict[str, Any]]) -> None:
    """A grid job that hit a target (targets.json) shows that target, like a refinement job."""
    states = (layout.read_json(Path(sweep_dir) / TARGETS_FILE) or {}).get("targets")
    if not isinstance(states, list):
        return
    hit = {d: s["target"] for s in states if s.get("status") == "hit" for d in s.get("dirs", [])}
    for r in rows:
        if r.get("l0_target") is None and r.get("dir") in hit:
            r["l0_target"] = hit[r["dir"]]


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    c = Counter(r.get("outcome") for r in rows)
    return {k: c.get(k, 0) for k in OUTCOMES if c.get(k) or k in ("done", "failed", "skipped")}


def markdown(rows: list[dict[str, Any]], expected: int | None = None) -> str:
    c = counts(rows)
    head = ", ".join(f"{n} {k}" for k, n in c.items())
    if expected is not None and expected > len(rows):
        head += f", {expected - len(rows)} never reported"
    lines = [f"{len(rows)} jobs: {head}", "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]  # fmt: skip
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k), k) for k in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def problems(rows: list[dict[str, Any]], expected: int | None = None) -> list[str]:
    """What keeps the launch from having a result for every job ([] when every job is done).

    A job skipped because it failed in an earlier launch counts: the sweep lacks its result.
    """
    c = Counter(r.get("outcome") for r in rows)
    out = [f"{c[k]} {k}" for k in ("failed", "interrupted", "conflict", "running") if c.get(k)]
    skipped_failed = sum(r.get("outcome") == "skipped" and r.get("status") == "failed"
                         for r in rows)  # fmt: skip
    if skipped_failed:
        out.append(f"{skipped_failed} skipped as failed earlier")
    if expected is not None and expected > len(rows):
        out.append(f"{expected - len(rows)} never reported")
    return out


def write_table(sweep_dir: Path, rows: list[dict[str, Any]], expected: int | None = None) -> str:
    text = markdown(rows, expected)
    atomic_write_text(Path(sweep_dir) / TABLE_MD, text)
    atomic_write_json(Path(sweep_dir) / TABLE_JSON, {"counts": counts(rows), "jobs": rows})
    return text


def _cell(v: Any, key: str) -> str:
    if v is None:
        return ""
    if key == "error":
        v = str(v).splitlines()[0][:100] if str(v) else ""
    elif isinstance(v, float):
        v = f"{v:.4g}"
    return str(v).replace("|", "\\|")
