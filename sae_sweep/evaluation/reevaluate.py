"""Evaluate finished SAEs again from their records, after a metric's definition changed.

    python -m sae_sweep.evaluation.reevaluate SWEEP_DIR --metrics l2_ratio            # report
    python -m sae_sweep.evaluation.reevaluate SWEEP_DIR --metrics l2_ratio --write    # rewrite

Each finished job's SAE is rebuilt from its saved weights and evaluated again on its held-out
data: the same split (synthetic data draws it bit for bit; stored activations read it back).
The metrics not named must come out as recorded (within a relative 1e-5), which shows the
data and the evaluation are the ones the record was made with; a job where one differs is
reported and left as it is. With --write, only the named metrics of `summary.json` are
rewritten. Keys that the current config schema no longer has (a record of an older
sae-sweep) are left out of the rebuilt config.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from ..data import build_source
from ..record import layout
from ..record.atomic import atomic_write_json
from ..record.weights import load_sae
from ..sweep.planning.packing import config_schema, member_config
from . import evaluate
from .catalogue import names

TOLERANCE = 1e-5


def reevaluate(
    job_dir: Path, summary: dict[str, Any], metrics: list[str]
) -> tuple[dict[str, Any], list[str]]:
    """(the job's held-out metrics evaluated again, the checked metrics that differ from its
    `summary`)."""
    resolved = OmegaConf.to_container(OmegaConf.load(job_dir / layout.CONFIG), resolve=True)
    cfg = member_config(_known_keys(resolved))
    sae, _ = load_sae(job_dir)
    source = build_source(cfg.data, run_seed=cfg.seed, device=torch.device("cpu"))
    try:
        fresh = evaluate(sae, source, summary["norm_scale"], cfg.train.eval_batch_size)
    finally:
        source.close()
    # the catalogue's `checked` metrics confirm that the evaluation reproduces the record
    checked = [k for k in names(checked=True) if k not in metrics]
    differ = [k for k in checked if _differs(summary.get(k), fresh.get(k))]
    return fresh, differ


def _differs(recorded, fresh) -> bool:
    if recorded is None or fresh is None:
        return (recorded is None) != (fresh is None)
    if math.isnan(recorded) or math.isnan(fresh):
        return math.isnan(recorded) != math.isnan(fresh)
    return abs(recorded - fresh) > TOLERANCE * max(abs(recorded), 1e-12)


def _known_keys(resolved: dict[str, Any]) -> dict[str, Any]:
    """`resolved` without the keys its current schema lacks."""
    return _prune(resolved, OmegaConf.to_container(config_schema(resolved)))


def _prune(value, schema):
    if not isinstance(value, dict) or not isinstance(schema, dict):
        return value
    return {k: _prune(v, schema[k]) for k, v in value.items() if k in schema}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("dirs", nargs="+", type=Path, help="sweep folders or job folders")
    p.add_argument("--metrics", nargs="+", required=True, help="the metrics to evaluate again")
    p.add_argument("--write", action="store_true", help="rewrite them in summary.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    jobs = [(d, s) for root in args.dirs for d, s in layout.summaries(root)]
    done = [(d, s) for d, s in jobs if s.get("status") == "done"]
    refused = 0
    for job_dir, summary in done:
        fresh, differ = reevaluate(job_dir, summary, args.metrics)
        if differ:
            refused += 1
            print(f"{job_dir}: {', '.join(differ)} no longer reproduce the record: left as is")
            continue
        changes = {m: (summary.get(m), fresh.get(m)) for m in args.metrics}
        print(f"{job_dir}: " + ", ".join(f"{m} {a} -> {b}" for m, (a, b) in changes.items()))
        if args.write:
            rewritten = {m: new for m, (_, new) in changes.items()}
            atomic_write_json(job_dir / layout.SUMMARY, {**summary, **rewritten})
    verb = "rewritten" if args.write else "to rewrite (--write)"
    print(f"{len(done) - refused} of {len(done)} finished jobs {verb}; {refused} left as is")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
