"""Evaluating finished SAEs again from their records (a metric's definition changed)."""

import json

from conftest import small_config

from sae_sweep.evaluation import reevaluate
from sae_sweep.job import run_job
from sae_sweep.record import layout


def _edit_summary(job_dir, **changes):
    path = job_dir / layout.SUMMARY
    summary = json.loads(path.read_text())
    path.write_text(json.dumps({**summary, **changes}))
    return summary


def test_a_named_metric_is_rewritten_when_the_others_reproduce(tmp_path, capsys):
    job = tmp_path / "sweep" / "job0"
    run_job(small_config(), job)
    before = _edit_summary(job, l2_ratio=6e9)  # as recorded by a faulty metric
    config = job / layout.CONFIG  # an older version's record: a key renamed since
    config.write_text(config.read_text().replace("train:\n", "train:\n  tf32: false\n", 1))
    assert reevaluate.main([str(tmp_path / "sweep"), "--metrics", "l2_ratio"]) == 0
    assert json.loads((job / layout.SUMMARY).read_text())["l2_ratio"] == 6e9  # report only
    assert reevaluate.main([str(tmp_path / "sweep"), "--metrics", "l2_ratio", "--write"]) == 0
    after = json.loads((job / layout.SUMMARY).read_text())
    assert after["l2_ratio"] == before["l2_ratio"]
    assert {k: v for k, v in after.items() if k != "l2_ratio"} == {
        k: v for k, v in before.items() if k != "l2_ratio"
    }


def test_a_record_the_evaluation_no_longer_reproduces_is_left_as_is(tmp_path, capsys):
    job = tmp_path / "job0"
    run_job(small_config(), job)
    _edit_summary(job, l2_ratio=6e9, fvu=0.5)  # another metric differs: other data or code
    assert reevaluate.main([str(job), "--metrics", "l2_ratio", "--write"]) == 1
    assert json.loads((job / layout.SUMMARY).read_text())["l2_ratio"] == 6e9
    assert "fvu no longer reproduce" in capsys.readouterr().out
