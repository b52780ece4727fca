"""The progress of one SAE's training: step, tokens, L0, FVU, activations/s, elapsed, ETA.

One `JobProgress` per SAE and record folder (`<record>/progress.json`), so a process that
trains several SAEs keeps one per SAE. The loop calls `step` once per step: it compares a
clock and returns, except every `logger.progress_every_s` seconds; L0 and FVU are the means
of the last logging window, which the loop reads from the device every `train.log_every`
steps anyway, so progress adds no device synchronisation. At the end the file holds the
summary's held-out figures (`metrics: held-out`) and its `activations_per_s` as `tokens_per_s`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config.schema import Config
from ..record.progress import PROGRESS_FILE, Progress

TRAIN_FIGURES = ("l0", "fvu")


class JobProgress:
    def __init__(self, cfg: Config, out_dir: Path, label: str):
        tr, lg = cfg.train, cfg.logger
        self.progress = Progress(
            label,
            total=tr.steps,
            unit="step",
            path=Path(out_dir) / PROGRESS_FILE,
            mode=lg.progress,
            every_s=lg.progress_every_s,
            scale=tr.batch_size,
            scaled="tokens",
            state="preparing",  # data source, cache build, normalisation estimate
        )

    def start(self, step: int) -> None:
        """Training starts (or resumes) at `step`; the rate and ETA count from now."""
        self.progress.figures["metrics"] = "train"
        self.progress.restart(step, "running")

    def step(self, done: int, metrics: dict[str, float] | None) -> None:
        """`done` steps are complete; `metrics`: the window just logged, or None."""
        window = None if metrics is None else {k: metrics[k] for k in TRAIN_FIGURES}
        self.progress.update(done, window)

    @property
    def steps_done(self) -> int:
        """The steps completed so far (the last one reported to `step`)."""
        return self.progress.done

    def evaluating(self) -> None:
        self.progress.set_state("evaluating")

    def finish(self, summary: dict[str, Any]) -> None:
        """The final state, with the summary's status and held-out figures."""
        status = summary.get("status") or "failed"
        figures: dict[str, Any] = {}
        if status == "done":
            figures = {k: summary.get(k) for k in TRAIN_FIGURES}
            figures.update(
                metrics="held-out",
                tokens_per_s=summary.get("activations_per_s"),
                elapsed_s=summary.get("train_wall_s"),
                eta_s=0.0,
            )
        else:
            figures["error"] = str(summary.get("error") or "").splitlines()[0][:200]
        self.progress.set_state(status, figures)
