"""Activation-cache throughput: build (tokens/s through the LM) and read (activations/s).

    python bench/cache.py                                   # a random GPT-2, made here
    python bench/cache.py --model gpt2 --site transformer.h.6 --dataset data.jsonl \
        --tokens 1000000 --lm-device cuda --cache-dtype bfloat16

Without --model it saves a small random GPT-2 (4 layers, d=256, GPT-2's layout) and a
synthetic text file into a temp folder, so it runs offline anywhere. The build figure is
the dataset reading, tokenization, forward passes, shard writes and hashes (model
loading excluded); the read
figure is `train_batch` over whole epochs (shuffled, memory-mapped), then the same with
the shards in the page cache.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sae_sweep.config.schema import HFDataConfig  # noqa: E402
from sae_sweep.data.cache import open_cache  # noqa: E402
from sae_sweep.data.hf import hf_source  # noqa: E402


def random_gpt2(folder: Path, n_layer: int, d: int) -> tuple[Path, Path]:
    """A random GPT-2 with a word-level tokenizer, and 20k lines of text over its words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    rng = random.Random(0)
    words = [f"w{i}" for i in range(2000)]
    vocab = {w: i for i, w in enumerate(["<|endoftext|>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    eot = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token="<unk>"
    )
    config = GPT2Config(vocab_size=len(vocab), n_positions=512, n_embd=d, n_layer=n_layer, n_head=4)
    GPT2LMHeadModel(config).save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    text = folder / "text.txt"
    lines = (" ".join(rng.choices(words, k=rng.randint(50, 400))) for _ in range(20_000))
    text.write_text("\n".join(lines))
    return folder / "model", text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", help="hub name or folder (default: a random GPT-2 made here)")
    p.add_argument("--site", default="transformer.h.2")
    p.add_argument("--dataset", help="dataset name or local files (default: made here)")
    p.add_argument("--tokens", type=int, default=200_000, help="training activations to cache")
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--lm-device", default="auto")
    p.add_argument("--lm-batch-size", type=int, default=32)
    p.add_argument("--cache-dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--batch-size", type=int, default=4096, help="SAE batch for the read test")
    p.add_argument("--epochs", type=float, default=2.0, help="epochs of reading to time")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, dataset = args.model, args.dataset
        if model is None:
            model, dataset_made = random_gpt2(tmp, n_layer=4, d=256)
            dataset = dataset or str(dataset_made)
        if dataset is None:
            p.error("--dataset is required with --model")
        cfg = HFDataConfig(
            model=str(model),
            site=args.site,
            dataset=str(dataset),
            context_length=args.context,
            n_tokens=args.tokens,
            eval_sequences=16,
            lm_device=args.lm_device,
            lm_batch_size=args.lm_batch_size,
            cache_dtype=args.cache_dtype,
            cache_dir=str(tmp / "cache"),
            shard_rows=1 << 16,
        )
        t0 = time.perf_counter()
        cache = open_cache(cfg)
        total = time.perf_counter() - t0
        m = cache.manifest
        print(f"model {m['model_class']}  site {args.site}  d={m['d']}  dtype {m['dtype']}")
        print(
            f"cache build: {m['tokens_processed']:,} tokens in {m['build_wall_s']:.1f} s "
            f"= {m['build_tokens_per_s']:,.0f} tokens/s (model load {m['model_load_s']:.1f} s; "
            f"{total:.1f} s in all)"
        )
        source = hf_source(cfg, run_seed=0, device=torch.device("cpu"))
        n, bs = source.train.n, args.batch_size
        for label in ("read (first pass)", "read (page cache)"):
            steps = max(1, int(args.epochs * n / bs))
            t0 = time.perf_counter()
            for step in range(steps):
                x = source.train_batch(step, bs)
            dt = time.perf_counter() - t0
            print(f"{label}: {steps * bs:,} activations in {dt:.2f} s = {steps * bs / dt:,.0f}/s")
            source = hf_source(cfg, run_seed=1, device=torch.device("cpu"))
        assert x.shape == (bs, m["d"])


if __name__ == "__main__":
    main()
