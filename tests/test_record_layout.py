"""The record layout has one owner: record/layout.py names every record file."""

import ast
from pathlib import Path

from sae_sweep.record import layout

ROOT = Path(__file__).resolve().parents[1]
NAMES = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)}


def _string_constants(path: Path):
    """(line, value) of the string literals of a module, docstrings and enum members left
    out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    # `saelens = "saelens"` in a class body is an enum member named after its value (a
    # knob's choice), not a file name that happens to match one
    enum_members = {
        id(stmt.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        for stmt in node.body
        if isinstance(stmt, ast.Assign)
        and isinstance(stmt.value, ast.Constant)
        and [getattr(t, "id", None) for t in stmt.targets] == [stmt.value.value]
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings | enum_members
        ):
            yield node.lineno, node.value


def test_record_file_names_are_written_only_in_the_layout_module():
    assert {"config.yaml", "summary.json", "checkpoint", "job.json", "sweep.json"} <= NAMES
    modules = [p for d in ("sae_sweep", "analysis", "bench", "hydra_plugins")
               for p in (ROOT / d).rglob("*.py")]  # fmt: skip
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {value!r}"
        for path in modules
        if path != Path(layout.__file__).resolve()
        for line, value in _string_constants(path)
        if value in NAMES - {".hydra"} or value.rstrip("/") in NAMES - {".hydra"}
    ]
    assert not offenders, "record file names outside record/layout.py:\n" + "\n".join(offenders)


def test_the_analysis_finds_the_jobs_a_sweep_writes_and_skips_their_checkpoints(tmp_path):
    from analysis.load import find_job_dirs

    job = tmp_path / "variant" / "lam1.0_seed0"
    (job / layout.CHECKPOINT_DIR).mkdir(parents=True)
    (job / layout.CONFIG).write_text("seed: 0\n")
    # a checkpoint folder holding something config-like is still not a job
    (job / layout.CHECKPOINT_DIR / layout.CONFIG).write_text("seed: 0\n")
    (tmp_path / layout.PACKS_DIR / "launch").mkdir(parents=True)
    (tmp_path / layout.PACKS_DIR / "launch" / layout.SUMMARY).write_text("{}")
    assert find_job_dirs(tmp_path) == [job]


def test_readers_tolerate_missing_and_damaged_files(tmp_path):
    assert layout.read_summary(tmp_path) is None
    (tmp_path / layout.SUMMARY).write_text('{"status": "do')  # a killed writer's half file
    assert layout.read_summary(tmp_path) is None
    assert layout.checkpoint_step(tmp_path) is None
    (tmp_path / layout.CHECKPOINT_DIR).mkdir()
    (tmp_path / layout.CHECKPOINT_DIR / layout.CHECKPOINT_META).write_text('{"step": 30}')
    assert layout.checkpoint_step(tmp_path) == 30
