"""The config reference tables (docs/configuration.md) generated from the schema's field docstrings.

It covers the schema (config/) and each registered architecture's own keys (models/), so it
sits above both. `python -m sae_sweep.config_reference` prints them as Markdown, `... --update
docs/configuration.md` rewrites the page's tables in place, between the config-table markers; a
test checks that the page's tables are current, so they cannot drift from the code.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from .config import schema
from .models import ARCHITECTURES

# Schema class -> the key prefix it lives under in the composed config.
SECTIONS = {
    "Config": "",
    "SAEConfig": "sae.",
    "PenaltyConfig": "penalty.",
    "TrainConfig": "train.",
    "ResampleConfig": "resample.",
    "LoggerConfig": "logger.",
    "TuneCriterion": "tune_criterion.",
    "LaunchConfig": "",
}
# The data sources share the `data.` prefix: one table each.
DATA_SECTIONS = {
    "SyntheticDataConfig": "data=synthetic",
    "HFDataConfig": "data=hf",
    "ActivationsDataConfig": "data=activations",
    "SynthSAEBenchDataConfig": "data=synthsaebench",
}


_ENUMS = ("LoggerMode.", "DType.", "SparsePath.", "AuxDecoder.", "AuxKWeighting.")
_FACTORIES = {"field(default_factory=list)": "[]", "field(default_factory=dict)": "{}"}


def schema_fields(sections: dict[str, str], source=None) -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) for every documented field of the classes in `sections`
    (class name -> key prefix) of the file `source` (default: schema.py), in schema order."""
    tree = ast.parse(Path(source or schema.__file__).read_text())
    rows = []
    for node in tree.body:
        if not (isinstance(node, ast.ClassDef) and node.name in sections):
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
            if default.startswith(_ENUMS):
                default = default.split(".", 1)[1]
            default = _FACTORIES.get(default, default).replace("MISSING", "(required)")
            text = " ".join(doc.value.value.split())
            rows.append((sections[node.name] + name, ast.unparse(stmt.annotation), default, text))
    return rows


def _table(rows) -> list[str]:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, typ, default, doc in rows:
        cells = (f"`{key}`", f"`{typ}`", f"`{default}`", doc)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def markdown_table() -> str:
    """The main table, then one table per architecture's own knobs and per data source."""
    lines = _table(schema_fields(SECTIONS))
    for name, arch in ARCHITECTURES.items():
        rows = schema_fields({arch.config.__name__: "sae."}, inspect.getsourcefile(arch.config))
        if rows:
            title = f"Architecture `sae={name}` (its own keys, and defaults it changes"
            parent = [n for n, a in ARCHITECTURES.items() if a.config is arch.config.__base__]
            title += f"; also every key of `sae={parent[0]}`):" if parent else "):"
            lines += ["", title, "", *_table(rows)]
    for cls, title in DATA_SECTIONS.items():
        lines += ["", f"Data source `{title}`:", "", *_table(schema_fields({cls: "data."}))]
    return "\n".join(lines)


START, END = "<!-- config-table:start -->\n", "<!-- config-table:end -->"


def update_page(path: Path) -> None:
    text = path.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(head + START + markdown_table() + "\n" + END + tail)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Print the config reference tables.")
    parser.add_argument(
        "--update", metavar="PAGE", type=Path,
        help="rewrite the tables between PAGE's config-table markers (docs/configuration.md)",
    )  # fmt: skip
    page = parser.parse_args().update
    if page:
        update_page(page)
    else:
        print(markdown_table())
