"""Rebuild docs/results.md, and every report, table and plot under docs/results/, from the
committed run tables (docs/results/<sweep>/runs.csv and targets.json) alone.

    python docs/results/rebuild.py              # rewrite the page, reports, tables and plots
    python docs/results/rebuild.py --check      # exit 1 if the page or a report would change
    python docs/results/rebuild.py --no-plots   # text only (faster)

The page is docs/results/page.md with its `{{...}}` fields filled in; the claims it tests
are docs/results/claims.yaml. How both are read: `analysis.claims` and
`analysis.results_page`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.results_page import ResultsFolder, rebuild, stale

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a rebuild would change text")
    p.add_argument("--no-plots", action="store_true", help="leave the plots as they are")
    p.add_argument("--page-only", action="store_true", help="leave the sweep reports out")
    args = p.parse_args(argv)
    folder = ResultsFolder.load(HERE)
    if args.check:
        changed = stale(folder, reports=not args.page_only)
        for path in changed:
            print(f"{path} is out of date: run python docs/results/rebuild.py", file=sys.stderr)
        if not changed:
            what = "" if args.page_only else ", and the reports"
            print(f"{folder.page.name} is up to date{what}")
        return 1 if changed else 0
    rebuild(folder, plots=not args.no_plots, reports=not args.page_only)
    reports = "" if args.page_only else f" and {len(folder.sweeps)} sweep reports"
    print(f"rebuilt {folder.page}{reports}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
