"""Hydra entry point: `sae-sweep [overrides]` (or `python -m sae_sweep`) trains one SAE.

With a sweep file (`sae-sweep +sweep=NAME`, files in `sweeps/`) or `--multirun`, Hydra's
launcher runs one job per grid point through `sweep.run_sweep_job`: finished jobs are
skipped, interrupted ones resumed, and a failing job is recorded without stopping the others.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .config.schema import LaunchConfig, job_config
from .config.validation import ConfigError
from .config_store import register_configs
from .evaluation.catalogue import names
from .job import run_job
from .record.config_match import ConfigMismatchError, discard_record
from .resources import CONF_DIR
from .sweep import register_resolvers, register_sweeps, run_sweep_job, take_exit_code
from .sweep.running.task import skip_collection_at_exit
from .sweep.running.threads import apply_thread_budget
from .training.interruption import StoppedBySignal

log = logging.getLogger("sae_sweep")

register_configs()
register_resolvers()
register_sweeps()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def hydra_main(dcfg: DictConfig) -> float | dict | None:
    cfg: LaunchConfig = OmegaConf.to_object(dcfg)
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    if hc.mode == RunMode.MULTIRUN:
        return run_sweep_job(
            cfg, out_dir, job_num=hc.job.num, subdir=hc.sweep.subdir, sweep_dir=Path(hc.sweep.dir)
        )
    apply_thread_budget(cfg.threads)
    if cfg.restart:
        removed = discard_record(out_dir)
        log.info("restart=true: deleted %s in %s", ", ".join(removed) or "nothing", out_dir)
    try:
        summary = run_job(job_config(cfg), out_dir)
    except (ConfigError, ConfigMismatchError) as exc:
        # A refusal is its message and fix on stderr, not a crash: no traceback (Hydra prints
        # one for any exception it catches; it lets SystemExit through).
        sys.exit(f"sae-sweep refuses to run: {exc}")
    log.info("record: %s", out_dir)
    shown = [k for k in names(printed=True) if summary.get(k) is not None]
    log.info("eval: %s", "  ".join(f"{k}={summary[k]:.4g}" for k in shown))
    return summary.get("fvu")


RETIRED_PREFIXES = {"hydra.callbacks.sweep.": "hydra.sweeper."}
"""Override prefixes of earlier releases -> where those options live now (the end-of-sweep
options moved from a Hydra callback into the sweeper)."""


def retired_overrides(arguments: list[str]) -> list[str]:
    """One message per command-line override that names a retired option, with its new key."""
    problems = []
    for argument in arguments:
        key = argument.lstrip("+~").split("=", 1)[0]
        for old, new in RETIRED_PREFIXES.items():
            if key.startswith(old):
                problems.append(f"`{key}` moved: write `{new}{key[len(old) :]}`")
    return problems


def main() -> None:
    if problems := retired_overrides(sys.argv[1:]):
        sys.exit("sae-sweep: option no longer exists: " + "; ".join(problems))
    skip_collection_at_exit()  # the jobs of a sweep's workers call it too
    try:
        hydra_main()
    # SIGTERM / SIGINT: to a sweep (its records are written), to a single run (`interrupted`)
    except StoppedBySignal as stop:
        take_exit_code()
        sys.exit(stop.exit_code)
    finally:  # taken also when Hydra exits on an error: a later run in this process starts clean
        code = take_exit_code()
    # A sweep contains each job's failure to run the others; its exit status still tells
    # the shell (or the scheduler) that some job has no result.
    if code:
        sys.exit(code)


if __name__ == "__main__":
    sys.exit(main())
