"""The activation cache (docs/design.md, "Activation sources"): a language model's
activations, computed once per sweep.

Layout of one cache, `<data.cache_dir>/<model>--<site>--<key>/`:
    manifest.json          what was cached (the key fields), d, dtype, row counts, the
                           normalisation scalar, the sha256 of every file below, and
                           `inputs`: the sha256 of the local model and dataset files
    train/shard_00000.npy  (rows, d) training activations, `data.shard_rows` per shard
    eval/shard_00000.npy   (rows, d) activations of the held-out sequences
    eval_tokens.npy        (sequences, context_length) token ids of the held-out sequences

`key` hashes everything that changes the content (model, site, dataset, split, column,
context length, BOS/special-token handling, token counts, dtypes): a re-run with the same
data config finds the cache; a different one gets its own folder. The first job to arrive
builds it while holding a file lock (the others wait, then read it); the build writes into a
temporary folder renamed into place at the end, so a crash leaves nothing half-written (and
the next build removes the crashed one's temporary folder). A built cache is read without
the lock, so it can live on read-only storage.

Every file is hashed once, when the cache is built, and its sha256 and size go into the
manifest. A job opening the cache checks that every listed file exists with its recorded
size (a truncated or extended shard is caught at once) and reads no bytes; re-hashing is on
demand: `python -m sae_sweep.data.build_cache <overrides> --verify`, or `data.verify_hashes=true`
in every job. Without it a change that keeps a file's size (flipped bytes, a shard overwritten
by another of the same shape) goes unnoticed until the data is trained on.
bfloat16 shards are stored as int16 `.npy` (numpy has no bfloat16) and viewed back on read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from filelock import FileLock, Timeout

from ..record.atomic import atomic_write_json
from ..record.progress import PROGRESS_FILE, Progress, describe, heartbeat, read_progress
from .hf_model import LoadedModel, find_site, load_model, site_activations, special_ids
from .source import DataError
from .tokens import iter_texts, pack

log = logging.getLogger("sae_sweep.data")
T = TypeVar("T")

MANIFEST = "manifest.json"
PROGRESS_EVERY_S = 30.0
"""Seconds between build progress lines, and between the lines of a job waiting for a build."""
FORMAT_VERSION = 1
KEY_FIELDS = (
    "model",
    "site",
    "dataset",
    "dataset_config",
    "split",
    "text_column",
    "context_length",
    "prepend_bos",
    "exclude_special_tokens",
    "n_tokens",
    "eval_sequences",
    "lm_dtype",
    "cache_dtype",
)


@dataclass
class Cache:
    folder: Path
    manifest: dict[str, Any]
    built: bool
    """True when this process built the cache (False: it found one and reused it)."""
    lm: LoadedModel | None = None
    """The model, when this process loaded it to build the cache (reused for loss recovered)."""


def cache_fields(cfg) -> dict[str, Any]:
    """The config values that define a cache's content (local paths made absolute)."""
    fields = {name: _plain(getattr(cfg, name)) for name in KEY_FIELDS}
    for name in ("model", "dataset"):
        if os.path.exists(fields[name]):
            fields[name] = os.path.abspath(fields[name])
    return fields


def cache_key(fields: dict[str, Any]) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, **fields}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_root(cache_dir: str) -> Path:
    """`data.cache_dir`, relative paths taken from the launch directory (Hydra's runtime.cwd)."""
    path = Path(os.path.expanduser(cache_dir))
    if path.is_absolute():
        return path
    try:
        from hydra.core.hydra_config import HydraConfig

        base = Path(HydraConfig.get().runtime.cwd) if HydraConfig.initialized() else Path.cwd()
    except Exception:  # noqa: BLE001 - Hydra absent or not running: the process cwd
        base = Path.cwd()
    return base / path


def open_cache(cfg) -> Cache:
    """Find the cache for this data config, building it first if no job has yet."""
    fields = cache_fields(cfg)
    key = cache_key(fields)
    root = cache_root(cfg.cache_dir)
    folder = root / f"{slug(fields['model'])}--{slug(cfg.site)}--{key}"
    built, lm = find_or_build(root, folder, lambda tmp: build_cache(cfg, tmp, fields, key))
    manifest = read_manifest(folder)
    check_manifest(manifest, folder, key=key, d=cfg.d)
    if not built:  # a build just wrote (and hashed) every file
        verify_files(folder, manifest, hashes=cfg.verify_hashes)
    return Cache(folder, manifest, built, lm)


def slug(name) -> str:
    """A path's last component (or a name), safe as part of a folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(str(name).rstrip("/")))


def find_or_build(root: Path, folder: Path, build: Callable[[Path], T]) -> tuple[bool, T | None]:
    """(True, what `build` returned) when this process built `folder`, (False, None) when it
    was there. `build(tmp)` writes the content into a temporary folder, renamed into place at
    the end under the builders' lock: a crash leaves nothing half-written, and the next build
    removes the crashed one's temporary folder."""
    if folder.exists():
        # A cache folder appears only by one rename at the end of its build: if it is there it
        # is complete, and reading it needs no lock (so read-only storage works).
        log.info("reusing activation cache %s", folder)
        return False, None
    with _build_lock(root, folder):
        if folder.exists():  # built by another job while this one waited
            log.info("reusing activation cache %s", folder)
            return False, None
        _remove_stale_builds(folder)
        log.info("building activation cache %s", folder)
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        try:
            result = build(tmp)
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return True, result


@contextmanager
def _build_lock(root: Path, folder: Path) -> Iterator[None]:
    """Hold the lock of one builder; fails with the fix when `root` cannot be written. While
    another job holds it, say every PROGRESS_EVERY_S seconds what this job waits for, from the
    build's progress.json."""
    lock = FileLock(str(folder) + ".lock")
    try:
        root.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            while True:
                log.info("waiting for %s", _build_in_progress(folder))
                heartbeat(f"waiting for the activation cache {folder.name}")
                try:
                    lock.acquire(timeout=PROGRESS_EVERY_S)
                    break
                except Timeout:
                    continue
    except OSError as exc:
        raise DataError(
            f"the activation cache {folder.name} is not built yet and data.cache_dir={root} "
            f"cannot be written ({type(exc).__name__}: {exc}). Fix: data.cache_dir=<a writable "
            "folder>, or build the cache once where it can be written (python -m "
            "sae_sweep.data.build_cache ...) and copy it there."
        ) from exc
    try:
        yield
    finally:
        lock.release()


def _remove_stale_builds(folder: Path) -> None:
    """Remove the temporary folders of builds that were killed (only called under the lock:
    a live builder holds it, so every temporary folder found here is a dead one's)."""
    for stale in folder.parent.glob(f"{folder.name}.tmp-*"):
        log.warning("removing %s, left by a cache build that was killed", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _build_in_progress(folder: Path) -> str:
    """What the job holding the lock is doing, as far as its temporary folder tells."""
    builds = sorted(folder.parent.glob(f"{folder.name}.tmp-*/{PROGRESS_FILE}"))
    snaps = [snap for path in builds if (snap := read_progress(path)) is not None]
    if not snaps:
        return (
            f"the activation cache {folder}: another job holds {folder}.lock "
            "(loading its model, or no build progress yet)"
        )
    snap = max(snaps, key=lambda s: s.get("updated_unix", 0))
    age = time.time() - snap.get("updated_unix", time.time())
    return (
        f"the activation cache {folder.name}, being built by {snap.get('host')}:"
        f"{snap.get('pid')} (progress of {age:.0f} s ago): {describe({**snap, 'label': None})}"
    )


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(
            f"activation cache {folder} has no readable {MANIFEST} ({exc}). "
            f"Fix: delete the folder so that the next job rebuilds it."
        ) from exc


def check_manifest(manifest: dict, folder: Path, *, key: str, d: int | None) -> None:
    """The manifest belongs to this config (same key) and its d is the expected one."""
    if manifest.get("format_version") != FORMAT_VERSION or manifest.get("key") != key:
        raise DataError(
            f"activation cache {folder} does not match the data config: its manifest has key "
            f"{manifest.get('key')!r} (format {manifest.get('format_version')}), this config "
            f"needs {key!r}. Fix: delete the folder (it will be rebuilt) or restore the config."
        )
    if d is not None and manifest["d"] != d:
        raise DataError(
            f"data.d={d} but the activation cache {folder} holds d={manifest['d']} activations "
            f"(site {manifest['fields']['site']!r}). Fix: data.d={manifest['d']} or data.d=null."
        )


def verify_files(folder: Path, manifest: dict, *, hashes: bool) -> int:
    """Every file listed in the manifest exists with its recorded size, and with its recorded
    sha256 when `hashes` (reads every byte: about 1 s per GB). Returns the bytes listed."""
    total = 0
    for entry in _listed_files(manifest):
        path = Path(folder) / entry["file"]
        if not path.exists():
            raise DataError(f"activation cache shard {path} is missing. Fix: delete {folder}.")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise DataError(
                f"activation cache shard {path} is corrupt (truncated or overwritten): it holds "
                f"{size} bytes, {MANIFEST} records {entry['bytes']}. Fix: delete {folder} so "
                "that it is rebuilt."
            )
        if hashes and sha256_file(path) != entry["sha256"]:
            raise DataError(
                f"activation cache shard {path} is corrupt or was modified: its sha256 differs "
                f"from {MANIFEST}. Fix: delete {folder} so that it is rebuilt."
            )
        total += size
    return total


def input_checksums(fields: dict[str, Any]) -> dict[str, str]:
    """{"model/<file>" or "dataset/<file>": sha256} of the local files the cache is computed
    from: the model folder's files and the dataset file (or folder's). A hub name is no
    local file and adds nothing: its revision is the hub's to keep. Hashed once, with the
    cache; every job's record carries them, so a published number names its exact inputs."""
    out = {}
    for name in ("model", "dataset"):
        value = str(fields.get(name) or "")
        path = Path(value)
        if not value or not path.exists():
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            rel = f.relative_to(path).as_posix() if path.is_dir() else f.name
            out[f"{name}/{rel}"] = sha256_file(f)
    return out


def sha256_file(path: Path, block: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def build_cache(cfg, tmp: Path, fields: dict, key: str) -> LoadedModel:
    """Run the model over the dataset and write the cache into the build's temporary folder
    `tmp` (find_or_build renames it into place)."""
    name = final_name(tmp)
    t0 = time.perf_counter()
    lm = load_model(cfg.model, cfg.lm_device, _plain(cfg.lm_dtype))
    load_s = time.perf_counter() - t0
    site = find_site(lm.model, cfg.site)
    excluded = special_ids(lm.tokenizer) if cfg.exclude_special_tokens else []
    exclude = torch.tensor(excluded, dtype=torch.long)
    sequences = pack(
        iter_texts(cfg.dataset, cfg.dataset_config, cfg.split, cfg.text_column),
        lm.tokenizer,
        cfg.context_length,
        cfg.prepend_bos,
    )
    dtype = _plain(cfg.cache_dtype)
    progress = Progress(
        f"activation cache {name}",
        total=cfg.n_tokens,
        unit="token",
        path=tmp / PROGRESS_FILE,  # read by the jobs waiting on the lock
        every_s=PROGRESS_EVERY_S,
    )

    def activations(ids: np.ndarray) -> torch.Tensor:
        tokens = torch.from_numpy(ids).to(lm.device)
        x = site_activations(lm.model, site, tokens)  # (B, T, d)
        keep = ~torch.isin(tokens, exclude.to(lm.device))
        return x[keep].float().cpu()  # (kept positions, d)

    eval_ids = _take(sequences, cfg.eval_sequences)
    if len(eval_ids) < cfg.eval_sequences:
        raise DataError(
            f"data.dataset={cfg.dataset!r} yields only {len(eval_ids)} packed sequences of "
            f"{cfg.context_length} tokens: not even the {cfg.eval_sequences} held-out ones "
            "(is it empty? wrong data.text_column or data.split?). Fix: more text, or lower "
            "data.eval_sequences / data.context_length."
        )
    eval_tokens = np.stack(eval_ids).astype(np.int32)
    eval_writer = ShardWriter(tmp / "eval", cfg.shard_rows, dtype)
    for i in range(0, len(eval_tokens), cfg.lm_batch_size):
        eval_writer.add(activations(eval_tokens[i : i + cfg.lm_batch_size].astype(np.int64)))
    train_writer = ShardWriter(tmp / "train", cfg.shard_rows, dtype)
    processed = 0
    while train_writer.rows < cfg.n_tokens:
        batch = _take(sequences, cfg.lm_batch_size)
        if not batch:
            break
        x = activations(np.stack(batch))
        train_writer.add(x[: cfg.n_tokens - train_writer.rows])
        processed += len(batch) * cfg.context_length
        progress.update(train_writer.rows)
        heartbeat(f"building the activation cache {name}")  # the job is not stuck
    if train_writer.rows == 0:
        raise DataError(
            f"data.dataset={cfg.dataset!r} has no text left for training after the "
            f"{cfg.eval_sequences} held-out sequences. Fix: more text or fewer eval_sequences."
        )
    if train_writer.rows < cfg.n_tokens:
        log.warning(
            "the dataset ran out: cached %d training activations of the %d asked for",
            train_writer.rows,
            cfg.n_tokens,
        )
    progress.set_state("done")
    (tmp / PROGRESS_FILE).unlink()  # the manifest tells how the build went
    np.save(tmp / "eval_tokens.npy", eval_tokens)
    train, ev = train_writer.close(), eval_writer.close()
    wall = time.perf_counter() - t0 - load_s  # dataset, forward passes, shard writes
    mean_norm = train_writer.norm_sum / train_writer.rows
    manifest = {
        "format_version": FORMAT_VERSION,
        "key": key,
        "fields": fields,
        "d": train_writer.d,
        "dtype": dtype,
        "causal_lm": lm.causal_lm,
        "model_class": type(lm.model).__name__,
        "special_ids_excluded": exclude.tolist(),
        "n_train": train_writer.rows,
        "n_eval": eval_writer.rows,
        "tokens_processed": processed + eval_tokens.size,
        "mean_norm": mean_norm,
        "norm_scale": math.sqrt(train_writer.d) / mean_norm if mean_norm > 0 else None,
        "train": train,
        "eval": ev,
        "eval_tokens": file_entry(tmp, "eval_tokens.npy"),
        "inputs": input_checksums(fields),
        "model_load_s": load_s,
        "build_wall_s": wall,
        "build_tokens_per_s": (processed + eval_tokens.size) / wall,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(tmp / MANIFEST, manifest)
    log.info(
        "activation cache built: %d train + %d eval activations, d=%d, %.0f tokens/s",
        manifest["n_train"],
        manifest["n_eval"],
        manifest["d"],
        manifest["build_tokens_per_s"],
    )
    return lm


class ShardWriter:
    """Appends (n, d) float32 rows to `.npy` shards of `shard_rows` rows in the cache dtype.
    `producer` names what made the rows and `fix` what to do, in the error on non-finite rows."""

    def __init__(
        self,
        folder: Path,
        shard_rows: int,
        dtype: str,
        producer: str = "the model at the hooked site",
        fix: str = "data.lm_dtype=float32, or another site",
    ):
        folder.mkdir(parents=True)
        self.folder, self.shard_rows, self.dtype = folder, shard_rows, getattr(torch, dtype)
        self.producer, self.fix = producer, fix
        self.rows, self.d, self.norm_sum = 0, None, 0.0
        self.pending: list[torch.Tensor] = []
        self.pending_rows = 0
        self.shards: list[dict] = []

    def add(self, x: torch.Tensor) -> None:
        if self.d is None:
            self.d = x.shape[1]
        bad = (~torch.isfinite(x)).sum().item()
        if bad:
            raise DataError(
                f"{self.producer} produced {bad} non-finite activations. Fix: {self.fix}."
            )
        self.norm_sum += x.double().norm(dim=-1).sum().item()
        self.rows += len(x)
        self.pending.append(x.to(self.dtype))
        self.pending_rows += len(x)
        while self.pending_rows >= self.shard_rows:
            self._flush(self.shard_rows)

    def close(self) -> dict:
        if self.pending_rows:
            self._flush(self.pending_rows)
        return {"rows": self.rows, "shards": self.shards}

    def _flush(self, n: int) -> None:
        rows = torch.cat(self.pending)
        out, rest = rows[:n], rows[n:]
        self.pending, self.pending_rows = ([rest] if len(rest) else []), len(rest)
        if self.dtype == torch.bfloat16:
            out = out.view(torch.int16)  # numpy has no bfloat16: same bits, viewed back on read
        name = f"shard_{len(self.shards):05d}.npy"
        np.save(self.folder / name, out.numpy())
        entry = file_entry(self.folder.parent, f"{self.folder.name}/{name}")
        self.shards.append({**entry, "rows": n})


def file_entry(folder: Path, relative: str) -> dict:
    """A manifest's entry for one file: its path relative to the cache, size and sha256."""
    path = folder / relative
    return {"file": relative, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def final_name(tmp: Path) -> str:
    """The name of the folder a build's temporary folder becomes."""
    return tmp.name.split(".tmp-")[0]


def _listed_files(manifest: dict) -> list[dict]:
    """Every file a manifest lists: the shards, and the held-out tokens (a language model's
    cache) or true feature activations (a synthetic model's)."""
    extra = [manifest["eval_tokens"]] if "eval_tokens" in manifest else []
    extra += list(manifest.get("eval_features", {}).values())
    return [*manifest["train"]["shards"], *manifest["eval"]["shards"], *extra]


def _take(iterator, n: int) -> list:
    out: list = []
    if n <= 0:
        return out
    for item in iterator:
        out.append(item)
        if len(out) == n:
            break
    return out


def _plain(value):
    return getattr(value, "value", value)
