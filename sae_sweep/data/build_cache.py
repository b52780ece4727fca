"""Build a sweep's activation cache before its jobs start (docs/design.md, "Activation sources").

    python -m sae_sweep.data.build_cache data=hf data.model=gpt2 data.site=transformer.h.8 ...
    python -m sae_sweep.data.build_cache data=synthsaebench [data.n_train=...]
    python -m sae_sweep.data.build_cache <the same overrides> --verify

Without it the sweep's first job builds the cache while the others wait on its lock.
`--verify` re-hashes every file of an existing cache against its manifest (jobs only check
that the files exist with their recorded sizes): after copying a cache, or when storage is
suspect.
"""

from __future__ import annotations

import logging
import time

import torch

from ..config_store import register_configs
from ..main import CONF_DIR
from .cache import open_cache, verify_files
from .source import DataError
from .synthsaebench import open_synth_cache


def main(argv: list[str] | None = None) -> None:
    """Build the cache named by `data=hf data.model=... [overrides]` (or `data=synthsaebench`:
    its model, then its samples), if no job has yet.

    Takes the same overrides as a sweep, so the sweep's jobs then find the cache ready (on
    SLURM this spares every job but the first from waiting on the lock with a GPU held).
    """
    import sys

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    register_configs()
    args = sys.argv[1:] if argv is None else argv
    verify = "--verify" in args
    overrides = [a for a in args if a != "--verify"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        composed = compose(config_name="config", overrides=overrides)
    data = OmegaConf.to_object(composed.data)
    kind = getattr(data, "kind", None)
    if kind not in ("hf", "synthsaebench"):
        raise SystemExit("only data=hf and data=synthsaebench have a cache to build: pass one "
                         "of them and its data.* keys")  # fmt: skip
    if verify:
        data.verify_hashes = False  # hashed once below, with the timing
    if kind == "hf":
        cache = open_cache(data)
    else:  # built where the jobs will sample it: data.sample_device=auto means the GPU here
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        cache = open_synth_cache(data, device)
    m = cache.manifest
    print(f"{cache.folder}: {m['n_train']:,} train + {m['n_eval']:,} eval activations, d={m['d']}")
    if verify and not cache.built:  # a fresh build hashed what it wrote
        t0 = time.perf_counter()
        try:
            size = verify_files(cache.folder, m, hashes=True)
        except DataError as exc:
            raise SystemExit(f"verification failed: {exc}") from exc
        wall = time.perf_counter() - t0
        print(f"verified: every file matches its sha256 ({size / 1e9:.2f} GB in {wall:.1f} s)")


if __name__ == "__main__":
    main()
