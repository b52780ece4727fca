"""Fast training losses: an architecture's reference loss (`loss_terms` in models/) with
hand-written or sparsity-aware gradients. Each architecture declares the ones it has in its
registry entry (`Architecture.kernels`); one without kernels trains on the reference loss.

The readable reference loss is the specification; the functions here compute the same loss
and the same parameter gradients (tests/test_fast_*.py check every freeze corner), but

- `dense.py` (standard, gated) runs exactly the matrix products a step needs (7 for a gated
  SAE with a frozen aux decoder, 8 with a trainable one, 5 for a standard SAE), reuses its
  (B, M) buffers from step to step instead of allocating fresh ones, and does the elementwise
  work in place;
- `sparse.py` (standard, gated) keeps only the encoder's forward product dense: every other
  product, the aux term and the backward pass touch only the active (gate-open) entries;
- `topk.py` (TopK, BatchTopK) does the same for a selected set of k latents per row (or
  k x B per batch), AuxK included.

Each returns the same `LossTerms` as the reference (only `total` carries gradients) and the
(M,) per-feature firing counts of the batch, so the training loop never scans f again.
The dense kernels run their (B, d) x (d, M) products at `Workspace.products_dtype`
(train.matmul_dtype=bfloat16: bf16 inputs, float32 accumulation; training/precision.py) and
keep their 0/1 masks as bool on a GPU; the sparse and TopK kernels compute in float32.
Signature: fn(sae, x, penalty, coefficient, workspace).
"""

from __future__ import annotations

from .dense import Workspace, gated_dense_loss, standard_dense_loss
from .sparse import gated_sparse_loss, standard_sparse_loss
from .topk import topk_sparse_loss

__all__ = [
    "Workspace",
    "gated_dense_loss",
    "gated_sparse_loss",
    "standard_dense_loss",
    "standard_sparse_loss",
    "topk_sparse_loss",
]
