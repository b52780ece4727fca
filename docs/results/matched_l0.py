"""Metrics at matched L0 from a sweep's runs table, for docs/results.md.

For each variant (and each extra column given with --by) and each seed, the metric is
interpolated linearly in log L0 between that seed's runs (never extrapolated), then the mean
and std over seeds are printed at each target L0.

    python docs/results/matched_l0.py docs/results/gated_penalty_ablation/tables/runs.csv \
        --metrics fvu shrinkage --l0 10 30 100
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def matched(runs: pd.DataFrame, metric: str, l0s: list[float], by: list[str]) -> pd.DataFrame:
    rows = []
    done = runs[runs["status"] == "done"]
    for key, g in done.groupby(by):
        key = key if isinstance(key, tuple) else (key,)
        for target in l0s:
            vals = []
            for _, s in g.groupby("seed"):
                s = s.sort_values("l0")
                x, y = np.log(s["l0"].to_numpy()), s[metric].to_numpy()
                t = np.log(target)
                if len(s) >= 2 and x[0] <= t <= x[-1]:
                    vals.append(float(np.interp(t, x, y)))
            rows.append(
                {
                    **dict(zip(by, key, strict=True)),
                    "L0": target,
                    "seeds": len(vals),
                    metric: np.mean(vals) if vals else np.nan,
                    "std": np.std(vals, ddof=1) if len(vals) > 1 else np.nan,
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs_csv")
    p.add_argument("--metrics", nargs="+", default=["fvu"])
    p.add_argument("--l0", nargs="+", type=float, default=[10, 30, 100])
    p.add_argument("--by", nargs="+", default=["variant"])
    a = p.parse_args()
    runs = pd.read_csv(a.runs_csv)
    for m in a.metrics:
        print(f"\n{m} at matched L0 (seed mean, std over seeds)")
        t = matched(runs, m, a.l0, a.by)
        print("| " + " | ".join(t.columns) + " |")
        print("|" + "---|" * len(t.columns))
        for r in t.itertuples(index=False):
            print(
                "| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r) + " |"
            )


if __name__ == "__main__":
    main()
