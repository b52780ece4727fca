"""`data=synthsaebench`: activations of a SAELens `SyntheticModel` (SynthSAEBench), with their
true features, through the activation cache (docs/design.md, "Activation sources").

The model is built once per configuration (`data.model`, whose `seed` fixes the model) and
saved with `SyntheticModel.save` into `<data.cache_dir>/synthetic_model--<model key>/`; a
config can name a saved model folder instead (`data.model_path`). Sampling it on a CPU costs
several SAE steps per batch, so its samples are drawn once, by the first job of a sweep, into
`<data.cache_dir>/synthsaebench--<model key>--<key>/`, and every job reads them:

    manifest.json                 the key fields, d, dtype, row counts, the normalisation
                                  scalar, the model's true L0, and every file's sha256
    train/shard_00000.npy         (rows, d) training activations
    eval/shard_00000.npy          (rows, d) held-out activations
    eval_features/{indptr,indices,values}.npy
                                  the held-out rows' true feature activations, as CSR
                                  (row i: indices[indptr[i]:indptr[i+1]] and their values)

Both folders are built under a lock and renamed into place when complete (cache.find_or_build).
The model key hashes the normalised SAELens config (or the saved folder's files); the samples
key adds the sample seed, row counts and dtype. Samples are drawn with the global torch RNG
(SAELens samples through it) seeded inside `torch.random.fork_rng`, so a build is a pure
function of its key and device, and the job's own RNG is untouched.

Training reads the cache through the shuffling reader (reader.py), scaled like every cache:
the manifest's scalar makes E||s x|| = sqrt(d) over the training rows. `data.live=true`
draws training batches from the model on the training device instead (seeded by run seed
and step), for budgets too large to cache.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from ..record.atomic import atomic_write_json
from ..record.progress import PROGRESS_FILE, Progress, heartbeat
from .cache import (
    FORMAT_VERSION,
    MANIFEST,
    PROGRESS_EVERY_S,
    ShardWriter,
    cache_key,
    cache_root,
    file_entry,
    final_name,
    find_or_build,
    read_manifest,
    sha256_file,
    verify_files,
)
from .reader import Rows, Shard, ShuffledActivations
from .source import DataError

log = logging.getLogger("sae_sweep.data")

MODEL_PREFIX = "synthetic_model"
SAMPLES_PREFIX = "synthsaebench"
INSTALL_EXTRA = "pip install -c .ci/constraints.txt -U -e '.[saelens]'"
"""How to install the optional extra that holds SAELens (pyproject.toml)."""
_EVAL_STREAM = 1 << 40  # the held-out split's seed offset: far from any training seed's


def saelens_synthetic():
    """SAELens's synthetic-data module, or a DataError naming the extra that installs it."""
    try:
        from sae_lens import synthetic
    except ImportError as exc:
        raise DataError(
            f"data=synthsaebench samples a SAELens SyntheticModel, and SAELens is not installed "
            f"({exc}). Fix: {INSTALL_EXTRA} (the SAELens extra), or pick another data source."
        ) from exc
    if not hasattr(synthetic, "SyntheticModel"):
        raise DataError(
            "data=synthsaebench needs sae_lens.synthetic.SyntheticModel, which this SAELens "
            f"does not have. Fix: {INSTALL_EXTRA}."
        )
    return synthetic


@dataclass
class SynthCache:
    """An opened synthsaebench cache."""

    folder: Path
    manifest: dict[str, Any]
    model_folder: Path
    """The saved SyntheticModel the samples were drawn from."""
    built: bool
    """True when this process built the samples (False: it found them and reused them)."""


def open_synth_cache(cfg, device: torch.device) -> SynthCache:
    """Find (or build) the model and its samples for this data config."""
    synthetic = saelens_synthetic()
    root = cache_root(cfg.cache_dir)
    sample_device = _sample_device(cfg.sample_device, device)
    model_folder, model_key = _model(cfg, root, synthetic, sample_device)
    fields = {
        "source": SAMPLES_PREFIX,
        "model_key": model_key,
        "seed": cfg.seed,
        "n_train": cfg.n_train,
        "n_eval": cfg.n_eval,
        "cache_dtype": _plain(cfg.cache_dtype),
    }
    key = cache_key(fields)
    folder = root / f"{SAMPLES_PREFIX}--{model_key}--{key}"
    built, _ = find_or_build(
        root,
        folder,
        lambda tmp: _build_samples(cfg, tmp, model_folder, fields, key, synthetic, sample_device),
    )
    manifest = read_manifest(folder)
    if manifest.get("format_version") != FORMAT_VERSION or manifest.get("key") != key:
        raise DataError(
            f"activation cache {folder} does not match the data config (its manifest has key "
            f"{manifest.get('key')!r}, this config needs {key!r}). Fix: delete the folder."
        )
    if not built:
        verify_files(folder, manifest, hashes=cfg.verify_hashes)
    return SynthCache(folder, manifest, model_folder, built)


def synthsaebench_source(cfg, run_seed: int, device: torch.device,
                         pin_memory: bool = True) -> SynthSAEBenchActivations:  # fmt: skip
    return SynthSAEBenchActivations(open_synth_cache(cfg, device), cfg, run_seed, device,
                                    pin_memory)  # fmt: skip


class SynthSAEBenchActivations(ShuffledActivations):
    """The cached samples of a SyntheticModel, with its true feature directions
    (`ground_truth`) and the held-out rows' true feature activations
    (`eval_batches_with_truth`)."""

    def __init__(self, cache: SynthCache, cfg, run_seed: int, device: torch.device,
                 pin_memory: bool = True):  # fmt: skip
        m = cache.manifest
        bf16 = m["dtype"] == "bfloat16"
        train = Rows([Shard(cache.folder / s["file"], bfloat16=bf16) for s in m["train"]["shards"]])
        evals = Rows([Shard(cache.folder / s["file"], bfloat16=bf16) for s in m["eval"]["shards"]])
        super().__init__(train, evals, run_seed=run_seed, device=device,
                         buffer=cfg.shuffle_buffer, norm_scale=m["norm_scale"],
                         pin_memory=pin_memory)  # fmt: skip
        self.cache = cache
        self.true_l0: float = m["true_l0"]
        """Mean number of true features active per held-out sample."""
        weights = load_file(str(cache.model_folder / _weights_file()))
        self.ground_truth = weights["feature_vectors"].float().to(device)  # (G, d), unit norm
        self.n_features = self.ground_truth.shape[0]
        self._features = {
            name: np.load(cache.folder / m["eval_features"][name]["file"], mmap_mode="r")
            for name in ("indptr", "indices", "values")
        }
        self._live = None
        if cfg.live:
            model = saelens_synthetic().SyntheticModel
            self._live = model.load_from_disk(cache.model_folder, device=str(device))
            self._seed = (cfg.seed * 1_000_003 + run_seed) * 1_000_000_007

    def train_batch(self, step: int, batch_size: int) -> torch.Tensor:
        if self._live is None:
            return super().train_batch(step, batch_size)
        # Seeded by (sample seed, run seed, step): batches are reproducible and resumable.
        with _seeded((self._seed + step) % (1 << 62), self.device):
            return self._live.sample(batch_size).float()

    def eval_batches_with_truth(
        self, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, f) chunks of the held-out split, in `eval_batches`' order: x (n, d) as
        `eval_batches` yields it (original units), f (n, G) the true feature activations
        that made it (x = f @ ground_truth + bias)."""
        indptr, indices, values = (self._features[k] for k in ("indptr", "indices", "values"))
        for start, x in zip(range(0, self.eval.n, batch_size), self.eval_batches(batch_size),
                            strict=True):  # fmt: skip
            stop = start + len(x)
            a, b = int(indptr[start]), int(indptr[stop])
            rows = np.repeat(np.arange(stop - start), np.diff(indptr[start : stop + 1]))
            f = torch.zeros(stop - start, self.n_features)
            f[torch.from_numpy(rows), torch.from_numpy(indices[a:b].astype(np.int64))] = (
                torch.from_numpy(np.array(values[a:b]))
            )
            yield x, f.to(self.device)


# -- the model --


def _model(cfg, root: Path, synthetic, device: torch.device) -> tuple[Path, str]:
    """(folder of the saved SyntheticModel, its key): `data.model_path`, or the model built
    from `data.model` once into the cache folder."""
    if cfg.model_path is not None:
        folder = Path(cfg.model_path).expanduser()
        if not (folder / synthetic.SYNTHETIC_MODEL_CONFIG_FILENAME).exists():
            raise DataError(
                f"data.model_path={cfg.model_path!r} is not a saved SyntheticModel (no "
                f"{synthetic.SYNTHETIC_MODEL_CONFIG_FILENAME}). Fix: a folder written by "
                "SyntheticModel.save, or a download of a published one."
            )
        digests = {f.name: sha256_file(f) for f in sorted(folder.iterdir()) if f.is_file()}
        return folder.resolve(), cache_key({"saved": digests})
    config = model_config(cfg.model, synthetic)
    key = cache_key({"config": config})
    folder = root / f"{MODEL_PREFIX}--{key}"
    find_or_build(root, folder, lambda tmp: _build_model(tmp, config, key, synthetic, device))
    return folder, key


def model_config(model: dict[str, Any], synthetic) -> dict[str, Any]:
    """`data.model` as SAELens normalises it (defaults filled in): what the model key hashes."""
    if not model:
        raise DataError(
            "data=synthsaebench needs data.model (a SyntheticModelConfig) or data.model_path. "
            "Fix: data=synthsaebench (the CPU preset), data=synthsaebench_16k, or "
            "data.model_path=<a saved SyntheticModel folder>."
        )
    if isinstance(model, DictConfig):
        model = OmegaConf.to_container(model, resolve=True)
    plain = json.loads(json.dumps(model))  # plain containers, as SAELens's own JSON holds them
    try:
        return synthetic.SyntheticModelConfig.from_dict(plain).to_dict()
    except Exception as exc:  # noqa: BLE001 - SAELens raises what its parsers raise
        raise DataError(
            f"data.model is not a valid SAELens SyntheticModelConfig ({type(exc).__name__}: "
            f"{exc}). Fix: follow conf/data/synthsaebench.yaml (nested configs carry their "
            "`generator_name`)."
        ) from exc


def _build_model(tmp: Path, config: dict, key: str, synthetic, device: torch.device) -> None:
    t0 = time.perf_counter()
    heartbeat(f"building the synthetic model {final_name(tmp)}")
    model = synthetic.SyntheticModel(synthetic.SyntheticModelConfig.from_dict(config),
                                     device=str(device))  # fmt: skip
    model.save(tmp)
    files = [file_entry(tmp, p.name) for p in sorted(tmp.iterdir()) if p.is_file()]
    atomic_write_json(
        tmp / MANIFEST,
        {
            "format_version": FORMAT_VERSION,
            "key": key,
            "config": config,
            "files": files,
            "device": str(device),
            "build_wall_s": time.perf_counter() - t0,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    log.info("synthetic model built in %.1f s", time.perf_counter() - t0)


# -- the samples --


def _build_samples(cfg, tmp: Path, model_folder: Path, fields: dict, key: str, synthetic,
                   device: torch.device) -> None:  # fmt: skip
    name = final_name(tmp)
    t0 = time.perf_counter()
    model = synthetic.SyntheticModel.load_from_disk(model_folder, device=str(device))
    dtype, chunk = _plain(cfg.cache_dtype), cfg.sample_batch_size
    producer, fix = "the synthetic model", "check data.model (magnitudes, bias)"
    progress = Progress(f"activation cache {name}", total=cfg.n_eval + cfg.n_train,
                        unit="sample", path=tmp / PROGRESS_FILE,
                        every_s=PROGRESS_EVERY_S)  # fmt: skip
    eval_writer = ShardWriter(tmp / "eval", cfg.shard_rows, dtype, producer, fix)
    indptr, indices, values = [np.zeros(1, np.int64)], [], []
    with _seeded(cfg.seed + _EVAL_STREAM, device):
        while eval_writer.rows < cfg.n_eval:
            x, f = model.sample_with_features(min(chunk, cfg.n_eval - eval_writer.rows))
            eval_writer.add(x.float().cpu())
            f = f.float().cpu()
            rows, cols = f.nonzero(as_tuple=True)  # row-major: CSR order
            counts = torch.bincount(rows, minlength=len(f)).numpy()
            indptr.append(np.cumsum(counts) + indptr[-1][-1])
            indices.append(cols.numpy().astype(np.int32))
            values.append(f[rows, cols].numpy())
            progress.update(eval_writer.rows)
    train_writer = ShardWriter(tmp / "train", cfg.shard_rows, dtype, producer, fix)
    with _seeded(cfg.seed, device):
        while train_writer.rows < cfg.n_train:
            x = model.sample(min(chunk, cfg.n_train - train_writer.rows))
            train_writer.add(x.float().cpu())
            progress.update(cfg.n_eval + train_writer.rows)
            heartbeat(f"building the activation cache {name}")  # the job is not stuck
    progress.set_state("done")
    (tmp / PROGRESS_FILE).unlink()
    features = {}
    (tmp / "eval_features").mkdir()
    for part, arrays in (("indptr", indptr), ("indices", indices), ("values", values)):
        np.save(tmp / "eval_features" / f"{part}.npy", np.concatenate(arrays))
        features[part] = file_entry(tmp, f"eval_features/{part}.npy")
    n_active = int(np.concatenate(indptr)[-1])
    wall = time.perf_counter() - t0
    mean_norm = train_writer.norm_sum / train_writer.rows
    manifest = {
        "format_version": FORMAT_VERSION,
        "key": key,
        "fields": fields,
        "model_folder": str(model_folder),
        "d": train_writer.d,
        "n_features": model.cfg.num_features,
        "dtype": dtype,
        "n_train": train_writer.rows,
        "n_eval": eval_writer.rows,
        "true_l0": n_active / eval_writer.rows,
        "mean_norm": mean_norm,
        "norm_scale": math.sqrt(train_writer.d) / mean_norm,
        "train": train_writer.close(),
        "eval": eval_writer.close(),
        "eval_features": features,
        "sample_device": str(device),
        "build_wall_s": wall,
        "build_samples_per_s": (cfg.n_train + cfg.n_eval) / wall,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(tmp / MANIFEST, manifest)
    log.info("synthsaebench cache built: %d train + %d eval samples, d=%d, true L0 %.1f, "
             "%.0f samples/s", manifest["n_train"], manifest["n_eval"], manifest["d"],
             manifest["true_l0"], manifest["build_samples_per_s"])  # fmt: skip


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The global torch RNG (CPU, and `device` when it is a GPU) seeded for a block and
    restored after it: SAELens samples through the global RNG."""
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _sample_device(name: str, job_device: torch.device) -> torch.device:
    if name == "auto":
        return job_device
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"data.sample_device={name!r} but CUDA is not available here. "
                        "Fix: data.sample_device=auto or cpu")  # fmt: skip
    return device


def _weights_file() -> str:
    return saelens_synthetic().SYNTHETIC_MODEL_WEIGHTS_FILENAME


def _plain(value):
    return getattr(value, "value", value)
