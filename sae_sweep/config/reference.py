"""The config reference table (README) generated from the schema's field docstrings.

`python -m sae_sweep.config.reference` prints it as Markdown; a test checks that the README
lists every key, so the table cannot drift from the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

from . import schema

# Schema class -> the key prefix it lives under in the composed config.
SECTIONS = {
    "Config": "",
    "SAEConfig": "sae.",
    "PenaltyConfig": "penalty.",
    "TrainConfig": "train.",
    "ResampleConfig": "resample.",
    "LoggerConfig": "logger.",
    "SyntheticDataConfig": "data.",
}


def schema_fields() -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) for every documented field, in schema order."""
    tree = ast.parse(Path(schema.__file__).read_text())
    rows = []
    for node in tree.body:
        if not (isinstance(node, ast.ClassDef) and node.name in SECTIONS):
            continue
        body = node.body
        for i, stmt in enumerate(body):
            if not isinstance(stmt, ast.AnnAssign) or i + 1 >= len(body):
                continue
            doc = body[i + 1]
            if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)):
                continue
            name = stmt.target.id
            default = ast.unparse(stmt.value) if stmt.value is not None else ""
            if default.startswith("field(default_factory=lambda: "):
                default = default.removeprefix("field(default_factory=lambda: ").removesuffix(")")
            if default.startswith(("SAEKind.", "LoggerMode.", "DType.", "SparsePath.")):
                default = default.split(".", 1)[1]
            default = {"field(default_factory=list)": "[]", "field(default_factory=dict)": "{}"}.get(
                default, default
            ).replace("MISSING", "(required)")
            text = " ".join(doc.value.value.split())
            rows.append((SECTIONS[node.name] + name, ast.unparse(stmt.annotation), default, text))
    return rows


def markdown_table() -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, typ, default, doc in schema_fields():
        cells = (f"`{key}`", f"`{typ}`", f"`{default}`", doc)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
