"""The input pipeline off the training thread (data/prefetch.py), and batches unchanged by it.

The golden values were computed by the reader and the synthetic source before windows were
prepared in the background and synthetic batches drawn on the device: a resumed run, and
every result recorded before, sees the same batches bit for bit."""

from __future__ import annotations

import contextlib
import hashlib
import threading

import numpy as np
import pytest
import torch

from sae_sweep.config.schema import ActivationsDataConfig, SyntheticDataConfig
from sae_sweep.data import DataError, SyntheticData
from sae_sweep.data.prefetch import THREAD_NAME
from sae_sweep.data.reader import Rows, Shard, ShuffledActivations
from sae_sweep.job import run_job
from sae_sweep.training.loop import TrainingRun
from tests.conftest import small_config

CPU = torch.device("cpu")
# rows (= value / 4 of column 0) of steps 0, 3, 28, 29 and 61: 32-row batches over 900 rows
# in windows of 128, so batches cross windows (step 28) and epochs (steps 28 and 56)
GOLDEN_ROWS = {
    0: [227, 582, 799, 418, 426, 364, 2, 484, 893, 226, 502, 593, 3, 86, 669, 41, 735, 821, 344,
        40, 468, 272, 143, 896, 419, 341, 141, 774, 773, 345, 403, 273],
    3: [544, 772, 892, 296, 118, 862, 550, 87, 285, 510, 365, 619, 885, 412, 871, 402, 551, 512,
        668, 775, 782, 69, 456, 609, 563, 142, 592, 158, 845, 651, 373, 507],
    28: [586, 848, 849, 587, 671, 549, 166, 573, 894, 572, 694, 466, 857, 869, 701, 330, 715,
         851, 600, 749, 559, 595, 280, 650, 509, 134, 584, 859, 435, 193, 714, 585],
    29: [281, 467, 815, 858, 810, 640, 167, 674, 868, 660, 548, 51, 536, 152, 676, 508, 651, 76,
         77, 571, 434, 752, 328, 708, 74, 473, 830, 677, 820, 872, 873, 153],
    61: [448, 166, 192, 600, 764, 784, 881, 718, 707, 67, 452, 292, 724, 525, 128, 638, 173,
         793, 559, 54, 171, 825, 460, 461, 496, 13, 66, 170, 597, 561, 560, 739],
}  # fmt: skip
GOLDEN_SYNTHETIC = {0: "f9056d94aae0f00a", 5: "a97e0efdd5b3b5b8", 1234: "79d393a825723c87",
                    "eval": "eab656aee0101a57"}  # fmt: skip


def _source(tmp_path, dtype=np.float32, **kw) -> ShuffledActivations:
    """1000 rows of d=4 whose row r holds 4r..4r+3, in two shards; the last 100 held out."""
    data = np.arange(1000 * 4, dtype=np.float32).reshape(1000, 4).astype(dtype)
    np.save(tmp_path / "a.npy", data[:300])
    np.save(tmp_path / "b.npy", data[300:])
    shards = [Shard(tmp_path / "a.npy"), Shard(tmp_path / "b.npy")]
    return ShuffledActivations(Rows(shards, 0, 900), Rows(shards, 900, 1000), run_seed=5,
                               device=CPU, buffer=128, **kw)  # fmt: skip


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


def _digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16]


def test_stored_activation_batches_are_the_ones_read_before(tmp_path):
    with contextlib.closing(_source(tmp_path)) as src:
        for step, rows in GOLDEN_ROWS.items():
            x = src.train_batch(step, 32)
            assert (x[:, 0] / 4).long().tolist() == rows, step
            assert torch.equal(x, torch.from_numpy(np.array(rows))[:, None] * 4.0 + torch.arange(4))
        # out of order (a resume, resampling's look back) reads the same rows
        assert (src.train_batch(3, 32)[:, 0] / 4).long().tolist() == GOLDEN_ROWS[3]


def test_synthetic_batches_are_the_ones_drawn_before():
    cfg = SyntheticDataConfig(d=8, n_features=24, mean_active=3, n_eval=64, noise_std=0.1)
    src = SyntheticData(cfg, run_seed=3, device=CPU)
    for step in (1234, 0, 5):  # any order: each step has its own seed
        assert _digest(src.train_batch(step, 6)) == GOLDEN_SYNTHETIC[step], step
    assert _digest(torch.cat(list(src.eval_batches(64)))) == GOLDEN_SYNTHETIC["eval"]


def test_a_worker_draws_a_synthetic_process_and_its_held_out_split_once():
    # A sweep worker's next job on the same data reuses them; other data draws its own.
    cfg = SyntheticDataConfig(d=8, n_features=24, mean_active=3, n_eval=64, seed=41)
    a = SyntheticData(cfg, run_seed=0, device=CPU)
    b = SyntheticData(SyntheticDataConfig(**vars(cfg)), run_seed=1, device=CPU)
    assert b._eval is a._eval and b.ground_truth is a.ground_truth
    assert not torch.equal(a.train_batch(0, 6), b.train_batch(0, 6))  # its own run seed
    other = SyntheticData(SyntheticDataConfig(**{**vars(cfg), "seed": 42}), 0, device=CPU)
    assert not torch.equal(other._eval, a._eval)
    assert not torch.equal(other.ground_truth, a.ground_truth)


def test_the_next_window_is_read_on_the_background_thread(tmp_path, monkeypatch):
    readers: list[str] = []
    real = Rows.read_into

    def spy(self, out, start, stop):
        readers.append(threading.current_thread().name)
        real(self, out, start, stop)

    monkeypatch.setattr(Rows, "read_into", spy)
    src = _source(tmp_path)
    for step in range(4 * 28):  # four epochs of 7 windows
        src.train_batch(step, 32)
        readers.append("|")
    src.close()
    assert not _prefetch_threads()
    windows = "".join("T" if r == "|" else ("B" if r.startswith(THREAD_NAME) else "M")
                      for r in readers).split("T")  # fmt: skip
    first, rest = windows[0], "".join(windows[1:])
    assert first.startswith("M")  # the first window: nobody could read it ahead
    assert "M" not in rest  # every later one, next epoch's included: the background thread


def test_a_read_error_reaches_the_training_thread_and_the_thread_ends(tmp_path, monkeypatch):
    src = _source(tmp_path)
    src.train_batch(0, 32)  # window 0 read; window 1 is being read in the background
    with contextlib.suppress(Exception):
        src.loader._pending[1].result()
    error = DataError("activation shard b.npy cannot be read (OSError: input/output error)")

    def broken(self, out, start, stop):
        raise error

    monkeypatch.setattr(Rows, "read_into", broken)
    for step in range(1, 4):  # still window 0, read before the failure
        src.train_batch(step, 32)
    src.train_batch(4, 32)  # window 1, prefetched before the failure: fine
    with pytest.raises(DataError, match="b.npy cannot be read") as raised:
        src.train_batch(8, 32)  # window 2, read in the background: its error, raised here
    assert raised.value is error
    src.close()
    assert not _prefetch_threads()


def test_an_interrupted_job_stops_its_reader(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM's SystemExit) during training: the job ends with no thread left."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "acts.npy", rng.standard_normal((3000, 16)).astype(np.float32))
    cfg = small_config()
    cfg.data = ActivationsDataConfig(path=str(tmp_path / "acts.npy"), n_eval=256,
                                     shuffle_buffer=512)  # fmt: skip
    real = TrainingRun.step

    def interrupted(self, step, batch):
        if step == 7:
            raise KeyboardInterrupt
        real(self, step, batch)

    monkeypatch.setattr(TrainingRun, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, tmp_path / "run")
    assert not _prefetch_threads()
