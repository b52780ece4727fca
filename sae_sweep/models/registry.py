"""The architecture registry: `sae.kind` -> everything the pipeline needs to know about it.

The training step, `build_sae`, `load_sae`, validation, the benchmark and the tests look an
architecture up here; nothing else in the code names one (`sae.kind` is a plain string,
checked against this registry). A plug-in calls `register_architecture(Architecture(...))`
before `sae_sweep.config_store.register_configs()` stores the schemas in Hydra's ConfigStore
(`sae_sweep.main` calls it when imported; call it again after a later registration), and adds
`conf/sae/<name>.yaml` (`defaults: [<name>_schema]`) and `conf/penalty/default_for/<name>.yaml`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config.schema import PenaltyKind, SAEConfig
from ..config.validation import ConfigError

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
    """Make `sae.kind=<arch.name>` buildable, trainable, loadable and comparable.

    A name names one architecture: registering another under a taken name raises. The same
    architecture again is accepted (the same object, or the same definition executed again
    by a module reload: its model class has the same module and name) and replaces the old.
    """
    old = ARCHITECTURES.get(arch.name)
    if old is not None and old is not arch and _definition(old) != _definition(arch):
        raise ValueError(
            f"an architecture named {arch.name!r} is already registered (model "
            f"{_definition(old)}); {_definition(arch)} cannot take its name. Fix: register the "
            "plug-in under a name of its own (Architecture.name, its config's `kind` default "
            "and conf/sae/<name>.yaml)"
        )
    ARCHITECTURES[arch.name] = arch
    return arch


def _definition(arch: Architecture) -> str:
    return f"{arch.model.__module__}.{arch.model.__qualname__}"


def architecture(kind: str) -> Architecture:
    """The registered architecture of a `sae.kind` value."""
    try:
        return ARCHITECTURES[kind]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ConfigError(
            f"sae.kind={kind!r} is not a registered architecture (registered: {known}). "
            "Fix: sae=<one of them>, or register a plug-in with "
            "sae_sweep.models.register_architecture before the config is composed"
        ) from None


def l0_knobs() -> tuple[str, ...]:
    """The config keys that set L0 directly, over every registered architecture (TopK's and
    BatchTopK's `sae.k`): the frontier axis of those architectures, instead of lambda."""
    return tuple(sorted({a.l0_knob for a in ARCHITECTURES.values() if a.l0_knob is not None}))
