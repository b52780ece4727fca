"""Hydra entry point: `sae-sweep [overrides]` (or `python -m sae_sweep`) trains one SAE.

With `--multirun` (or a sweep file) Hydra's launcher runs one such job per grid point.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .config.schema import Config, register_configs
from .config.validation import ConfigError
from .job import run_job

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
log = logging.getLogger("sae_sweep")

register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def hydra_main(dcfg: DictConfig) -> float | None:
    cfg: Config = OmegaConf.to_object(dcfg)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = run_job(cfg, out_dir)
    except ConfigError as exc:
        log.error("%s", exc)
        raise
    log.info("record: %s", out_dir)
    keys = ("l0", "mse", "fvu", "explained_variance", "dead_fraction", "shrinkage", "mmcs",
            "frac_recovered", "mmcs_random", "loss_recovered", "delta_lm_loss",
            "activations_per_s", "wall_s")  # fmt: skip
    log.info(
        "eval: %s",
        "  ".join(f"{k}={summary[k]:.4g}" for k in keys if summary.get(k) is not None),
    )
    return summary.get("fvu")


def main() -> None:
    hydra_main()


if __name__ == "__main__":
    sys.exit(main())
