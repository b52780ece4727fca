"""Pareto plots. Functions take DataFrames and return matplotlib Figures.

Figures are built with `matplotlib.figure.Figure` (Agg canvas), never through pyplot's
global state, so nothing is shown and nothing leaks between calls.

In a frontier plot each variant has one colour and one marker, the same in every plot of a
report (Okabe-Ito colours: safe for colour-blind readers); its frontier (seed means, with
seed-std error bars) is the one labelled line of the variant, and every run is a faint
point of the same colour and marker (unlabelled, so it stays out of the legend). FVU, MSE
and delta LM loss (the catalogue's `log_scale` metrics) are drawn on a log axis, so one
much worse variant does not flatten the others. The dense regime (L0 > max_l0_fraction x d,
never in a verdict) is shaded; on synthetic data the true mean number of active features is
marked, and MMCS has its chance level (`mmcs_random`). A relative plot divides each variant
by a reference variant at matched L0, with the paired 95% CI as a band, so that a 2%
difference is visible.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis.frontier import finished, frontier_of, frontier_points
from analysis.matched import MAX_L0_FRACTION, run_dims
from analysis.variants import LABEL
from sae_sweep.evaluation.catalogue import METRICS, higher_is_better
from sae_sweep.evaluation.catalogue import title as title_of

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
GUIDE = "guide"
"""gid of reference lines (chance level, true L0, ratio 1): labelled, but not a variant."""
FIGSIZE = (5.0, 3.6)
"""Inches: readable at a paper's column width (fonts at 8-9 pt)."""


def variant_styles(labels: list[str]) -> dict[str, dict[str, str]]:
    """{label: {"color", "marker"}}: one colour and one marker per variant, stable by order."""
    import matplotlib as mpl

    out = {}
    for i, label in enumerate(labels):
        if len(labels) <= len(OKABE_ITO):
            c = OKABE_ITO[i]
        else:  # many variants: spread them over a continuous map
            c = mpl.colormaps["turbo"](i / (len(labels) - 1))
        out[label] = {"color": mpl.colors.to_hex(c), "marker": MARKERS[i % len(MARKERS)]}
    return out


def _new_figure(figsize=FIGSIZE) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def frontier_plot(
    runs: pd.DataFrame,
    metric: str,
    order: list[str] | None = None,
    points: pd.DataFrame | None = None,
    title: str | None = None,
    max_l0_fraction: float = MAX_L0_FRACTION,
) -> Figure:
    """(L0, metric) frontiers of every variant on a log-L0 axis (for a metric without a
    frontier, such as MMCS, every seed-mean point: see `analysis.frontier`).

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

    columns = _legend_columns(labels)
    fig = _new_figure(_figsize(labels, columns, guides=2))  # true L0, chance level
    ax = fig.add_subplot()
    for v in labels:
        st = styles[v]
        r = done[done[LABEL] == v]
        ax.scatter(
            r["l0"],
            r[metric],
            s=14,
            alpha=0.25,
            color=st["color"],
            marker=st["marker"],
            linewidths=0,
            label=f"_runs: {v}",
        )
        f = frontier_of(points, v)
        yerr = f[f"{metric}_std"].to_numpy(dtype=float)
        if np.isfinite(yerr).any():
            ax.errorbar(
                f["l0"],
                f[metric],
                yerr=np.nan_to_num(yerr),
                fmt="none",
                ecolor=st["color"],
                alpha=0.6,
                capsize=2,
                label=f"_spread: {v}",
            )
        ax.plot(
            f["l0"],
            f[metric],
            color=st["color"],
            marker=st["marker"],
            markersize=5,
            linewidth=1.6,
            label=v,
        )
    _log_l0_axis(ax)
    y = pd.to_numeric(done[metric], errors="coerce") if metric in done else pd.Series(dtype=float)
    m = METRICS.get(metric)
    if m is not None and m.log_scale and len(y) and (y > 0).all():
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_two_and_five))
    _mark_regimes(ax, runs, metric, max_l0_fraction)
    ax.set_ylabel(title_of(metric), fontsize=8)
    better = "upper-left" if higher_is_better(metric) else "lower-left"
    curve = "frontier" if (m is None or m.frontier) else "seed means"
    ax.set_title(title or f"{metric} vs L0 {curve} ({better} is better)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.tick_params(which="both", labelsize=7)
    if labels:
        _legend(fig, ax, columns, title="variant", title_fontsize=7)
    else:
        ax.text(0.5, 0.5, "no finished runs with this metric", ha="center", transform=ax.transAxes)
    return fig


def relative_plot(
    relative: pd.DataFrame,
    metric: str,
    reference: str,
    order: list[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Each variant's metric divided by the reference's at matched L0, with the paired
    95% CI of the per-seed ratios as a band (relative: `analysis.matched.relative_to`).

    order: every variant label, the reference included, so colours match the frontier plots.
    """
    labels = list(dict.fromkeys(relative["variant"])) if len(relative) else []
    styles = variant_styles(order or [reference, *labels])
    columns = _legend_columns(labels)
    fig = _new_figure(_figsize(labels, columns, guides=1))
    ax = fig.add_subplot()
    ax.axhline(
        1.0,
        color=styles.get(reference, {}).get("color", "grey"),
        linewidth=1.2,
        label=f"{reference} (reference)",
        gid=GUIDE,
    )
    for v in labels:
        st = styles[v]
        r = relative[relative["variant"] == v].sort_values("l0")
        ax.plot(
            r["l0"],
            r["ratio"],
            color=st["color"],
            marker=st["marker"],
            markersize=4,
            linewidth=1.4,
            label=v,
        )
        lo, hi = r["ci_lo"].to_numpy(float), r["ci_hi"].to_numpy(float)
        if np.isfinite(lo).any():
            ax.fill_between(
                r["l0"], lo, hi, color=st["color"], alpha=0.18, linewidth=0, label=f"_ci: {v}"
            )
    _log_l0_axis(ax)
    ticks = sorted(set(relative["l0"].astype(float).round(6)))
    # Label the matched L0s themselves (often less than a decade apart), unless two are so
    # close that their labels would overlap (pairs matched at different interpolated L0s).
    if ticks and all(b / a > 1.25 for a, b in zip(ticks[:-1], ticks[1:], strict=True)):
        ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    elif ticks and ticks[-1] / ticks[0] < 10:  # less than a decade: label every integer
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    better = "above 1" if higher_is_better(metric) else "below 1"
    ax.set_ylabel(f"{metric} / {metric} of {reference}\n(band: 95% paired CI)", fontsize=8)
    ax.set_title(
        title or f"{metric} relative to {reference}\nat matched L0 ({better} is better)",
        fontsize=8,
    )
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.grid(True, which="both", alpha=0.3)
    ax.tick_params(which="both", labelsize=7)
    if labels:
        _legend(fig, ax, columns)
    else:
        ax.text(0.5, 0.5, "no matched L0 to compare at", ha="center", transform=ax.transAxes)
    return fig


def _legend_columns(labels: list[str]) -> int:
    """0: the legend fits inside the axes. Else many, long or two-line labels go below the
    axes, where they cover no curve, in 2 columns (1 for labels too long to share a row)."""
    widest = max((len(line) for v in labels for line in v.split("\n")), default=0)
    if len(labels) <= 4 and widest <= 40 and not any("\n" in v for v in labels):
        return 0
    return 1 if widest > 40 else 2


def _figsize(labels: list[str], columns: int, guides: int = 0) -> tuple[float, float]:
    """Room below the axes for a legend of `columns` columns (the guides: extra entries)."""
    if not columns:
        return FIGSIZE
    lines = [1 + v.count("\n") for v in labels] + [1] * guides
    rows = sum(lines) if columns == 1 else max(sum(lines[0::2]), sum(lines[1::2]))
    return (FIGSIZE[0], FIGSIZE[1] + 0.45 + 0.16 * rows)


def _legend(fig: Figure, ax, columns: int, **kw) -> None:
    if columns:
        fig.legend(fontsize=7, loc="outside lower center", ncols=columns, **kw)
    else:
        ax.legend(fontsize=7, loc="best", **kw)


def _log_l0_axis(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(_two_and_five))
    ax.set_xlabel("L0 (active features per token, log scale)", fontsize=8)


def _mark_regimes(ax, runs: pd.DataFrame, metric: str, max_l0_fraction: float) -> None:
    """Shade the dense regime, mark the true L0 (synthetic data) and MMCS's chance level."""
    d = run_dims(runs).dropna().unique() if len(runs) else []
    if len(d) == 1:
        limit = max_l0_fraction * float(d[0])
        lo, hi = ax.get_xlim()
        if hi > limit:
            ax.axvspan(
                limit,
                hi,
                color="grey",
                alpha=0.12,
                linewidth=0,
                label=f"_dense regime (L0 > {max_l0_fraction:g} d)",
            )
            ax.text(
                limit,
                0.98,
                f" dense: L0 > {max_l0_fraction:g}d",
                transform=ax.get_xaxis_transform(),
                fontsize=7,
                va="top",
                color="dimgrey",
            )
        ax.set_xlim(lo, hi)
    if "data.mean_active" in runs and (runs.get("data.kind") == "synthetic").any():
        true_l0 = pd.to_numeric(runs["data.mean_active"], errors="coerce").dropna().unique()
        if len(true_l0) == 1:
            ax.axvline(
                float(true_l0[0]),
                color="black",
                linestyle=":",
                linewidth=1,
                label=f"true mean active features ({true_l0[0]:g})",
                gid=GUIDE,
            )
    if metric == "mmcs" and "mmcs_random" in runs:
        chance = pd.to_numeric(runs["mmcs_random"], errors="coerce").dropna()
        if len(chance):
            ax.axhline(
                float(chance.mean()),
                color="grey",
                linestyle="--",
                linewidth=1,
                label=f"chance (random dictionary, {chance.mean():.2f})",
                gid=GUIDE,
            )


def series_labels(fig: Figure) -> list[str]:
    """Labels of the labelled lines of a figure's first axes (one per variant)."""
    ax = fig.axes[0]
    return [
        ln.get_label()
        for ln in ax.get_lines()
        if not ln.get_label().startswith("_") and ln.get_gid() != GUIDE
    ]


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
