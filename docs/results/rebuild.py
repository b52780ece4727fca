"""Rebuild docs/results.md, and every report, table and plot under docs/results/, from the
committed run tables (docs/results/<sweep>/runs.csv and targets.json) alone.

    python docs/results/rebuild.py              # rewrite the page, reports, tables and plots
    python docs/results/rebuild.py --check      # exit 1 if the page or a report would change
    python docs/results/rebuild.py --no-plots   # text only (faster)

The page is docs/results/page.md with its `{{...}}` fields filled in: the verdict table,
the scale of each sweep, and per claim the paired comparisons and plots. Every number on
the page comes from here; the words around them are in page.md.

A claim is a list of comparisons `b` against `a` at matched L0 (the target L0s of the sweep,
or interpolated L0s for a sweep without targets), seed-paired, with a 95% CI
(`analysis.matched.compare_matched`); what the claim expects decides whether it holds.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import itertools
import json
import math
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository, when run as a script

from analysis import render  # noqa: E402
from analysis.effects import fmt  # noqa: E402
from analysis.effects import higher_is_better as hib  # noqa: E402
from analysis.frontier import METRICS, finished  # noqa: E402
from analysis.matched import (  # noqa: E402
    MAX_L0_FRACTION,
    PairResult,
    compare_matched,
    relative_to,
    sweep_targets,
)
from analysis.model import Analysis, analyse  # noqa: E402
from analysis.paired import PairedDiff, winner  # noqa: E402
from analysis.plots import frontier_plot, relative_plot  # noqa: E402
from analysis.report import write_report  # noqa: E402
from analysis.variants import LABEL, Variants, assign_variants  # noqa: E402

PAGE = HERE.parent / "results.md"
TEMPLATE = HERE / "page.md"
STAMP = "rebuilt by docs/results/rebuild.py from the committed run tables"

# ---------------------------------------------------------------------------------------------
# What is compared


@dataclass(frozen=True)
class DataSet:
    key: str
    title: str
    metrics: tuple[str, ...]
    """Compared metrics, in the order the evidence shows them."""
    headline: tuple[str, ...]
    """The verdict table's metrics. On synthetic data both reconstruction (FVU) and recovery
    of the true features (MMCS): the two can rank recipes oppositely."""


SYNTHETIC = DataSet(
    "synth",
    "synthetic",
    ("fvu", "mmcs", "shrinkage_gap", "dead_fraction", "dense_fraction"),
    ("fvu", "mmcs"),
)
TINYSTORIES = DataSet(
    "lm",
    "TinyStories-260k",
    ("delta_lm_loss", "loss_recovered_mean", "kl_div", "fvu", "shrinkage_gap", "dead_fraction"),
    ("delta_lm_loss",),
)
DATA_SETS = (SYNTHETIC, TINYSTORIES)
SWEEP_KINDS = ("gated_penalty", "architectures", "recipe")
"""docs/results/<data set key>_<kind>/ holds one sweep's runs.csv."""

EXTRA_METRICS = {"shrinkage_gap": "|1 - shrinkage gamma| (0 = no shrinkage)"}
"""Metrics derived here from the run tables (lower is better)."""


Select = Callable[[str, dict], bool]
"""(variant name, its varying knobs' values) -> True for the variant meant."""


def named(name: str, init: bool | None = None, warmup: bool | None = None) -> Select:
    """The variant `name`; in the recipe sweep also encoder-transpose init and lambda warm-up
    on (True) or off (False)."""

    def select(variant: str, knobs: dict) -> bool:
        if variant != name:
            return False
        if init is not None and _on(knobs.get("sae.encoder_init_transpose")) != init:
            return False
        return warmup is None or _on(knobs.get("penalty.warmup_steps")) == warmup

    select.__doc__ = name + "".join(
        f", {k} {'on' if v else 'off'}" for k, v in (("init", init), ("warm-up", warmup)) if v
        is not None
    )  # fmt: skip
    return select


def _on(v) -> bool | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        return v.lower() not in ("false", "0", "none")
    return bool(v)


@dataclass(frozen=True)
class Comparison:
    a: Select
    b: Select
    expect: str
    """'b' (b better), 'a' (a better), 'equal', or 'context' (no expectation)."""


@dataclass(frozen=True)
class Claim:
    key: str
    short: str
    kind: str
    """The sweep kind it is tested on (SWEEP_KINDS)."""
    comparisons: tuple[Comparison, ...]
    metrics: tuple[str, ...] | None = None
    """The verdict table's metrics; "<headline>" stands for each data set's (the default)."""


MIXED, FIX_A, FIX_B = "gated_dn_frozen_live", "gated_dn_trainable_live", "gated_dn_frozen_detached"
ORIGINAL = "gated_original"
CLAIMS = (
    Claim(
        "a",
        "with decoder_norm, the mixed case is worse than both fixes",
        "gated_penalty",
        (
            Comparison(named(MIXED), named(FIX_A), "b"),
            Comparison(named(MIXED), named(FIX_B), "b"),
        ),
    ),
    Claim(
        "b",
        "the two fixes are about equal",
        "gated_penalty",
        (Comparison(named(FIX_A), named(FIX_B), "equal"),),
    ),
    Claim(
        "c",
        "decoder_norm is a marginal loss against the original recipe, like with like",
        "gated_penalty",
        (
            Comparison(named(ORIGINAL), named(FIX_A), "a"),
            Comparison(named(ORIGINAL), named(FIX_B), "a"),
        ),
    ),
    Claim(
        "d",
        "encoder-transpose init and lambda warm-up help, under both penalties",
        "recipe",
        tuple(
            Comparison(named(v, init=False, warmup=True), named(v, init=True, warmup=True), "b")
            for v in (ORIGINAL, FIX_A)
        )
        + tuple(
            Comparison(named(v, init=True, warmup=False), named(v, init=True, warmup=True), "b")
            for v in (ORIGINAL, FIX_A)
        ),
    ),
    Claim(
        "e",
        "the gated SAE beats the standard SAE at matched L0, with shrinkage closer to none",
        "architectures",
        (
            Comparison(named("standard_original"), named(ORIGINAL), "b"),
            Comparison(named("standard_dn"), named(FIX_A), "b"),
        ),
        metrics=("<headline>", "shrinkage_gap"),
    ),
    Claim(
        "modern",
        "context: the best gated recipes against TopK, BatchTopK and JumpReLU",
        "architectures",
        tuple(
            Comparison(named(g), named(m), "context")
            for g in (ORIGINAL, FIX_A)
            for m in ("topk", "batchtopk", "jumprelu")
        ),
    ),
)

# ---------------------------------------------------------------------------------------------
# Loading


def read_runs(folder: Path) -> pd.DataFrame:
    """A sweep's committed runs table, with tuples and lists restored from their text."""
    raw = pd.read_csv(folder / "runs.csv", low_memory=False)
    # one frame built at once: assigning column after column fragments it (pandas warns)
    runs = pd.DataFrame(
        {
            c: col if pd.api.types.is_numeric_dtype(col) else col.map(_literal)
            for c, col in raw.items()
        }
    )
    if "shrinkage" in runs:
        runs["shrinkage_gap"] = (1 - pd.to_numeric(runs["shrinkage"], errors="coerce")).abs()
    return runs


def _literal(v):
    if isinstance(v, str) and v[:1] in "[(" and v[-1:] in "])":
        try:
            return tuple(ast.literal_eval(v))
        except (ValueError, SyntaxError):
            return v
    return v


def read_targets(folder: Path) -> dict | None:
    p = folder / "targets.json"
    return json.loads(p.read_text()) if p.exists() else None


@dataclass(eq=False)  # identity: a sweep is one folder
class Sweep:
    data: DataSet
    kind: str
    folder: Path
    runs: pd.DataFrame
    """The runs table, with `variant_label`."""
    variants: Variants
    targets: dict | None

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def metrics(self) -> list[str]:
        """The data set's metrics that some finished run of this sweep has."""
        done = finished(self.runs)
        return [m for m in self.data.metrics if m in done and done[m].notna().any()]

    def label(self, select: Select) -> str | None:
        """The variant label `select` means, if this sweep has it."""
        for label in self.variants.order:
            name = label.split(" (")[0]
            if select(name, self.variants.settings.get(label, {})):
                return label
        return None

    def compare(self, a: str, b: str, metric: str) -> PairResult:
        """b against a at matched L0 (the sweep's targets, else interpolated L0s)."""
        targets, tol = sweep_targets(self.runs)
        return compare_matched(self.runs, metric, a, b, MAX_L0_FRACTION, targets, tol)

    def analyse(self) -> Analysis:
        """The whole analysis of the sweep's own report (every pair, every metric)."""
        reference = ORIGINAL if ORIGINAL in set(self.runs.get("variant", [])) else None
        return analyse(self.runs, metrics=self.metrics, reference=reference)


def load_sweeps(root: Path) -> list[Sweep]:
    sweeps = []
    for data in DATA_SETS:
        for kind in SWEEP_KINDS:
            folder = root / f"{data.key}_{kind}"
            if not (folder / "runs.csv").exists():
                continue
            runs, variants = assign_variants(read_runs(folder))
            sweeps.append(Sweep(data, kind, folder, runs, variants, read_targets(folder)))
    return sweeps


# ---------------------------------------------------------------------------------------------
# Verdicts


@dataclass
class Verdict:
    claim: Claim
    sweep: Sweep
    metric: str
    result: PairResult | None
    """None: the sweep lacks one of the two variants."""
    expect: str

    @property
    def winners(self) -> list[tuple[float, str | None]]:
        """(matched L0, the better variant or None) per matched L0."""
        out = []
        if self.result is None:
            return out
        a, b = self.result.a, self.result.b
        for r in self.result.rows.itertuples(index=False):
            diff = PairedDiff(int(r.seeds), r.diff, r.ci_hi - r.diff)  # the row's symmetric CI
            out.append((float(r.l0), winner(diff, a, b, hib(self.metric))))
        return out

    def words(self) -> str:
        """The verdict in words, saying where it flips when it depends on L0."""
        if self.result is None:
            return "not run"
        if not len(self.result.rows):
            return "no matched L0 in the sparse regime: not compared"
        won = self.winners
        names = {w for _, w in won if w}
        d = self.result.pooled
        if d.n == 0:
            return "no seed reached a matched L0 in both variants: not compared"
        if not names:
            return f"no difference detected with {d.n} seeds (CI ±{fmt(d.half_width)}%)"
        if len(won) == 1 or (len(names) == 1 and all(w for _, w in won)):
            return f"`{names.pop()}` better at every matched L0"
        parts = []
        for w, group in _runs_of(won):
            at = "L0 " + ", ".join(fmt(x) for x in group)
            parts.append(f"`{w}` better at {at}" if w else f"no difference detected at {at}")
        return "depends on L0: " + "; ".join(parts)

    def answer(self) -> str:
        """Does the comparison say what the claim expects?"""
        if self.result is None or self.result.pooled.n == 0 or self.expect == "context":
            return ""
        won = [w for _, w in self.winners]
        want = {"a": self.result.a, "b": self.result.b}.get(self.expect)
        if self.expect == "equal":
            return "holds" if not any(won) else "does not hold"
        if all(w == want for w in won):
            return "holds"
        if any(w == want for w in won):
            return "holds at some L0 only"
        if any(won):
            return "contradicted"
        return "not confirmed"

    def band(self) -> str:
        if self.result is None or self.result.band is None:
            return "-"
        lo, hi = self.result.band
        return fmt(lo) if lo == hi else f"{fmt(lo)}-{fmt(hi)}"

    def difference(self) -> str:
        if self.result is None or not len(self.result.rows) or self.result.pooled.n == 0:
            return "-"
        d = self.result.pooled
        if d.n < 2 or not math.isfinite(d.half_width):
            return f"{d.mean:+.2f}%"
        return f"{d.mean:+.2f}% [{d.lo:+.2f}, {d.hi:+.2f}]"


def _runs_of(won: list[tuple[float, str | None]]):
    """Consecutive matched L0s with the same winner: [(winner, [l0, ...]), ...]."""
    out: list[tuple[str | None, list[float]]] = []
    for l0, w in won:
        if out and out[-1][0] == w:
            out[-1][1].append(l0)
        else:
            out.append((w, [l0]))
    return out


def verdicts(sweeps: list[Sweep]) -> list[Verdict]:
    out = []
    for claim in CLAIMS:
        for s in (s for s in sweeps if s.kind == claim.kind):
            metrics = [
                h
                for m in (claim.metrics or ("<headline>",))
                for h in (s.data.headline if m == "<headline>" else (m,))
            ]
            for metric in metrics:
                if metric not in s.metrics:
                    continue
                for c in claim.comparisons:
                    out.append(Verdict(claim, s, metric, _compare(s, c, metric), c.expect))
    return out


def _compare(s: Sweep, c: Comparison, metric: str) -> PairResult | None:
    a, b = s.label(c.a), s.label(c.b)
    return None if a is None or b is None else s.compare(a, b, metric)


# ---------------------------------------------------------------------------------------------
# The page


def md_table(rows: list[dict]) -> str:
    return render.md_table(pd.DataFrame(rows))


def verdict_table(vs: list[Verdict]) -> str:
    rows = []
    missing = set()
    for v in vs:
        r = v.result
        if r is None:  # one line per claim and data set whose sweep lacks the variants
            if (v.claim.key, v.sweep.name) in missing:
                continue
            missing.add((v.claim.key, v.sweep.name))
        rows.append(
            {
                "claim": f"({v.claim.key})",
                "data": v.sweep.data.title,
                "b vs a": f"`{r.b}` vs `{r.a}`" if r else f"not in `{v.sweep.name}` yet",
                "metric": v.metric,
                "L0": v.band(),
                "seeds": r.pooled.n if r else "-",
                "(b - a) / a, 95% CI": v.difference(),
                "verdict": v.words(),
                "claim holds?": v.answer(),
            }
        )
    return md_table(rows)


def scale_table(sweeps: list[Sweep]) -> str:
    rows = []
    for s in sweeps:
        r = s.runs
        done = r[r["status"] == "done"]
        t = (s.targets or {}).get("targets", [])
        hit = sum(x.get("status") == "hit" for x in t)
        wall_hours = pd.to_numeric(r.get("wall_s"), errors="coerce").sum() / 3600
        seeds = sorted(pd.to_numeric(r["seed"], errors="coerce").dropna().astype(int).unique())
        data_seeds = (
            len(pd.to_numeric(r["data.seed"], errors="coerce").dropna().unique())
            if s.data is SYNTHETIC and "data.seed" in r
            else "-"
        )
        rows.append(
            {
                "sweep": f"[`{s.name}`](results/{s.name}/report.md)",
                "data": s.data.title,
                "variants": len(s.variants.order),
                "runs done / all": f"{len(done)} / {len(r)}",
                "steps x batch": _unique_pair(r, "train.steps", "train.batch_size"),
                "seeds": len(seeds),
                "data seeds": data_seeds,
                "target L0s hit": f"{hit} / {len(t)}" if t else "no targets (grid only)",
                "SAE wall hours": f"{wall_hours:.1f}",
            }
        )
    return md_table(rows)


def _unique_pair(r: pd.DataFrame, a: str, b: str) -> str:
    va = sorted(set(pd.to_numeric(r[a], errors="coerce").dropna().astype(int)))
    vb = sorted(set(pd.to_numeric(r[b], errors="coerce").dropna().astype(int)))
    return f"{'/'.join(map(str, va))} x {'/'.join(map(str, vb))}"


def evidence(claim: Claim, vs: list[Verdict], plots: bool) -> str:
    """Per data set: the claim's plots and its paired table per metric."""
    out = []
    for s in dict.fromkeys(v.sweep for v in vs if v.claim is claim):
        out.append(f"#### {s.data.title} ([report](results/{s.name}/report.md))")
        pairs = _pairs(vs, claim, s)
        if not pairs:
            out.append("The sweep lacks the compared variants.")
            continue
        for metric in dict.fromkeys(v.metric for v in vs if v.claim is claim and v.sweep is s):
            img = _claim_plots(claim, s, metric, pairs, plots)
            out.append(f"**{_title(metric)}**{_chance(s, metric)}\n\n{img}")
            out.append(_paired_table([v for v in vs if v.claim is claim and v.sweep is s
                                      and v.metric == metric]))  # fmt: skip
        if claim.kind != "recipe":
            extra = [m for m in s.metrics if m not in {v.metric for v in vs
                     if v.claim is claim and v.sweep is s}]  # fmt: skip
            for metric in extra:
                sub = [Verdict(claim, s, metric, s.compare(a, b, metric), "context")
                       for a, b in _pairs(vs, claim, s)]  # fmt: skip
                out.append(f"**{_title(metric)}**{_chance(s, metric)}")
                out.append(_paired_table(sub))
    return "\n\n".join(out)


def _pairs(vs, claim, s):
    pairs = [(v.result.a, v.result.b) for v in vs
             if v.claim is claim and v.sweep is s and v.result is not None]  # fmt: skip
    return list(dict.fromkeys(pairs))


def _title(metric: str) -> str:
    if metric in EXTRA_METRICS:
        return EXTRA_METRICS[metric]
    return METRICS[metric].title if metric in METRICS else metric


def _chance(s: Sweep, metric: str) -> str:
    if metric == "mmcs" and "mmcs_random" in s.runs:
        chance = pd.to_numeric(s.runs["mmcs_random"], errors="coerce").mean()
        return f" (chance level for a random dictionary: {chance:.3f})"
    return ""


def _paired_table(vs: list[Verdict]) -> str:
    rows = []
    for v in vs:
        r = v.result
        if r is None:
            continue
        for x in r.rows.itertuples(index=False):
            ci = f"[{fmt(x.ci_lo)}, {fmt(x.ci_hi)}]" if x.seeds >= 2 else ""
            rows.append(
                {
                    "b vs a": f"`{r.b}` vs `{r.a}`",
                    "L0": fmt(x.l0),
                    "seeds": x.seeds,
                    "a": fmt(x.a),
                    "b": fmt(x.b),
                    "b - a, 95% CI": f"{fmt(x.diff)} {ci}".strip(),
                    "(b - a) / a": "n/a"
                    if not math.isfinite(x.rel_diff_pct)
                    else f"{x.rel_diff_pct:+.2f}%",  # fmt: skip
                    "verdict": x.verdict,
                    "L0 match": x.note,
                }
            )
    return md_table(rows)


def _claim_plots(
    claim: Claim, s: Sweep, metric: str, pairs: list[tuple[str, str]], plots: bool
) -> str:
    """The compared variants vs L0 (frontiers, or curves: `Metric.frontier`), and the
    compared ratios at matched L0 with their paired CI bands: each variant relative to the
    common `a` when every pair has the same one, else each pair's b relative to its own a
    (the difference a verdict is about, not one across pairs)."""
    labels = list(dict.fromkeys(x for pair in pairs for x in pair))
    stem = f"claim_{claim.key}_{s.data.key}_{metric}"
    plot_dir = HERE / "plots"
    runs = s.runs[s.runs[LABEL].isin(labels)]
    refs = list(dict.fromkeys(a for a, _ in pairs))
    reference = refs[0] if len(refs) == 1 else "a"
    if plots:
        title = f"({claim.key}) {metric} vs L0, {s.data.title}"
        front = frontier_plot(runs, metric, order=labels, title=title)
        _save(front, plot_dir, f"{stem}_frontier")
        if len(refs) == 1:
            rel = relative_to(runs, metric, reference, labels, MAX_L0_FRACTION)
            fig = relative_plot(rel, metric, reference, order=labels)
        else:
            # the selections' own short names: "gated_original, init on, warm-up on"
            short = {s.label(x): x.__doc__ for c in claim.comparisons for x in (c.a, c.b)}
            per_pair = [
                relative_to(runs, metric, a, [a, b], MAX_L0_FRACTION).assign(
                    variant=_pair_label(short.get(a, a), short.get(b, b))
                )
                for a, b in pairs
            ]
            compared = [r for r in per_pair if len(r)]  # a pair with no matched L0 draws nothing
            rel = pd.concat(compared, ignore_index=True) if compared else per_pair[0]
            fig = relative_plot(rel, metric, reference)
        _save(fig, plot_dir, f"{stem}_relative")
    what = reference if len(refs) == 1 else "a, per compared pair"
    return (
        f"![({claim.key}) {metric} vs L0, {s.data.title}](results/plots/{stem}_frontier.png) "
        f"![({claim.key}) {metric} relative to {what}](results/plots/{stem}_relative.png)"
    )


def _pair_label(a: str, b: str) -> str:
    """'b vs a' for two short names ("gated_original, init on, warm-up on"), naming what the
    two share once, on a line of its own: "init on vs init off\n(gated_original, warm-up on)"."""
    pa, pb = a.split(", "), b.split(", ")
    shared = [p for p in pa if p in pb]
    only_b = ", ".join(p for p in pb if p not in shared)
    only_a = ", ".join(p for p in pa if p not in shared)
    return f"{only_b} vs {only_a}" + (f"\n({', '.join(shared)})" if shared else "")


def _save(fig, plot_dir: Path, stem: str) -> None:
    plot_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot_dir / f"{stem}.png", dpi=110, metadata={"Software": None})


def build_page(sweeps: list[Sweep], plots: bool) -> str:
    vs = verdicts(sweeps)
    fields = {
        "verdicts": verdict_table(vs),
        "scale": scale_table(sweeps),
        "detectable": detectable(vs),
    }
    for claim in CLAIMS:
        fields[f"evidence_{claim.key}"] = evidence(claim, vs, plots)
    text = TEMPLATE.read_text()
    missing = set(re.findall(r"\{\{(\w+)\}\}", text)) - set(fields)
    if missing:
        raise KeyError(f"page.md has fields rebuild.py does not fill: {sorted(missing)}")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: fields[m.group(1)], text)


def detectable(vs: list[Verdict]) -> str:
    """Per data set and headline metric: the median CI half-width of the verdict table's
    comparisons."""
    out = []
    for data in DATA_SETS:
        for metric in data.headline:
            hw = [v.result.pooled.half_width for v in vs if v.sweep.data is data and v.result
                  and v.result.pooled.n >= 2 and v.metric == metric]  # fmt: skip
            hw = [h for h in hw if math.isfinite(h)]
            if hw:
                out.append(
                    f"- {data.title}, {metric}: differences under about "
                    f"±{np.median(hw):.2g}% (the median CI half-width) go undetected."
                )
    return "\n".join(out)


def write_sweep_report(s: Sweep, out_dir: Path, plots: bool) -> Path:
    """The sweep's own report (every pair, every metric), as `sae-analysis` writes it, less
    the copies of what is committed already (the runs table, the one-file HTML, SVGs)."""
    a = s.analyse()
    paths = write_report(
        a.runs,
        out_dir,
        title=f"Sweep report: {s.name}",
        analysis=a,
        targets=s.targets,
        generated=STAMP,
        plots=plots,
    )
    svg = [p for p in paths.plots if p.suffix == ".svg"]  # large, and the page shows PNGs
    for copy in (paths.report_html, out_dir / "tables" / "runs.csv", *svg):
        copy.unlink(missing_ok=True)
    return paths.report_md


def _show_diff(committed: Path, rebuilt: Path, lines: int = 12) -> None:
    old = committed.read_text().splitlines() if committed.exists() else []
    diff = difflib.unified_diff(old, rebuilt.read_text().splitlines(), lineterm="", n=0)
    for line in itertools.islice(diff, lines):
        print(line[-260:], file=sys.stderr)


def stale(sweeps: list[Sweep], page: str, reports: bool) -> list[Path]:
    """The committed files (the page, and the sweep reports) a rebuild would change."""
    out = [] if PAGE.exists() and PAGE.read_text() == page else [PAGE]
    if not reports:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        for s in sweeps:
            md = write_sweep_report(s, Path(tmp) / s.name, plots=False)
            committed = s.folder / "report.md"
            if not committed.exists() or committed.read_text() != md.read_text():
                out.append(committed)
                _show_diff(committed, md)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a rebuild would change text")
    p.add_argument("--no-plots", action="store_true", help="leave the plots as they are")
    p.add_argument("--page-only", action="store_true", help="leave the sweep reports out")
    args = p.parse_args(argv)
    plots = not (args.no_plots or args.check)
    sweeps = load_sweeps(HERE)
    page = build_page(sweeps, plots)
    if args.check:
        changed = stale(sweeps, page, reports=not args.page_only)
        for path in changed:
            print(f"{path} is out of date: run python docs/results/rebuild.py", file=sys.stderr)
        if not changed:
            print(f"{PAGE.name} is up to date" + ("" if args.page_only else ", and the reports"))
        return 1 if changed else 0
    if not args.page_only:
        for s in sweeps:
            write_sweep_report(s, s.folder, plots)
    PAGE.write_text(page)
    print(f"rebuilt {PAGE}" + ("" if args.page_only else f" and {len(sweeps)} sweep reports"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
