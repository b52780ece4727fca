"""`data=hf` and `data=activations`: stored activations behind the ActivationSource interface.

`data=hf` opens (or builds) the sweep's activation cache, reads it through the shuffling
reader, and exposes `held_out_lm`: the cache's held-out sequences and the model they came
from, which the evaluation splices the SAE into for the language-model metrics
(`evaluation.lm`; causal LMs only; the model is loaded only if this job did not build the
cache). `data=activations` reads a user's shards through the same reader.
"""

from __future__ import annotations

import numpy as np
import torch

from .cache import Cache, open_cache
from .hf_model import LoadedModel, load_model
from .reader import Rows, Shard, ShuffledActivations, open_files
from .source import DataError


def hf_source(cfg, run_seed: int, device: torch.device,
              pin_memory: bool = True) -> ShuffledActivations:  # fmt: skip
    cache = open_cache(cfg)
    m = cache.manifest
    bf16 = m["dtype"] == "bfloat16"
    train = Rows([Shard(cache.folder / s["file"], bfloat16=bf16) for s in m["train"]["shards"]])
    evals = Rows([Shard(cache.folder / s["file"], bfloat16=bf16) for s in m["eval"]["shards"]])
    held_out_lm = HeldOutLM(cfg, cache) if m["causal_lm"] else None
    return ShuffledActivations(
        train,
        evals,
        run_seed=run_seed,
        device=device,
        buffer=cfg.shuffle_buffer,
        norm_scale=m["norm_scale"],
        held_out_lm=held_out_lm,
        pin_memory=pin_memory,
        inputs=m.get("inputs"),
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


class HeldOutLM:
    """The cache's held-out sequences, the causal LM they came from and its hooked site: what
    the SAE is spliced into. The model is loaded on first use."""

    def __init__(self, cfg, cache: Cache):
        self.cfg, self.cache = cfg, cache
        self.site: str = cfg.site
        self.batch_size: int = cfg.lm_batch_size
        self.exclude_ids: list[int] = cache.manifest["special_ids_excluded"]
        """Token ids (BOS/EOS/pad) left out of the activations: their positions keep the
        clean activation in every splice."""
        self._lm: LoadedModel | None = cache.lm

    def model(self) -> LoadedModel:
        if self._lm is None:
            dtype = getattr(self.cfg.lm_dtype, "value", self.cfg.lm_dtype)
            self._lm = load_model(self.cfg.model, self.cfg.lm_device, dtype)
        return self._lm

    def tokens(self) -> torch.Tensor:
        """(N, T) token ids of the held-out sequences."""
        file = self.cache.folder / self.cache.manifest["eval_tokens"]["file"]
        return torch.from_numpy(np.load(file)).long()
