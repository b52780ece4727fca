"""Composing a sweep's jobs: the config files merged once per defaults list, not once per job.

Hydra composes every job of a multirun from its files again: in the launching process, where
the sweeper checks and packs each batch, and in the worker that runs the job. Each composition
reads and parses every YAML file of the job's defaults list and merges them, about 0.25 s of
CPU, as long as a short job's evaluation. The jobs of a sweep mostly differ in values (lambda,
seed), not in the files they are made of: `CachingConfigLoader` keeps the merged files per
defaults list and gives each job a copy, to which Hydra applies the job's own overrides as
before. The composed configs are the same as Hydra's own (tests/test_sweep_compose.py).

The sweeper (hydra_plugins/sae_sweep_sweeper/) hands this loader to the launcher, which ships it
to every job; the cache is per process, so a worker that runs many jobs composes each set of
files once.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.default_element import ResultDefault
from hydra.core.utils import HydraContext

# (search path, defaults list) -> the merged files. Process-wide, because launchers pickle the
# loader into each job: an attribute would arrive empty every time.
_MERGED: OrderedDict[tuple, Any] = OrderedDict()
_MAX_ENTRIES = 64  # a sweep has one entry per combination of config-group choices


class CachingConfigLoader(ConfigLoaderImpl):
    """Hydra's config loader, merging each distinct defaults list's files only once."""

    def _compose_config_from_defaults_list(self, defaults: list[ResultDefault], repo) -> Any:
        key = (self._search_path_key(), tuple(_default_key(d) for d in defaults))
        merged = _MERGED.get(key)
        if merged is None:
            merged = super()._compose_config_from_defaults_list(defaults, repo)
            _MERGED[key] = merged
            if len(_MERGED) > _MAX_ENTRIES:
                _MERGED.popitem(last=False)
        else:
            _MERGED.move_to_end(key)
        return copy.deepcopy(merged)  # Hydra then applies the job's overrides to it in place

    def _search_path_key(self) -> tuple:
        return tuple((e.provider, e.path) for e in self.get_search_path().get_path())


def _default_key(default: ResultDefault) -> tuple:
    return (default.config_path, default.parent, default.package, default.is_self,
            default.primary)  # fmt: skip


def caching_context(hydra_context: HydraContext) -> HydraContext:
    """The same context with a `CachingConfigLoader` over the same config search path."""
    loader = CachingConfigLoader(hydra_context.config_loader.get_search_path())
    return HydraContext(config_loader=loader, callbacks=hydra_context.callbacks)
