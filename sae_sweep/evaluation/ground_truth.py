"""Ground-truth metrics of synthetic data, as SAELens defines them (`sae_lens.synthetic.evals`,
SynthSAEBench, arXiv 2602.14687), so that a sweep's figures read against its published table.

Every match is by the absolute cosine between a learned decoder column and a true direction
(SAELens's `cosine_similarities`: norms clamped at 1e-8, so a zero column matches nothing).

    mcc          mean |cosine| over the one-to-one matching of latents to true features that
                 maximises it (Hungarian algorithm, min(M, G) pairs)
    uniqueness   distinct true features among the latents' best matches, over M
    precision,   per latent, as a detector of its best-matching true feature on the held-out
    recall, f1   split: it fires (f != 0) / the feature is active (coefficient > 0); TP/(TP+FP),
                 TP/(TP+FN) and their harmonic mean, 0 where undefined; mean over all M
                 latents (a dead latent counts 0)
    true_l0      mean number of true features active per held-out row

SAELens is an optional extra of sae-sweep and the built-in generator's jobs need these
without it, so they are computed here, streamed over the held-out split alongside the other
metrics (tests/test_ground_truth.py checks them against SAELens's own functions). SAELens's
explained variance is the project's `explained_variance` (1 - FVU about the mean), and its
`sae_l0` the project's `l0`.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment


def abs_cosines(W_dec: torch.Tensor, true_directions: torch.Tensor) -> torch.Tensor:
    """(M, G) |cosine| of each decoder column (W_dec: (d, M)) with each true direction (G, d)."""
    learned = W_dec.T / W_dec.T.norm(dim=1, keepdim=True).clamp(min=1e-8)
    true = true_directions.to(W_dec) / true_directions.norm(dim=1, keepdim=True).clamp(min=1e-8)
    return (learned @ true.T).abs()


def mcc(cosines: torch.Tensor) -> float:
    """Mean correlation coefficient: the mean |cosine| of the optimal one-to-one matching."""
    matrix = cosines.double().cpu().numpy()
    rows, cols = linear_sum_assignment(1.0 - matrix)
    return float(matrix[rows, cols].mean())


def uniqueness(cosines: torch.Tensor) -> float:
    """Fraction of latents whose best-matching true feature no other latent's best match is
    (distinct best matches / M): 1 when every latent tracks a different feature."""
    if cosines.shape[0] == 0:
        return 0.0
    return cosines.argmax(dim=1).unique().numel() / cosines.shape[0]


class GroundTruthMetrics:
    """The metrics of one SAE against one set of true directions: MCC and uniqueness from
    the decoder, and the detection counts behind precision, recall and F1, accumulated over
    held-out chunks (`update`)."""

    def __init__(self, W_dec: torch.Tensor, true_directions: torch.Tensor):
        self.cosines = abs_cosines(W_dec.float(), true_directions.float())  # (M, G)
        self.best_match = self.cosines.argmax(dim=1)  # (M,)
        zeros = lambda: torch.zeros_like(self.best_match)  # noqa: E731
        self.tp, self.fp, self.fn = zeros(), zeros(), zeros()
        self.true_active = torch.zeros((), dtype=torch.int64, device=W_dec.device)
        self.rows = 0

    @torch.no_grad()
    def update(self, f: torch.Tensor, true_acts: torch.Tensor) -> None:
        """f: (n, M) latents; true_acts: (n, G) true feature activations of the same rows."""
        if true_acts.shape != (f.shape[0], self.cosines.shape[1]):
            raise ValueError(
                f"true feature activations of shape {tuple(true_acts.shape)} do not fit "
                f"{f.shape[0]} held-out rows of {self.cosines.shape[1]} true features: the "
                "source's eval_batches_with_truth must pair each chunk with its own rows"
            )
        true_acts = true_acts.to(self.best_match.device)
        fires = f != 0
        active = true_acts[:, self.best_match] > 0  # (n, M): each latent's matched feature
        self.tp += (fires & active).sum(0)
        self.fp += (fires & ~active).sum(0)
        self.fn += (~fires & active).sum(0)
        self.true_active += (true_acts > 0).sum()
        self.rows += true_acts.shape[0]

    def result(self) -> dict[str, float | None]:
        """mcc and uniqueness; precision, recall, f1 and true_l0 when `update` saw rows (None
        otherwise: a source with true directions but not their activations)."""
        out: dict[str, float | None] = {
            "mcc": mcc(self.cosines),
            "uniqueness": uniqueness(self.cosines),
        }
        if not self.rows:
            return {**out, **dict.fromkeys(("precision", "recall", "f1", "true_l0"))}
        tp, fp, fn = self.tp.double(), self.fp.double(), self.fn.double()
        precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1), 0.0)
        recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp(min=1), 0.0)
        total = precision + recall
        f1 = torch.where(total > 0, 2 * precision * recall / total.clamp(min=1e-300), 0.0)
        return {
            **out,
            "precision": precision.mean().item(),
            "recall": recall.mean().item(),
            "f1": f1.mean().item(),
            "true_l0": self.true_active.item() / self.rows,
        }
