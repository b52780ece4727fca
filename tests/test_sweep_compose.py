"""The sweep's caching config loader composes every job exactly as Hydra's own loader does."""

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf

from sae_sweep.main import CONF_DIR  # also registers schemas, resolvers and sweeps
from sae_sweep.sweep.running import compose
from sae_sweep.sweep.running.compose import CachingConfigLoader

# Jobs that differ in values only, in config-group choices (variant, data), and in both.
JOBS = [
    ["variant=gated_original", "lambda_multiplier=1.0", "seed=0"],
    ["variant=gated_original", "lambda_multiplier=4.0", "seed=2"],
    ["variant=gated_dn_frozen_live", "lambda_multiplier=1.0", "seed=0"],
    ["variant=topk", "lambda_multiplier=2.0", "seed=1", "data=activations", "data.path=/x"],
    ["variant=gated_original", "lambda_multiplier=1.0", "seed=0"],  # the first again
]


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    """(Hydra's loader, the caching loader, the sweep's master config)."""
    sweep_dir = tmp_path_factory.mktemp("sweep")  # composing never writes there
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra_loader = GlobalHydra.instance().config_loader()
        master = hydra_loader.load_configuration(
            "config", ["+sweep=quick", f"hydra.sweep.dir={sweep_dir}"], RunMode.MULTIRUN
        )
        yield hydra_loader, CachingConfigLoader(hydra_loader.get_search_path()), master


def _yaml(cfg) -> str:
    return OmegaConf.to_yaml(cfg)


def test_cached_composition_equals_hydras(loaders):
    hydra_loader, caching, master = loaders
    compose._MERGED.clear()
    for overrides in JOBS:
        expected = _yaml(hydra_loader.load_sweep_config(master, overrides))
        assert _yaml(caching.load_sweep_config(master, overrides)) == expected, overrides
    assert len(compose._MERGED) == 3  # one merge per distinct set of files, not per job


def test_a_composed_job_changed_in_place_leaves_the_next_one_alone(loaders):
    """Hydra applies each job's overrides to its config in place, and jobs change theirs
    (e.g. the job number): none of it may reach the cached files."""
    hydra_loader, caching, master = loaders
    first = caching.load_sweep_config(master, JOBS[0])
    first.train.steps = 1
    first.hydra.job.num = 99
    again = caching.load_sweep_config(master, JOBS[0])
    assert _yaml(again) == _yaml(hydra_loader.load_sweep_config(master, JOBS[0]))


def test_a_bad_override_fails_as_with_hydras_loader(loaders):
    _, caching, master = loaders
    caching.load_sweep_config(master, JOBS[0])  # its files are cached
    with pytest.raises(ConfigCompositionException, match="train.no_such_key"):
        caching.load_sweep_config(master, [*JOBS[0], "train.no_such_key=1"])
    with pytest.raises(ConfigCompositionException, match="no_such_variant"):
        caching.load_sweep_config(master, ["variant=no_such_variant"])
