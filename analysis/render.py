"""Rendering: a report is a list of blocks, written as Markdown and as HTML (same content);
its tables are also written as CSV.

Blocks: ("h1"|"h2"|"h3"|"p"|"warn", text), ("ul", [items]), ("table", DataFrame),
("img", path, alt). Inline `code` and **bold** are kept in both formats; the HTML embeds
its images, so it is one file to share.

A CSV table's computed floats are rounded to `SIGNIFICANT` digits: more than any report or
the results page prints, and few enough that the last bits of floating-point arithmetic,
which differ between machines and libraries, never reach the file (a rebuild elsewhere
changes nothing).
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.variants import value_key


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, tuple | list):
        return value_key(v)
    return str(v)


def md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(none)_"

    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(str(c)) for c in df.columns) + " |"]
    lines.append("|" + "---|" * len(df.columns))
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(esc(_cell(v)) for v in row) + " |")
    return "\n".join(lines)


SIGNIFICANT = 8
"""Significant digits of the floats in a CSV table (`write_csv`)."""


def rounded(v: Any, digits: int = SIGNIFICANT) -> Any:
    """A finite float rounded to `digits` significant digits; anything else as it is."""
    if isinstance(v, float) and math.isfinite(v):
        return float(f"{v:.{digits}g}")
    return v


def write_csv(df: pd.DataFrame, path: Path, digits: int | None = SIGNIFICANT) -> None:
    """Write a table as CSV, its floats rounded to `digits` significant digits (None: as
    they are, for a table of recorded values rather than computed ones)."""
    if digits is not None:
        df = df.copy()
        for i in range(df.shape[1]):
            values = df.iloc[:, i]
            if values.dtype == object or pd.api.types.is_float_dtype(values):
                df.isetitem(i, values.map(lambda v: rounded(v, digits)))
    df.to_csv(path, index=False)


def _inline_html(text: str) -> str:
    s = html.escape(text)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)


def _html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>(none)</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_inline_html(_cell(v))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0 1em}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.warn{color:#a40000}img{max-width:100%}code{background:#f5f5f5}"""


def render(blocks: list[tuple], out_dir: Path) -> tuple[str, str]:
    """(markdown, html) of a block list. Blocks: ("h1"|"h2"|"h3"|"p"|"warn", text),
    ("ul", [items]), ("table", DataFrame), ("img", path, alt)."""
    md, ht = [], []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            md.append("#" * int(kind[1]) + " " + b[1])
            ht.append(f"<{kind}>{_inline_html(b[1])}</{kind}>")
        elif kind == "p":
            md.append(b[1])
            ht.append(f"<p>{_inline_html(b[1])}</p>")
        elif kind == "warn":
            md.append(f"> **Warning:** {b[1]}")
            ht.append(f'<p class="warn"><strong>Warning:</strong> {_inline_html(b[1])}</p>')
        elif kind == "ul":
            md.append("\n".join(f"- {x}" for x in b[1]) if b[1] else "_(none)_")
            items = "".join(f"<li>{_inline_html(x)}</li>" for x in b[1])
            ht.append(f"<ul>{items}</ul>" if b[1] else "<p><em>(none)</em></p>")
        elif kind == "table":
            md.append(md_table(b[1]))
            ht.append(_html_table(b[1]))
        elif kind == "img":
            path, alt = Path(b[1]), b[2]
            md.append(f"![{alt}]({path.relative_to(out_dir).as_posix()})")
            if path.exists():
                data = base64.b64encode(path.read_bytes()).decode()
                ht.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
            else:  # a report written without its plots
                ht.append(f"<p><em>[{html.escape(alt)}: not drawn]</em></p>")
    title = blocks[0][1] if blocks else "report"
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(ht) + "\n</body></html>\n"
    )
    return "\n\n".join(md) + "\n", page
