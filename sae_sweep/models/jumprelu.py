"""JumpReLU sparse autoencoder (Rajamanoharan et al. 2024, arXiv 2407.14435).

    pre(x)  = W_enc (x - b_dec) + b_enc
    theta   = threshold                           # (M,) one threshold >= 0 per feature
    f(x)    = pre * H(pre - theta)                # H: the Heaviside step
    x_hat   = W_dec f + b_dec
    L       = ||x - x_hat||^2 + lambda * sum_i H(pre_i - theta_i)     (penalty=l0)
H has zero gradient almost everywhere, so theta learns through a straight-through estimator
with the rectangle kernel K(u) = 1[|u| < 1/2] and bandwidth epsilon:
    d f_i / d theta_i = -(theta_i / epsilon) K((pre_i - theta_i) / epsilon)
    d H_i / d theta_i = -(1 / epsilon) K((pre_i - theta_i) / epsilon)
pre gets the ordinary gradient where f = pre, and none through H. The penalty acts on
g = H(pre - theta) (with that estimator), so `penalty=l0` is lambda * sum_i g_i.

theta is trained as itself and clamped at 0 after every step, as in SAELens (from its PR 718)
and dictionary_learning. The paper trains log(theta), but Adam moves a parameter by about lr
per step, so log(theta) moves theta by about theta x lr: from a small init it hardly moves
(600 default steps ended at L0 243 of 512). Weights saved with `log_threshold` load converted
(`threshold_from_log`).

Units: the paper normalises inputs to E||x||^2 = 1; this project to E||x|| = sqrt(d), i.e.
x_here ~ sqrt(d) x_paper. pre, theta and epsilon scale with x, so `bandwidth` and
`threshold_init` are given in the paper's units and scaled by sqrt(d_in) here. L_recon scales
with x^2 and the L0 term not at all: the same trade-off needs lambda_here = d x lambda_paper
(docs/design.md, "JumpReLU's lambda").
Init as in the paper: encoder = decoder transpose, biases 0, theta = threshold_init.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config.schema import PenaltyKind, SAEConfig
from .base import SparseAutoencoder
from .registry import Architecture


@dataclass
class JumpReLUSAEConfig(SAEConfig):
    kind: str = "jumprelu"
    decoder_init_norm: float = 1.0
    """Norm of each decoder column at init."""
    bandwidth: float = 0.001
    """epsilon of the straight-through estimator, in the paper's units (x sqrt(d_in) here)."""
    threshold_init: float = 0.001
    """Initial theta of every feature, in the paper's units (x sqrt(d_in) here)."""


def rectangle(u: torch.Tensor) -> torch.Tensor:
    """K(u) = 1 if |u| < 1/2, else 0."""
    return (u.abs() < 0.5).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, theta, epsilon):
        ctx.save_for_backward(pre, theta)
        ctx.epsilon = epsilon
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        eps = ctx.epsilon
        d_pre = grad * (pre > theta).to(pre.dtype)
        d_theta = (grad * -(theta / eps) * rectangle((pre - theta) / eps)).sum(0)
        return d_pre, d_theta, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, theta, epsilon):
        ctx.save_for_backward(pre, theta)
        ctx.epsilon = epsilon
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        eps = ctx.epsilon
        d_theta = (grad * -(1.0 / eps) * rectangle((pre - theta) / eps)).sum(0)
        return None, d_theta, None


def threshold_from_log(state: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Weights saved while theta was trained as log(theta) (`log_threshold`): replace that
    tensor by `threshold` = exp(log_threshold), in place. Anything else is left alone."""
    log_threshold = state.pop(prefix + "log_threshold", None)
    if log_threshold is not None and prefix + "threshold" not in state:
        state[prefix + "threshold"] = log_threshold.exp()


class JumpReLUSAE(SparseAutoencoder):
    kind = "jumprelu"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        decoder_init_norm: float,
        encoder_init_transpose: bool,
        generator: torch.Generator,
        bandwidth: float = 0.001,
        threshold_init: float = 0.001,
    ):
        super().__init__(d_in, d_sae, decoder_init_norm, generator)
        self.W_enc = nn.Parameter(torch.empty(d_sae, d_in))  # (M, d)
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        scale = math.sqrt(d_in)  # the paper's units -> this project's
        self.threshold = nn.Parameter(torch.full((d_sae,), threshold_init * scale))
        self._default_encoder_init(self.W_enc, generator, encoder_init_transpose)
        self.epsilon = bandwidth * scale
        self.options = {"bandwidth": bandwidth, "threshold_init": threshold_init}
        # checkpoints and weights of earlier versions hold log_threshold
        self.register_load_state_dict_pre_hook(
            lambda module, state, prefix, *_: threshold_from_log(state, prefix)
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = (x - self.b_dec) @ self.W_enc.T + self.b_enc
        theta = self.threshold
        return _JumpReLU.apply(pre, theta, self.epsilon), _Step.apply(pre, theta, self.epsilon)

    @torch.no_grad()
    def after_step_(self, counts: torch.Tensor, batch_size: int) -> None:
        # below 0 the gate would pass negative pre-activations. A projection after the step,
        # not a clamp in the graph: that would zero theta's gradient at 0 and pin it there.
        self.threshold.clamp_(min=0.0)

    @property
    def encoder_weight(self) -> nn.Parameter:
        return self.W_enc

    def feature_params(self) -> dict[str, tuple[nn.Parameter, int]]:
        return {
            "W_enc": (self.W_enc, 0),
            "b_enc": (self.b_enc, 0),
            "threshold": (self.threshold, 0),  # resampled latents restart at theta = 0
            "W_dec": (self.W_dec, 1),
        }


def _jumprelu_problems(cfg):
    for name in ("bandwidth", "threshold_init"):
        if getattr(cfg.sae, name) <= 0:
            yield f"sae.{name}={getattr(cfg.sae, name)} must be positive"


JUMPRELU = Architecture(
    name="jumprelu",
    config=JumpReLUSAEConfig,
    model=JumpReLUSAE,
    penalties=(PenaltyKind.l0,),
    irrelevant_knobs=("penalty.kind", "penalty.decoder_norm_grad"),
    problems=_jumprelu_problems,
)
