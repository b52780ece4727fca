"""`sae-export` over a real sweep: --frontier writes exactly the frontier runs; SAELens opens
every exported SAE."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import sae_lens  # a test dependency (the dev extra): these tests never skip
import torch

from sae_sweep.export.cli import main
from sae_sweep.record.weights import load_sae


@pytest.fixture(scope="module")
def sweep(finished_sweep, tmp_path_factory):
    """A copy of the shared finished sweep (conftest: 2 variants x 3 lambdas x 2 seeds)."""
    d = tmp_path_factory.mktemp("sweep") / "s"
    shutil.copytree(finished_sweep, d)
    # A few steps trace monotone frontiers; make one point (both seeds) clearly dominated,
    # so that "exactly the frontier" has something to leave out.
    summaries = [json.loads(p.read_text()) for p in d.rglob("summary.json")]
    worst = {k: max(s[k] for s in summaries) + 1.0 for k in ("l0", "fvu")}
    for p in d.rglob("summary.json"):
        s = json.loads(p.read_text())
        if s["variant"] == "gated_original" and s["knobs"]["lambda_multiplier"] == 1.0:
            p.write_text(json.dumps({**s, **worst}))
    return d


def _export(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`sae-export ARGS` in-process (the console script is `main`); stdout/stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse errors
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _points(sweep: Path) -> pd.DataFrame:
    """(variant, lambda) points, seeds averaged, straight from the job records."""
    rows = []
    for s in sweep.rglob("summary.json"):
        summary = json.loads(s.read_text())
        if summary.get("status") == "done":
            lam = summary["knobs"]["lambda_multiplier"]
            rows.append({"variant": summary["variant"], "lam": lam, "l0": summary["l0"],
                         "fvu": summary["fvu"], "job": str(s.parent)})  # fmt: skip
    df = pd.DataFrame(rows)
    return df.groupby(["variant", "lam"]).agg(l0=("l0", "mean"), fvu=("fvu", "mean"),
                                              jobs=("job", list)).reset_index()  # fmt: skip


def _dominated(p, others) -> bool:
    better = (
        (others.l0 <= p.l0) & (others.fvu <= p.fvu) & ((others.l0 < p.l0) | (others.fvu < p.fvu))
    )
    return bool(better.any())


def test_frontier_export_writes_exactly_the_frontier_runs(sweep, tmp_path):
    out = tmp_path / "out"
    r = _export(str(sweep), str(out), "--frontier", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    index = pd.read_csv(out / "index.csv")
    exported = {str(Path(p)) for p in index["path"]}

    points = _points(sweep)
    expected = set()
    for _, g in points.groupby("variant"):
        for _, p in g.iterrows():
            if not _dominated(p, g):
                expected |= set(p.jobs)
    assert 0 < len(expected) <= 10, "a frontier that is everything or nothing tests nothing"
    assert exported == expected
    assert sorted(index["folder"]) == sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(set(index["folder"])) == len(index)  # one readable folder per run
    assert all("seed-" in f and "lambda_multiplier-" in f for f in index["folder"])

    # every exported SAE opens in SAELens and reproduces sae-sweep's output on raw inputs
    for folder, path in zip(index["folder"], index["path"], strict=True):
        ours, config = load_sae(path)
        s = config["norm_scale"]
        theirs = sae_lens.SAE.load_from_disk(str(out / folder))
        x = torch.randn(64, ours.d_in) / s
        with torch.no_grad():
            torch.testing.assert_close(theirs(x), ours(x * s).x_hat / s, atol=1e-5, rtol=1e-5)


def test_all_exports_every_finished_job_and_bad_calls_say_why(sweep, tmp_path):
    r = _export(str(sweep), str(tmp_path / "all"), "--all", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tmp_path / "all" / "index.csv")) == 12

    r = _export(str(sweep), str(tmp_path / "x"), cwd=tmp_path)
    assert r.returncode == 2 and "--frontier" in r.stderr and "--all" in r.stderr
    r = _export(
        str(sweep), str(tmp_path / "x"), "--frontier", "--metric", "mmcs_typo", cwd=tmp_path
    )
    assert r.returncode == 2 and "mmcs_typo" in r.stderr and "fvu" in r.stderr

    one = next(sweep.rglob("sae_config.json")).parent
    r = _export(str(one), str(tmp_path / "one"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "one" / "cfg.json").is_file()


def test_folder_names_name_a_controlled_run_by_its_target():
    """A run placed by L0 control keeps its preset's lambda multiplier (the same for every
    target): its folder is named by its target, and a grid variant's by its multiplier, with
    no job folder appended to names that are already distinct."""
    from analysis.variants import LABEL
    from sae_sweep.export.cli import folder_names

    def _run(variant, multiplier, target, seed, job):
        return {LABEL: variant, "lambda_multiplier": multiplier, "train.l0_target": target,
                "seed": seed, "path": f"s/{variant}/{job}"}  # fmt: skip

    runs = pd.DataFrame(
        [_run("gated_original", 1.0, t, s, f"target{t}_seed{s}") for t in (8, 16) for s in (0, 1)]
        + [_run("gated_dn_frozen_live", m, None, 0, f"lam{m}_seed0") for m in (1.0, 2.0)]
    )
    assert folder_names(runs) == [
        "gated_original__l0_target-8__seed-0",
        "gated_original__l0_target-8__seed-1",
        "gated_original__l0_target-16__seed-0",
        "gated_original__l0_target-16__seed-1",
        "gated_dn_frozen_live__lambda_multiplier-1__seed-0",
        "gated_dn_frozen_live__lambda_multiplier-2__seed-0",
    ]
    twins = pd.concat([runs.iloc[:1], runs.iloc[:1].assign(path="s/elsewhere")])
    first, second = folder_names(twins)  # the knobs do not tell them apart: the job folder does
    assert first.endswith("__seed-0__target8_seed0") and second.endswith("__seed-0__elsewhere")
