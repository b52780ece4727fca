"""Every metric a job records, in one table: its name, title, direction, and who reads it.

The evaluation fills a job's summary with these names, the export copies the `exported`
ones into SAELens's metadata, the closing log line of a job prints the `printed` ones, and
the analysis takes each metric's title, direction and frontier rule from here. A summary key
that is not in the catalogue still loads as a column (`analysis.load`); it is analysed as
lower-is-better with a Pareto frontier, with its key as its title.

Where each metric comes from (`Metric.source`):
    activations   the held-out activations (`evaluation.evaluate`): every job has them
    ground_truth  synthetic data's true directions (and, for precision, recall, F1 and true
                  L0, its true feature activations: `GroundTruthSource`): None without them
    lm            the SAE spliced into a live causal LM (`evaluation.lm`): None without one
    job           the job's own bookkeeping, written to the summary by the job
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Source = Literal["activations", "ground_truth", "lm", "job"]
Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class Metric:
    name: str
    """Summary key (`summary.json`, `eval/<name>` in metrics.jsonl and W&B, a runs column)."""
    title: str
    """Axis label and section title in plots and reports."""
    direction: Direction | None
    """Which values are better: "higher" or "lower"; None for neither (a count, a scale, a
    value best near 1, or the L0 axis itself)."""
    source: Source
    """What produces it (module docstring)."""
    required: bool = False
    """A finished job must have a finite value: a job without it has no result."""
    exported: bool = False
    """Copied into the SAELens export's `metadata.sae_sweep.metrics` and the export index."""
    printed: bool = False
    """Printed in the `eval:` line at the end of a single job."""
    compared: bool = False
    """Analysed by default (`sae-analysis` without `--metrics`), when the runs have it."""
    headline: bool = False
    """A metric of the opening verdicts of a report (and of `Analysis.headline_metrics`)."""
    primary: int | None = None
    """Rank as a report's primary metric (1 first): the first of these the runs have is the
    metric the report leads with and whose frontier SAEs are published."""
    frontier: bool = True
    """L0 buys this metric, so each variant's curve is its Pareto frontier. False: the curve
    is every point, and a comparison at matched L0 reads the value there, not the best one
    at a lower L0 (MMCS peaks near the true number of active features)."""
    log_scale: bool = False
    """Drawn on a log y axis (it spans decades across a sweep)."""
    checked: bool = False
    """Re-evaluating a record (`evaluation.reevaluate`) must reproduce it: the check that the
    data and the evaluation are the ones the record was made with."""

    @property
    def higher_is_better(self) -> bool:
        """What the frontiers and comparisons read: a metric with no direction is compared
        as lower-is-better, as a column the catalogue does not name."""
        return self.direction == "higher"


_CATALOGUE = [
    # The x axis of every frontier
    Metric("l0", "L0 (active latents per token)", None, "activations", required=True,
           exported=True, printed=True, checked=True),
    # The frontiers a report can draw, in the order it draws them
    Metric("fvu", "FVU (fraction of variance unexplained)", "lower", "activations",
           required=True, exported=True, printed=True, compared=True, headline=True,
           primary=2, log_scale=True, checked=True),
    Metric("mse", "MSE", "lower", "activations", required=True, exported=True, printed=True,
           compared=True, primary=3, log_scale=True, checked=True),
    Metric("mmcs", "MMCS with true features", "higher", "ground_truth", printed=True,
           compared=True, headline=True, primary=4, frontier=False, checked=True),
    Metric("mcc", "MCC with true features (Hungarian-matched |cosine|)", "higher",
           "ground_truth", printed=True, compared=True, frontier=False),
    Metric("f1", "F1 of latents as detectors of their true features", "higher",
           "ground_truth", printed=True, compared=True, frontier=False),
    Metric("loss_recovered", "loss recovered", "higher", "lm", exported=True, printed=True,
           compared=True, primary=1),
    Metric("delta_lm_loss", "delta LM loss (CE with SAE - clean)", "lower", "lm", printed=True,
           compared=True, headline=True, primary=5, log_scale=True, checked=True),
    Metric("dead_fraction", "dead latents (never fire on the eval set)", "lower", "activations",
           required=True, printed=True, frontier=False, checked=True),
    Metric("dense_fraction", "dense latents (fire on > 10% of eval tokens)", "lower",
           "activations", frontier=False),
    Metric("loss_recovered_mean", "loss recovered (vs mean ablation)", "higher", "lm",
           exported=True, compared=True),
    Metric("kl_div", "KL(clean || SAE spliced), nats/token", "lower", "lm", exported=True,
           compared=True),
    Metric("kl_score", "KL score (vs zero ablation)", "higher", "lm", exported=True, compared=True),
    # Held-out activations
    Metric("explained_variance", "explained variance (1 - FVU)", "higher", "activations",
           required=True, exported=True, printed=True),
    Metric("mse_original_units", "MSE (original units)", "lower", "activations"),
    Metric("shrinkage", "shrinkage gamma (1 = unbiased, < 1 = shrinkage)", None,
           "activations", required=True, printed=True, checked=True),
    Metric("relative_reconstruction_bias", "relative reconstruction bias (= shrinkage gamma)",
           None, "activations"),
    Metric("l2_ratio", "L2 ratio ||x_hat|| / ||x|| (1 = unbiased)", None, "activations"),
    Metric("alive_fraction", "alive latents (fire on the eval set)", "higher", "activations"),
    Metric("dead_window_tokens", "held-out tokens behind the firing fractions", None,
           "activations"),
    # Synthetic data's ground truth
    Metric("frac_recovered", "true features recovered (max cosine > 0.9)", "higher",
           "ground_truth", printed=True),
    Metric("mmcs_random", "MMCS of a random dictionary (chance level)", None, "ground_truth",
           printed=True),
    Metric("precision", "precision of latents as detectors of their true features", "higher",
           "ground_truth", frontier=False),
    Metric("recall", "recall of latents as detectors of their true features", "higher",
           "ground_truth", frontier=False),
    Metric("uniqueness", "uniqueness (distinct true features among latents' best matches / M)",
           "higher", "ground_truth", frontier=False),
    Metric("true_l0", "true L0 (true features active per held-out row)", None, "ground_truth"),
    # The SAE spliced into the language model
    Metric("ce_clean", "CE clean, nats/token", None, "lm"),
    Metric("ce_sae", "CE with SAE spliced, nats/token", "lower", "lm"),
    Metric("ce_zero", "CE zero-ablated, nats/token", None, "lm"),
    Metric("ce_mean", "CE mean-ablated, nats/token", None, "lm"),
    Metric("kl_zero", "KL(clean || zero-ablated), nats/token", None, "lm"),
    Metric("kl_mean", "KL(clean || mean-ablated), nats/token", None, "lm"),
    Metric("kl_score_mean", "KL score (vs mean ablation)", "higher", "lm"),
    # The job
    Metric("steps", "training steps", None, "job"),
    Metric("wall_s", "job wall time (s)", None, "job", printed=True),
    Metric("activations_per_s", "training throughput (activations/s)", "higher", "job",
           printed=True),
    Metric("norm_scale", "input normalisation scalar", None, "job", exported=True),
]  # fmt: skip

METRICS: dict[str, Metric] = {m.name: m for m in _CATALOGUE}
"""Every metric by name, in catalogue order (the compared ones in the order reports show them)."""


def names(
    *,
    source: Source | None = None,
    required: bool | None = None,
    exported: bool | None = None,
    printed: bool | None = None,
    compared: bool | None = None,
    headline: bool | None = None,
    checked: bool | None = None,
) -> tuple[str, ...]:
    """The names of the metrics with every given property, in catalogue order."""
    wanted = {
        "source": source,
        "required": required,
        "exported": exported,
        "printed": printed,
        "compared": compared,
        "headline": headline,
        "checked": checked,
    }
    wanted = {k: v for k, v in wanted.items() if v is not None}
    return tuple(m.name for m in _CATALOGUE if all(getattr(m, k) == v for k, v in wanted.items()))


def primary_order() -> tuple[str, ...]:
    """The metrics that can lead a report, the preferred one first (`Metric.primary`)."""
    ranked = sorted((m for m in _CATALOGUE if m.primary is not None), key=lambda m: m.primary)
    return tuple(m.name for m in ranked)


def title(name: str) -> str:
    """The metric's title, or its name when it is not in the catalogue."""
    return METRICS[name].title if name in METRICS else name


def higher_is_better(name: str) -> bool:
    """True when higher is better; False when lower is, when it has no direction, or when the
    metric is not in the catalogue (a derived column: lower-is-better by convention)."""
    return name in METRICS and METRICS[name].higher_is_better


def _check(catalogue: list[Metric]) -> None:
    """Refuse an inconsistent table at import: every rule a consumer relies on."""
    seen: set[str] = set()
    ranks: set[int] = set()
    for m in catalogue:
        if m.name in seen:
            raise ValueError(f"metric {m.name!r} is in the catalogue twice: keep one entry")
        seen.add(m.name)
        if (m.compared or m.headline or m.primary is not None) and m.direction is None:
            raise ValueError(f"metric {m.name!r} is compared but has no direction: set one")
        if m.headline and not m.compared:
            raise ValueError(f"headline metric {m.name!r} must also be compared by default")
        if m.required and m.source != "activations":
            raise ValueError(
                f"metric {m.name!r} is required but only some jobs have its source {m.source!r}"
            )
        if m.primary is not None:
            if m.primary in ranks:
                raise ValueError(f"two metrics share primary rank {m.primary}")
            ranks.add(m.primary)


_check(_CATALOGUE)
