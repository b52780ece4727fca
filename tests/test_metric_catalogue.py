"""The metric catalogue names exactly what a job records (sae_sweep/evaluation/catalogue.py)."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sae_sweep.data.hf_model import load_model  # noqa: E402
from sae_sweep.evaluation.catalogue import METRICS, names, primary_order  # noqa: E402
from sae_sweep.evaluation.lm import lm_metrics, sae_reconstruction  # noqa: E402
from sae_sweep.job import run_job  # noqa: E402
from sae_sweep.models.base import SAEOutput  # noqa: E402
from sae_sweep.record import layout  # noqa: E402

try:
    from conftest import small_config
    from data_fixtures import save_tiny_gpt2
except ImportError:
    from tests.conftest import small_config
    from tests.data_fixtures import save_tiny_gpt2


@pytest.fixture(scope="module")
def synthetic_job(tmp_path_factory):
    """(summary, record folder) of a tiny gated SAE trained on synthetic data: ground truth,
    no language model."""
    out = tmp_path_factory.mktemp("job")
    summary = run_job(small_config(train__steps=20, train__checkpoint_every=0), out)
    assert summary["status"] == "done"
    return summary, out


def test_a_job_records_every_catalogued_metric_and_each_has_its_source(synthetic_job):
    s, _ = synthetic_job
    missing = [m for m in METRICS if m not in s]
    assert not missing, f"catalogued but never recorded: {missing}"
    for m in names(source="activations") + names(source="ground_truth") + names(source="job"):
        assert s[m] is not None and math.isfinite(s[m]), m
    # no language model behind synthetic data: its metrics are recorded as absent
    assert all(s[m] is None for m in names(source="lm"))
    for m in names(required=True):
        assert math.isfinite(s[m]), m


def test_every_metric_the_evaluation_logs_is_catalogued(synthetic_job):
    _, out = synthetic_job
    lines = [json.loads(x) for x in (out / layout.METRICS).read_text().splitlines()]
    logged = {k.removeprefix("eval/") for line in lines for k in line if k.startswith("eval/")}
    # every held-out metric with a value (the LM's are None here, and not logged)
    assert logged == {*names(source="activations"), *names(source="ground_truth")}


class Identity(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return SAEOutput(x_hat=x.clone(), f=x, g=x)


def test_the_lm_splice_returns_exactly_the_catalogued_lm_metrics(tmp_path):
    folder = save_tiny_gpt2(tmp_path / "gpt2", n_layer=2, init_range=0.3)
    lm = load_model(str(folder), "cpu", "float32")
    ids = torch.randint(2, 33, (4, 16), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = 0
    out = lm_metrics(lm, "transformer.h.0", ids, sae_reconstruction(Identity(), 2.0), [0], 4)
    assert set(out) == set(names(source="lm"))
    assert out["loss_recovered"] == pytest.approx(1.0, abs=1e-5)


def test_every_compared_metric_has_a_direction_and_leads_in_primary_order():
    for m in names(compared=True):
        assert METRICS[m].higher_is_better is not None, m
    assert set(names(headline=True)) <= set(names(compared=True))
    assert set(primary_order()) <= set(names(compared=True))
    # the report's primary metric prefers loss recovered on LM data, else FVU
    assert primary_order()[:2] == ("loss_recovered", "fvu")
