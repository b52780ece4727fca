"""TopK sparse autoencoder (Gao et al. 2024, arXiv 2406.04093).

    pre(x) = W_enc (x - b_dec) + b_enc
    f(x)   = ReLU(TopK_k(pre(x)))          # keep the k largest entries of each row, zero the rest
    x_hat  = W_dec f + b_dec
L0 <= k by construction (= k once the k largest pre-activations are positive): no sparsity
penalty, the L0 axis of a sweep is `sae.k`. The loss is L_recon + AuxK:
    e      = sg(x - x_hat)                                 # the residual, a fixed target
    z      = ReLU(TopK_{k_aux}(pre restricted to dead latents))
    nmse_e = ||e - W_dec z||^2 / ||e - mean(e)||^2         # over the batch
    AuxK   = alpha V_x nmse_e,    V_x = ||x - mean(x)||^2 / B   # alpha = 1/32; 0 if none dead
Gao et al.'s trainer (openai/sparse_autoencoder) minimises L_recon / V_x + alpha nmse_e, both
terms normalised MSEs; times V_x, that is L_recon + AuxK: L_recon keeps this project's units
and AuxK is exactly as strong relative to it as there. `aux_weighting` selects another
convention (`AuxKWeighting`). A latent is dead once it has not fired for `dead_tokens`
training tokens (the counter is a buffer, saved with checkpoints). Init as in the paper:
unit-norm decoder columns (the config's default), encoder = decoder transpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from ..config.schema import PenaltyKind, SAEConfig
from ..kernels.topk import ActiveSet, row_topk, topk_sparse_loss
from ..losses import L_auxk, L_recon, LossTerms
from .base import SAEOutput, SparseAutoencoder
from .registry import Architecture


class AuxKWeighting(str, Enum):
    """How AuxK is weighted against L_recon = ||x - x_hat||^2 (summed over d, batch mean)."""

    normalised_mse = "normalised_mse"
    """Gao et al.'s trainer: both terms normalised MSEs (L_recon / V_x + alpha nmse_e), added
    here as alpha V_x nmse_e with V_x the batch's ||x - mean(x)||^2 / B (the trainer
    estimates one V_x from a sample before training)."""
    residual_variance = "residual_variance"
    """Earlier sae-sweep versions: alpha nmse_e added to the unnormalised L_recon, i.e. 1/V_x
    as strong relative to reconstruction as in the paper (1/71 on the default data)."""
    saelens = "saelens"
    """SAELens's TopK training SAE: neither term normalised, AuxK = alpha min(n_dead / k_aux,
    1) ||e - W_dec z||^2 (summed over d, batch mean); SAELens's alpha defaults to 1."""


def auxk_term(
    x: torch.Tensor,
    e: torch.Tensor,
    e_hat: torch.Tensor,
    dead: torch.Tensor,
    k_aux: int,
    coefficient: float,
    weighting: AuxKWeighting | str,
) -> torch.Tensor:
    """AuxK as it is added to L_recon. x: the (B, d) batch; e: its residual x - x_hat,
    detached; e_hat: e's reconstruction W_dec z by dead latents alone; dead: (M,) bool.
    Callers zero it when no latent is dead (a `torch.where`: no device sync)."""
    weighting = AuxKWeighting(weighting)
    if weighting == AuxKWeighting.saelens:
        share = (dead.sum() / k_aux).clamp(max=1.0)  # few dead latents: a weaker term
        return coefficient * share * L_recon(e, e_hat)
    aux = L_auxk(e, e_hat, coefficient)
    if weighting == AuxKWeighting.normalised_mse:
        aux = aux * ((x - x.mean(0)).pow(2).sum() / x.shape[0]).detach()
    return aux


@dataclass
class TopKSAEConfig(SAEConfig):
    kind: str = "topk"
    decoder_init_norm: float = 1.0
    """Norm of each decoder column at init (the paper: unit norm)."""
    k: int = 32
    """Active latents per input: L0 = k (the frontier axis of a TopK sweep)."""
    k_aux: int | None = None
    """Dead latents AuxK may use per input (null = d_in // 2, the paper's choice)."""
    aux_coefficient: float = 1 / 32
    """alpha, the weight of the AuxK term (the paper: 1/32)."""
    aux_weighting: AuxKWeighting = AuxKWeighting.normalised_mse
    """AuxK against L_recon: `normalised_mse` (Gao et al.'s trainer), `residual_variance`
    (earlier sae-sweep versions) or `saelens` (SAELens's; use its alpha, 1)."""
    dead_tokens: int = 1_000_000
    """A latent is dead for AuxK after this many training tokens without firing (the paper
    used 10M on runs of billions of tokens)."""


class TopKSAE(SparseAutoencoder):
    kind = "topk"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        decoder_init_norm: float,
        encoder_init_transpose: bool,
        generator: torch.Generator,
        k: int = 32,
        k_aux: int | None = None,
        aux_coefficient: float = 1 / 32,
        # what records saved before the knob existed were trained with (the config's: Gao's)
        aux_weighting: AuxKWeighting | str = AuxKWeighting.residual_variance,
        dead_tokens: int = 1_000_000,
    ):
        if not 0 < k <= d_sae:
            raise ValueError(
                f"sae.k={k} must lie in [1, d_sae={d_sae}]. Fix: a smaller sae.k, or a larger "
                "sae.expansion_factor / sae.d_sae"
            )
        super().__init__(d_in, d_sae, decoder_init_norm, generator)
        self.W_enc = nn.Parameter(torch.empty(d_sae, d_in))  # (M, d)
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self._default_encoder_init(self.W_enc, generator, encoder_init_transpose)
        self.k = k
        self.k_aux = min(k_aux if k_aux is not None else max(1, d_in // 2), d_sae)
        self.aux_coefficient, self.dead_tokens = aux_coefficient, dead_tokens
        self.aux_weighting = AuxKWeighting(aux_weighting)
        self.options = {"k": k, "k_aux": k_aux, "aux_coefficient": aux_coefficient,
                        "aux_weighting": self.aux_weighting.value,
                        "dead_tokens": dead_tokens}  # fmt: skip
        self.register_buffer("tokens_since_fired", torch.zeros(d_sae, dtype=torch.long))

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec) @ self.W_enc.T + self.b_enc

    def select(self, pre: torch.Tensor) -> ActiveSet:
        """The entries that may be non-zero in training (TopK: the k largest of each row)."""
        return row_topk(pre, self.k)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self._keep(self.pre_activations(x))
        return f, f

    def _keep(self, pre: torch.Tensor) -> torch.Tensor:
        """(B, M) f: ReLU of the selected entries of pre, zero elsewhere."""
        active = self.select(pre.detach())
        flat = active.rows * pre.shape[1] + active.cols
        f = torch.zeros_like(pre).view(-1)
        f = f.index_put((flat,), torch.relu(pre.reshape(-1)[flat])).view_as(pre)
        if self.training:
            self.observe_training_batch_(f.detach())
        return f

    def observe_training_batch_(self, f: torch.Tensor) -> None:
        """Statistics of a training batch's f that evaluation needs (BatchTopK's threshold)."""

    def dead_latents(self) -> torch.Tensor:
        """(M,) bool: latents that have not fired for `dead_tokens` training tokens."""
        return self.tokens_since_fired >= self.dead_tokens

    def loss_terms(self, x: torch.Tensor, out: SAEOutput, penalty, coefficient) -> LossTerms:
        recon = L_recon(x, out.x_hat)
        sparse = penalty.value(out.g, self.W_dec, coefficient)  # penalty=none: 0
        pre, dead = self.pre_activations(x), self.dead_latents()
        candidates = pre.detach().masked_fill(~dead, float("-inf"))
        idx = candidates.topk(self.k_aux, dim=1).indices  # (B, k_aux)
        # fewer than k_aux dead latents: the live ones picked to fill the row count zero
        z = torch.zeros_like(pre).scatter(1, idx, torch.relu(pre.gather(1, idx)) * dead[idx])
        e = (x - out.x_hat).detach()  # AuxK's target: the residual, held fixed
        aux = torch.where(dead.any(), self.auxk(x, e, z @ self.W_dec.T, dead), 0.0)
        return LossTerms(recon + sparse + aux, recon, sparse, aux)

    def auxk(self, x, e, e_hat, dead) -> torch.Tensor:
        """This SAE's AuxK term: `auxk_term` with its k_aux, alpha and weighting."""
        return auxk_term(x, e, e_hat, dead, self.k_aux, self.aux_coefficient, self.aux_weighting)

    @torch.no_grad()
    def after_step_(self, counts: torch.Tensor, batch_size: int) -> None:
        self.tokens_since_fired.add_(batch_size).masked_fill_(counts > 0, 0)

    @property
    def encoder_weight(self) -> nn.Parameter:
        return self.W_enc

    def feature_params(self) -> dict[str, tuple[nn.Parameter, int]]:
        return {"W_enc": (self.W_enc, 0), "b_enc": (self.b_enc, 0), "W_dec": (self.W_dec, 1)}


def _topk_problems(cfg):
    sae = cfg.sae
    if sae.k <= 0:
        yield f"sae.k={sae.k} must be positive"
    if sae.d_sae is not None and sae.k > sae.d_sae:
        yield f"sae.k={sae.k} exceeds the dictionary size sae.d_sae={sae.d_sae}"
    if sae.k_aux is not None and sae.k_aux <= 0:
        yield f"sae.k_aux={sae.k_aux} must be positive (or null for d_in // 2)"
    if sae.aux_coefficient < 0:
        yield f"sae.aux_coefficient={sae.aux_coefficient} must be >= 0"
    if sae.dead_tokens <= 0:
        yield f"sae.dead_tokens={sae.dead_tokens} must be positive"


TOPK = Architecture(
    name="topk",
    config=TopKSAEConfig,
    model=TopKSAE,
    penalties=(PenaltyKind.none,),
    kernels={"sparse": topk_sparse_loss},
    l0_knob="sae.k",
    irrelevant_knobs=(
        "penalty.kind",
        "penalty.coefficient",
        "penalty.warmup_steps",
        "penalty.decoder_norm_grad",
    ),
    problems=_topk_problems,
)
