"""Build a sweep's activation cache before its jobs start (docs/design.md, "Activation sources").

    python -m sae_sweep.data.build_cache data=hf data.model=gpt2 data.site=transformer.h.8 ...

Without it the sweep's first job builds the cache while the others wait on its lock.
"""

from __future__ import annotations

import logging

from ..config.schema import register_configs
from ..main import CONF_DIR
from .cache import open_cache


def main(argv: list[str] | None = None) -> None:
    """Build the cache named by `data=hf data.model=... [overrides]`, if no job has yet.

    Takes the same overrides as a sweep, so the sweep's jobs then find the cache ready (on
    SLURM this spares every job but the first from waiting on the lock with a GPU held).
    """
    import sys

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    register_configs()
    overrides = sys.argv[1:] if argv is None else argv
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        composed = compose(config_name="config", overrides=overrides)
    data = OmegaConf.to_object(composed.data)
    if getattr(data, "kind", None) != "hf":
        raise SystemExit("only data=hf has a cache to build: pass data=hf and its data.* keys")
    cache = open_cache(data)
    m = cache.manifest
    print(f"{cache.folder}: {m['n_train']:,} train + {m['n_eval']:,} eval activations, d={m['d']}")


if __name__ == "__main__":
    main()
