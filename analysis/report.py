"""The sweep report: report.md and report.html (same content), plots, CSV tables.

Sections: the runs by status; the variants and their knobs; per metric, the Pareto plot, a
verdict per L0 band, pairwise comparisons (with a "not like with like" warning when two
variants differ in more than one knob) and the frontier points; then every failed or
unfinished run, and finished runs that could not be placed on a frontier.
The HTML embeds its plots, so it is one file to share; the Markdown links to plots/.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.compare import PairComparison, band_verdicts, compare_all, pairs_table
from analysis.frontier import METRICS, finished, frontier_points, metrics_present
from analysis.plots import frontier_plot, save_figure
from analysis.variants import LABEL, Variants, assign_variants, frontier_axis, value_key


@dataclass
class MetricAnalysis:
    metric: str
    points: pd.DataFrame
    """`frontier_points` output: seed-aggregated points, with `on_frontier`."""
    comparisons: list[PairComparison]
    bands: pd.DataFrame
    """`band_verdicts` output."""


@dataclass
class Analysis:
    """Everything the report shows, computed from a runs DataFrame."""

    runs: pd.DataFrame
    """The runs, with `variant_label`."""
    variants: Variants
    metrics: dict[str, MetricAnalysis] = field(default_factory=dict)

    @property
    def problems(self) -> pd.DataFrame:
        """Runs that did not finish: failed, running or unfinished."""
        return self.runs[self.runs["status"] != "done"]

    @property
    def unplaced(self) -> pd.DataFrame:
        """Finished runs missing from some frontier: L0 missing, 0 or not finite, or a
        metric that other runs have is missing or not finite (a diverged run).
        Columns: run_id, l0, reason, path."""
        done = self.runs[self.runs["status"] == "done"]
        ok = finished(self.runs).index
        rows = []
        for i, r in done.iterrows():
            if i not in ok:
                reason = f"L0 = {r['l0']}"
            else:
                bad = [m for m in self.metrics if not np.isfinite(float(r.get(m, np.nan)))]
                if not bad:
                    continue
                reason = ", ".join(f"{m} = {r.get(m)}" for m in bad)
            rows.append({"run": r["run_id"], "l0": r["l0"], "reason": reason, "path": r["path"]})
        return pd.DataFrame(rows, columns=["run", "l0", "reason", "path"])


def analyse(runs: pd.DataFrame, metrics: list[str] | None = None, n_bands: int = 3) -> Analysis:
    """Variants, frontiers, comparisons and band verdicts for every metric present."""
    labelled, variants = assign_variants(runs)
    a = Analysis(labelled, variants)
    for m in metrics or metrics_present(labelled):
        pts = frontier_points(labelled, m)
        a.metrics[m] = MetricAnalysis(
            m, pts, compare_all(pts, m, variants), band_verdicts(pts, m, n_bands=n_bands)
        )
    return a


@dataclass
class ReportPaths:
    """Files written by `write_report`."""

    report_md: Path
    report_html: Path
    plots: list[Path] = field(default_factory=list)
    """PNG and SVG per metric."""
    tables: list[Path] = field(default_factory=list)
    """runs.csv, frontier_<metric>.csv, comparisons_<metric>.csv."""
    publish: Any = None
    """`analysis.publish.PublishResult` when published, else None."""
    n_runs: int = 0
    """Runs found (any status)."""

    def __iter__(self):
        yield from [self.report_md, self.report_html, *self.plots, *self.tables]


# ---- rendering: a report is a list of blocks, written as Markdown and as HTML ----


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, tuple | list):
        return value_key(v)
    return str(v)


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(none)_"

    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(str(c)) for c in df.columns) + " |"]
    lines.append("|" + "---|" * len(df.columns))
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(esc(_cell(v)) for v in row) + " |")
    return "\n".join(lines)


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
            md.append(_md_table(b[1]))
            ht.append(_html_table(b[1]))
        elif kind == "img":
            path, alt = Path(b[1]), b[2]
            md.append(f"![{alt}]({path.relative_to(out_dir).as_posix()})")
            data = base64.b64encode(path.read_bytes()).decode()
            ht.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
    title = blocks[0][1] if blocks else "report"
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(ht) + "\n</body></html>\n"
    )
    return "\n\n".join(md) + "\n", page


# ---- content ----


def _first_line(s: Any, n: int = 160) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return ""
    lines = [ln for ln in str(s).strip().splitlines() if ln.strip()]
    line = lines[-1] if lines and lines[0].startswith("Traceback") else (lines[0] if lines else "")
    return line if len(line) <= n else line[: n - 3] + "..."


def variants_table(a: Analysis) -> pd.DataFrame:
    """One row per variant: runs done/total, seeds, lambda points, and its varying knobs."""
    rows = []
    lam = frontier_axis(a.runs)
    for v in a.variants.order:
        r = a.runs[a.runs[LABEL] == v]
        d = r[r["status"] == "done"]
        row = {"variant": v, "done / runs": f"{len(d)}/{len(r)}"}
        row["seeds"] = d["seed"].nunique() if "seed" in d else ""
        row["lambdas"] = d[lam].map(value_key).nunique() if lam else ""
        row |= {k: value_key(x) for k, x in a.variants.settings.get(v, {}).items()}
        rows.append(row)
    return pd.DataFrame(rows)


def problems_table(a: Analysis) -> pd.DataFrame:
    """Failed / running / unfinished runs: what, where, why."""
    p = a.problems
    lam = frontier_axis(a.runs)
    out = pd.DataFrame(
        {
            "run": p["run_id"],
            "status": p["status"],
            "variant": p[LABEL],
            "lambda": p[lam] if lam else "",
            "seed": p.get("seed", ""),
            "last step": p["last_step"].map(lambda s: "" if pd.isna(s) else str(int(s))),
            "error": p["error"].map(_first_line),
            "path": p["path"],
        }
    )
    return out.reset_index(drop=True)


def _frontier_table(ma: MetricAnalysis) -> pd.DataFrame:
    m = ma.metric
    p = ma.points
    return pd.DataFrame(
        {
            "variant": p[LABEL],
            "lambda": p["lam"],
            "seeds": p["n_seeds"],
            "L0": p["l0"],
            "L0 std": p["l0_std"],
            m: p[m],
            f"{m} std": p[f"{m}_std"],
            "on frontier": p["on_frontier"].map({True: "yes", False: ""}),
        }
    )


def _status_line(runs: pd.DataFrame) -> str:
    counts = runs["status"].value_counts()
    parts = [f"{counts.get(s, 0)} {s}" for s in ("done", "failed", "running", "unfinished")]
    parts = [p for p in parts if not p.startswith("0 ")]
    return f"{len(runs)} runs" + (": " + ", ".join(parts) if parts else "")


def primary_metric(a: Analysis) -> str | None:
    """The metric of the headline verdicts: loss recovered on LM data, else FVU."""
    for m in ("loss_recovered", "fvu", "mse", "mmcs", "delta_lm_loss"):
        if m in a.metrics:
            return m
    return next(iter(a.metrics), None)


def write_report(
    runs: pd.DataFrame,
    out_dir: str | Path,
    title: str | None = None,
    manifest: dict[str, Any] | None = None,
    analysis: Analysis | None = None,
) -> ReportPaths:
    """Analyse `runs` and write report.md, report.html, plots/ and tables/ into out_dir."""
    out_dir = Path(out_dir)
    plot_dir, table_dir = out_dir / "plots", out_dir / "tables"
    table_dir.mkdir(parents=True, exist_ok=True)
    a = analysis or analyse(runs)
    paths = ReportPaths(out_dir / "report.md", out_dir / "report.html", n_runs=len(a.runs))

    sweeps = [s for s in dict.fromkeys(a.runs["sweep"].dropna().astype(str))] if len(a.runs) else []
    title = title or "Sweep report: " + (", ".join(sweeps) or "no runs")
    now = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    blocks: list[tuple] = [("h1", title), ("p", f"Generated {now}. {_status_line(a.runs)}.")]
    if manifest:
        info = [
            f"{k}: `{manifest[k]}`" for k in ("git_commit", "started", "ended") if manifest.get(k)
        ]
        if manifest.get("grid"):
            info.append(f"grid: `{manifest['grid']}`")
        blocks.append(("ul", info))

    runs_csv = table_dir / "runs.csv"
    a.runs.to_csv(runs_csv, index=False)
    paths.tables.append(runs_csv)

    if len(a.runs) == 0:
        blocks.append(("p", "No runs were found."))

    # Headline: the primary metric's verdict per L0 band.
    pm = primary_metric(a)
    if pm is not None:
        blocks.append(("h2", f"Verdict per L0 band ({pm})"))
        bands = a.metrics[pm].bands
        blocks.append(("ul", [f"L0 {r.band}: {r.verdict}" for r in bands.itertuples()]))
    elif len(a.runs):
        blocks.append(("p", "No finished run has an L0 and a metric: nothing to compare."))

    blocks.append(("h2", "Variants"))
    blocks.append(
        (
            "p",
            "Variant = every knob that varies except the frontier axis and the seed; here: "
            + (", ".join(f"`{k}`" for k in a.variants.knobs) or "none (one variant)")
            + (
                ". Folded aliases: "
                + ", ".join(f"`{k}` = `{v}`" for k, v in a.variants.aliases.items())
                if a.variants.aliases
                else ""
            )
            + ".",
        )
    )
    blocks.append(("table", variants_table(a)))

    problems = problems_table(a)
    for m, ma in a.metrics.items():
        title_m = METRICS[m].title if m in METRICS else m
        blocks.append(("h2", f"{title_m} vs L0"))
        fig = frontier_plot(a.runs, m, order=a.variants.order, points=ma.points)
        files = save_figure(fig, plot_dir, f"frontier_{m}")
        paths.plots += files
        blocks.append(("img", files[0], f"{m} vs L0 frontier"))
        blocks.append(("h3", "Verdict per L0 band"))
        blocks.append(("table", ma.bands[["band", "covered by", "verdict"]]))
        blocks.append(("h3", "Pairwise comparisons"))
        if ma.comparisons:
            blocks.append(("ul", [c.sentence() for c in ma.comparisons]))
            for c in ma.comparisons:
                if not c.like_with_like:
                    knobs_d = ", ".join(f"`{k}`" for k in c.counted)
                    blocks.append(
                        ("warn", f"not like with like: `{c.a}` and `{c.b}` differ in {knobs_d}.")
                    )
            pt = pairs_table(ma.comparisons)
            blocks.append(("table", pt))
            pt.to_csv(table_dir / f"comparisons_{m}.csv", index=False)
            paths.tables.append(table_dir / f"comparisons_{m}.csv")
        else:
            blocks.append(("p", "Only one variant has finished runs: nothing to compare."))
        blocks.append(("h3", "Frontier points (seed mean and std)"))
        ft = _frontier_table(ma)
        blocks.append(("table", ft))
        ft.to_csv(table_dir / f"frontier_{m}.csv", index=False)
        paths.tables.append(table_dir / f"frontier_{m}.csv")

    blocks.append(("h2", f"Failed and unfinished runs ({len(problems)})"))
    if len(problems):
        blocks.append(("p", "These runs are not in any frontier above."))
    blocks.append(("table", problems))
    unplaced = a.unplaced
    if len(unplaced):
        blocks.append(("h2", f"Finished runs not on any frontier ({len(unplaced)})"))
        blocks.append(("p", "A log-L0 axis cannot show L0 = 0; NaN/inf marks a diverged run."))
        blocks.append(("table", unplaced))
    blocks.append(
        (
            "p",
            "Tables as CSV: "
            + ", ".join(f"`{p.relative_to(out_dir).as_posix()}`" for p in paths.tables)
            + ".",
        )
    )

    md, page = render(blocks, out_dir)
    paths.report_md.write_text(md)
    paths.report_html.write_text(page)
    return paths
