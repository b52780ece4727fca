"""Fast training losses: the loss of `sae_sweep.losses.sae_loss` with hand-written gradients.

`losses.py` is the readable specification; the functions here compute the same loss and the
same parameter gradients (tests/test_fast_*.py check every freeze corner), but

- `dense.py` runs exactly the matrix products a step needs (7 for a gated SAE with a frozen
  aux decoder, 8 with a trainable one, 5 for a standard SAE), reuses its (B, M) buffers from
  step to step instead of allocating fresh ones, and does the elementwise work in place;
- `sparse.py` keeps only the encoder's forward product dense: every other product, the aux
  term and the backward pass touch only the active (gate-open) entries.

Both return the same `LossTerms` as `sae_loss` (only `total` carries gradients) and the (M,)
per-feature firing counts of the batch, so the training loop never scans f again.
"""

from __future__ import annotations

from .dense import Workspace, dense_loss
from .sparse import sparse_loss

__all__ = ["Workspace", "dense_loss", "sparse_loss"]
