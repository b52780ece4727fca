"""Copy the run tables of finished result sweeps into docs/results/, ready to commit.

    python docs/results/collect.py                      # every sweep under runs/results
    python docs/results/collect.py --runs DIR NAME ...  # some sweeps of another folder

For each sweep folder RUNS/NAME this writes docs/results/NAME/runs.csv (one row per SAE:
its knobs, status and metrics, read from the job records) and targets.json (the target-L0
sweeper's outcome). Job folders become paths relative to the sweep folder, and the launch
folder is written as `.`, so the tables name no folder of the machine they were made on.
`python docs/results/rebuild.py` then rebuilds the page from these tables alone.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pandas as pd

from analysis.load import load_runs
from analysis.pipeline import read_targets
from sae_sweep.record import layout

HERE = Path(__file__).resolve().parent


def portable(runs: pd.DataFrame, sweep_dir: Path) -> pd.DataFrame:
    """`runs` with every absolute path of this machine made relative."""
    runs = runs.copy()
    root, cwd = str(sweep_dir.resolve()), os.getcwd()
    runs["path"] = [
        Path(p).resolve().relative_to(root).as_posix() if isinstance(p, str) else p
        for p in runs["path"]
    ]

    def scrub(v):
        if not isinstance(v, str):
            return v
        return v.replace(root, "<sweep>").replace(cwd + os.sep, "").replace(cwd, ".")

    for c in runs.columns:
        if not pd.api.types.is_numeric_dtype(runs[c]):
            runs[c] = runs[c].map(scrub)
    return runs.sort_values("run_id", kind="stable").reset_index(drop=True)


def collect(sweep_dir: Path, out_dir: Path) -> int:
    runs = portable(load_runs(sweep_dir), sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out_dir / "runs.csv", index=False)
    targets = read_targets(sweep_dir)
    if targets is not None:
        text = json.dumps(targets, indent=1, sort_keys=True)
        text = text.replace(str(sweep_dir.resolve()), "<sweep>")
        (out_dir / "targets.json").write_text(text + "\n")
    return len(runs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="sweep folder names (default: every one)")
    p.add_argument("--runs", default="runs/results", help="folder of the sweep folders")
    p.add_argument("--out", default=str(HERE), help="where NAME/runs.csv go")
    args = p.parse_args(argv)
    runs = Path(args.runs)
    names = args.names or sorted(d.parent.name for d in runs.glob(f"*/{layout.MANIFEST}"))
    for name in names:
        n = collect(runs / name, Path(args.out) / name)
        print(f"{name}: {n} runs -> {Path(args.out) / name / 'runs.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
