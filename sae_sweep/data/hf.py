"""`data=hf` and `data=activations`: stored activations behind the ActivationSource interface.

`data=hf` opens (or builds) the sweep's activation cache, reads it through the shuffling
reader, and exposes `lm_eval(sae, norm_scale)`, the loss-recovered metrics on the cache's
held-out sequences (causal LMs only; the model is loaded only if this job did not build
the cache). `data=activations` reads a user's shards through the same reader.
"""

from __future__ import annotations

import numpy as np
import torch

from .cache import Cache, open_cache
from .hf_model import LoadedModel, load_model
from .reader import Rows, Shard, ShuffledActivations, open_files
from .source import DataError
from .splice import loss_recovered, sae_reconstruction


def hf_source(cfg, run_seed: int, device: torch.device,
              pin_memory: bool = True) -> ShuffledActivations:  # fmt: skip
    cache = open_cache(cfg)
    m = cache.manifest
    bf16 = m["dtype"] == "bfloat16"
    train = Rows([Shard(cache.folder / s["file"], bfloat16=bf16) for s in m["train"]["shards"]])
    evals = Rows([Shard(cache.folder / s["file"], bfloat16=bf16) for s in m["eval"]["shards"]])
    lm_eval = _LMEval(cfg, cache) if m["causal_lm"] else None
    return ShuffledActivations(
        train,
        evals,
        run_seed=run_seed,
        device=device,
        buffer=cfg.shuffle_buffer,
        norm_scale=m["norm_scale"],
        lm_eval=lm_eval,
        pin_memory=pin_memory,
    )


def activations_source(cfg, run_seed: int, device: torch.device,
                       pin_memory: bool = True) -> ShuffledActivations:  # fmt: skip
    shards = open_files(cfg.path, cfg.key)
    rows = Rows(shards)
    if cfg.d is not None and rows.d != cfg.d:
        raise DataError(f"data.d={cfg.d} but the files in {cfg.path!r} hold d={rows.d}")
    if rows.n <= cfg.n_eval:
        raise DataError(
            f"{cfg.path!r} holds {rows.n} activations, not more than data.n_eval={cfg.n_eval}: "
            "nothing would be left to train on. Fix: lower data.n_eval or add data."
        )
    split = rows.n - cfg.n_eval  # the held-out split: the last n_eval rows
    return ShuffledActivations(
        Rows(shards, 0, split),
        Rows(shards, split, rows.n),
        run_seed=run_seed,
        device=device,
        buffer=cfg.shuffle_buffer,
        pin_memory=pin_memory,
    )


class _LMEval:
    """Loss recovered on the cache's held-out sequences; loads the LM on first use."""

    def __init__(self, cfg, cache: Cache):
        self.cfg, self.cache = cfg, cache
        self.lm: LoadedModel | None = cache.lm

    def __call__(self, sae, norm_scale: float) -> dict[str, float]:
        cfg, m = self.cfg, self.cache.manifest
        if self.lm is None:
            dtype = getattr(cfg.lm_dtype, "value", cfg.lm_dtype)
            self.lm = load_model(cfg.model, cfg.lm_device, dtype)
        tokens = torch.from_numpy(np.load(self.cache.folder / m["eval_tokens"]["file"]))
        return loss_recovered(
            self.lm,
            cfg.site,
            tokens.long(),
            sae_reconstruction(sae, norm_scale),
            m["special_ids_excluded"],
            cfg.lm_batch_size,
        )
