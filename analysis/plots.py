"""Pareto plots. Functions take DataFrames and return matplotlib Figures.

Figures are built with `matplotlib.figure.Figure` (Agg canvas), never through pyplot's
global state, so nothing is shown and nothing leaks between calls.

In a frontier plot each variant has one colour and one marker; its frontier (seed means,
with seed-std error bars) is the one labelled line of the variant, and every run is a faint
point of the same colour and marker (unlabelled, so it stays out of the legend).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis.frontier import METRICS, finished, frontier_of, frontier_points
from analysis.variants import LABEL

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]


def variant_styles(labels: list[str]) -> dict[str, dict[str, str]]:
    """{label: {"color", "marker"}}: one colour and one marker per variant, stable by order."""
    import matplotlib as mpl

    out = {}
    for i, label in enumerate(labels):
        if len(labels) <= 10:
            c = mpl.colormaps["tab10"](i)
        else:  # many variants: spread them over a continuous map
            c = mpl.colormaps["turbo"](i / (len(labels) - 1))
        out[label] = {"color": mpl.colors.to_hex(c), "marker": MARKERS[i % len(MARKERS)]}
    return out


def _new_figure(figsize=(7.0, 4.8)) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def frontier_plot(
    runs: pd.DataFrame,
    metric: str,
    order: list[str] | None = None,
    points: pd.DataFrame | None = None,
    title: str | None = None,
) -> Figure:
    """(L0, metric) frontiers of every variant on a log-L0 axis.

    runs: the runs DataFrame with a `variant_label` column (`assign_variants`).
    order: variant labels in legend order (default: order of appearance).
    points: `frontier_points(runs, metric)` if already computed.
    The figure has one labelled line per variant that has finished runs with the metric;
    its label is the variant label.
    """
    if points is None:
        points = frontier_points(runs, metric)
    done = finished(runs)
    done = done[done[metric].notna()] if metric in done else done.iloc[:0]
    labels = [v for v in (order or list(dict.fromkeys(runs[LABEL]))) if v in set(points[LABEL])]
    styles = variant_styles(order or labels)

    fig = _new_figure()
    ax = fig.add_subplot()
    for v in labels:
        st = styles[v]
        r = done[done[LABEL] == v]
        ax.scatter(
            r["l0"], r[metric], s=14, alpha=0.25, color=st["color"], marker=st["marker"],
            linewidths=0, label=f"_runs: {v}",
        )  # fmt: skip
        f = frontier_of(points, v)
        yerr = f[f"{metric}_std"].to_numpy(dtype=float)
        if np.isfinite(yerr).any():
            ax.errorbar(
                f["l0"], f[metric], yerr=np.nan_to_num(yerr), fmt="none",
                ecolor=st["color"], alpha=0.6, capsize=2, label=f"_spread: {v}",
            )  # fmt: skip
        ax.plot(
            f["l0"], f[metric], color=st["color"], marker=st["marker"], markersize=5,
            linewidth=1.6, label=v,
        )  # fmt: skip
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(_two_and_five))
    ax.set_xlabel("L0 (active features per token, log scale)")
    m = METRICS.get(metric)
    ax.set_ylabel(m.title if m else metric)
    better = "upper-left" if (m and m.higher_is_better) else "lower-left"
    ax.set_title(title or f"{metric} vs L0 frontier ({better} is better)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if labels:
        ax.legend(fontsize=7, loc="best", title="variant", title_fontsize=7)
    else:
        ax.text(0.5, 0.5, "no finished runs with this metric", ha="center",
                transform=ax.transAxes)  # fmt: skip
    return fig


def series_labels(fig: Figure) -> list[str]:
    """Labels of the labelled lines of a figure's first axes (one per variant)."""
    ax = fig.axes[0]
    return [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")]


def save_figure(fig: Figure, out_dir: str | Path, stem: str) -> list[Path]:
    """Write `stem.png` and `stem.svg` into out_dir; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        p = out_dir / f"{stem}.{ext}"
        fig.savefig(p, dpi=150)
        paths.append(p)
    return paths


def _two_and_five(value: float, _pos) -> str:
    """Label the minor log ticks at 2x and 5x each power of ten only: readable over decades."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if round(mantissa) in (2, 5) else ""
