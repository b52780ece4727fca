"""The architecture registry: `sae.kind` -> everything the pipeline needs to know about it.

The training step, `build_sae`, `load_sae`, validation, the benchmark and the tests look an
architecture up here; nothing else in the code names one. A plug-in calls
`register_architecture(Architecture(...))` before the config is composed (this also stores
its schema as `sae/<name>_schema` in Hydra's ConfigStore), and adds `conf/sae/<name>.yaml`
(`defaults: [<name>_schema]`) and `conf/penalty/default_for/<name>.yaml`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore

from ..config.schema import PenaltyKind, SAEConfig

if TYPE_CHECKING:
    from .base import SparseAutoencoder

Kernel = Callable[..., Any]
"""fn(sae, x, penalty, coefficient, workspace) -> (LossTerms, (M,) firing counts), with the
loss and gradients of the architecture's reference loss (see `sae_sweep/kernels`)."""


def _no_problems(cfg) -> Iterable[str]:
    return ()


@dataclass(frozen=True)
class Architecture:
    name: str
    """The value of `sae.kind`."""
    config: type[SAEConfig]
    """Its config schema (the `sae` group's `<name>_schema`)."""
    model: type[SparseAutoencoder]
    """The nn.Module: built as model(d_in, d_sae, cfg, generator)."""
    penalties: tuple[PenaltyKind, ...]
    """The penalty kinds that mean something for it; validation rejects the others."""
    kernels: dict[str, Kernel] = field(default_factory=dict)
    """Fast loss paths it has ("dense", "sparse"); none = the reference loss with autograd."""
    l0_knob: str | None = None
    """The config key that sets L0 directly (`sae.k`), or None when lambda sets it."""
    irrelevant_knobs: tuple[str, ...] = ()
    """Recipe knobs (dotted config keys) that have no effect on it: left out of comparisons."""
    problems: Callable[[Any], Iterable[str]] = _no_problems
    """Its validation rules: fn(Config) yields one message per problem, naming key and fix."""


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> Architecture:
    """Make `sae.kind=<arch.name>` buildable, trainable, loadable and comparable."""
    ARCHITECTURES[arch.name] = arch
    ConfigStore.instance().store(group="sae", name=f"{arch.name}_schema", node=arch.config)
    return arch


def architecture(kind) -> Architecture:
    """The registered architecture of a `sae.kind` value (an SAEKind or a string)."""
    name = getattr(kind, "value", kind)
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise KeyError(f"sae.kind={name!r} is not a registered architecture ({known})") from None
