"""Matryoshka BatchTopK sparse autoencoder (Bussmann, Nabeshima, Karvonen, Nanda 2025,
arXiv 2503.17547; Nabeshima's Matryoshka SAEs).

BatchTopK (models/batchtopk.py) whose dictionary is a chain of nested prefixes
m_1 < m_2 < ... < m_n = M, each of which must reconstruct the input on its own:
    f          = BatchTopK's f: ReLU of the k x B largest pre-activations of the whole batch
    x_hat_m    = W_dec[:, :m] f[:m] + b_dec          (the decoder restricted to the prefix)
    L          = sum_j ||x - x_hat_{m_j}||^2 + AuxK  (batch means; the last term is L_recon)
The early latents cannot rely on later ones to finish their reconstruction, so general
features settle in the small prefixes and specific ones in the later groups, instead of
absorbing one another. The selection, the AuxK term on the full residual, the evaluation
threshold and the L0 axis (`sae.k`) are BatchTopK's; docs/design.md says where SAELens, the
paper and its reference code differ. The prefixes are `sae.prefix_fractions` of d_sae, or
`sae.prefix_sizes` in latents (SAELens's `matryoshka_widths`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..losses import L_recon, LossTerms
from .base import SAEOutput
from .batchtopk import BATCHTOPK, BatchTopKSAE, BatchTopKSAEConfig
from .registry import Architecture


@dataclass
class MatryoshkaBatchTopKSAEConfig(BatchTopKSAEConfig):
    kind: str = "matryoshka_batchtopk"
    prefix_fractions: list[float] = field(default_factory=lambda: [0.0625, 0.125, 0.25, 0.5, 1.0])
    """Nested prefixes as fractions of d_sae, increasing, the last 1.0 (the whole dictionary):
    each prefix's latents alone reconstruct x, and the loss sums their errors."""
    prefix_sizes: list[int] | None = None
    """The prefixes in latents, increasing, the last = d_sae (SAELens's matryoshka_widths);
    overrides prefix_fractions when set."""


def prefix_widths(d_sae: int, fractions, sizes=None) -> tuple[int, ...]:
    """The prefix sizes in latents: `sizes` as given, else round(fraction x d_sae).
    Raises ValueError naming the knob and the fix when they are not a nested chain ending at
    d_sae."""
    if sizes is not None:
        widths, knob = tuple(int(s) for s in sizes), f"sae.prefix_sizes={list(sizes)}"
    else:
        problem = next(fraction_problems(fractions), None)
        if problem:
            raise ValueError(problem)
        widths = tuple(max(1, round(f * d_sae)) for f in fractions)
        knob = f"sae.prefix_fractions={list(fractions)} (x d_sae={d_sae}: {list(widths)})"
    if not widths:
        raise ValueError(f"{knob} is empty. Fix: at least the whole dictionary, [{d_sae}]")
    if widths[0] <= 0:
        raise ValueError(f"{knob}: every prefix needs at least one latent")
    if any(b <= a for a, b in zip(widths, widths[1:], strict=False)):
        raise ValueError(
            f"{knob} must be strictly increasing. Fix: fewer or more distinct prefixes, or a "
            "larger dictionary (sae.expansion_factor / sae.d_sae)"
        )
    if widths[-1] != d_sae:
        raise ValueError(
            f"{knob} must end with the whole dictionary, d_sae={d_sae}. Fix: append {d_sae} "
            "(or set sae.d_sae to the last size)"
        )
    return widths


def fraction_problems(fractions):
    """What is wrong with `sae.prefix_fractions` before d_sae is known (one message each)."""
    fractions = list(fractions)
    knob = f"sae.prefix_fractions={fractions}"
    if not fractions:
        yield f"{knob} is empty. Fix: at least [1.0], the whole dictionary"
        return
    if any(not 0 < f <= 1 for f in fractions):
        yield f"{knob}: every fraction must lie in (0, 1]"
    if any(b <= a for a, b in zip(fractions, fractions[1:], strict=False)):
        yield f"{knob} must be strictly increasing. Fix: e.g. [0.0625, 0.125, 0.25, 0.5, 1.0]"
    if fractions[-1] != 1.0:
        yield f"{knob} must end with 1.0 (the whole dictionary). Fix: append 1.0"


class MatryoshkaBatchTopKSAE(BatchTopKSAE):
    kind = "matryoshka_batchtopk"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        prefix_fractions,
        prefix_sizes=None,
        **kwargs,
    ):
        self.prefix_sizes = prefix_widths(d_sae, prefix_fractions, prefix_sizes)
        super().__init__(d_in, d_sae, **kwargs)
        self.options = {
            **self.options,
            "prefix_fractions": [float(f) for f in prefix_fractions],
            "prefix_sizes": None if prefix_sizes is None else [int(s) for s in prefix_sizes],
        }

    def prefix_reconstructions(self, f: torch.Tensor):
        """(width, x_hat restricted to the first `width` latents) for each prefix, in order;
        built group by group, so all of them together cost one decoder product."""
        x_hat, start = self.b_dec, 0
        for width in self.prefix_sizes:
            x_hat = x_hat + f[:, start:width] @ self.W_dec[:, start:width].T
            start = width
            yield width, x_hat

    def loss_terms(self, x: torch.Tensor, out: SAEOutput, penalty, coefficient) -> LossTerms:
        """BatchTopK's loss (L_recon of the whole dictionary, and AuxK on its residual) plus
        the reconstruction error of every inner prefix. `recon` stays the whole dictionary's
        (train/fvu is the model's); `total` holds the prefix terms too."""
        terms = super().loss_terms(x, out, penalty, coefficient)
        inner = [L_recon(x, x_hat) for _, x_hat in self.prefix_reconstructions(out.f)][:-1]
        return terms._replace(total=terms.total + sum(inner, torch.zeros_like(terms.total)))


def _matryoshka_problems(cfg):
    yield from BATCHTOPK.problems(cfg)
    sae = cfg.sae
    if sae.prefix_sizes is None:
        yield from fraction_problems(sae.prefix_fractions)
        return
    if sae.d_sae is None:
        yield (
            f"sae.prefix_sizes={list(sae.prefix_sizes)} needs a fixed dictionary size. Fix: set "
            f"sae.d_sae={sae.prefix_sizes[-1]}, or use sae.prefix_fractions (relative to d_sae)"
        )
        return
    try:
        prefix_widths(sae.d_sae, sae.prefix_fractions, sae.prefix_sizes)
    except ValueError as err:
        yield str(err)


MATRYOSHKA_BATCHTOPK = Architecture(
    name="matryoshka_batchtopk",
    config=MatryoshkaBatchTopKSAEConfig,
    model=MatryoshkaBatchTopKSAE,
    penalties=BATCHTOPK.penalties,
    kernels=BATCHTOPK.kernels,  # kernels/topk.py adds the inner prefixes' terms
    l0_knob="sae.k",
    irrelevant_knobs=BATCHTOPK.irrelevant_knobs,
    problems=_matryoshka_problems,
)
