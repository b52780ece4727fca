"""A tiny randomly initialised GPT-2 with a word-level tokenizer, and a small text file.

Everything is built in a temp folder: no network, no Hugging Face hub.
"""

from __future__ import annotations

import random
from pathlib import Path

WORDS = [
    "the",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "a",
    "mat",
    "park",
    "tree",
    "ball",
    "red",
    "big",
    "small",
    "happy",
    "sad",
    "mom",
    "dad",
    "girl",
    "boy",
    "saw",
    "went",
    "played",
    "with",
    "and",
    "then",
    "it",
    "was",
    "day",
    "sun",
    "home",
]


def write_text(path: Path, n_lines: int = 400, seed: int = 0) -> Path:
    """One short 'story' per line, from a 31-word vocabulary."""
    rng = random.Random(seed)
    lines = [" ".join(rng.choices(WORDS, k=rng.randint(8, 40))) for _ in range(n_lines)]
    path.write_text("\n".join(lines) + "\n")
    return path


def save_tiny_gpt2(
    folder: Path, n_layer: int = 2, d: int = 32, seed: int = 0, init_range: float = 0.02
) -> Path:
    """A random GPT-2 (`transformer.h.0` ... ) and its tokenizer, saved with save_pretrained."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
    )
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=64,
        n_embd=d,
        n_layer=n_layer,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        initializer_range=init_range,
    )
    model = GPT2LMHeadModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_bert(folder: Path, d: int = 32) -> Path:
    """A random BERT masked LM (an encoder: no loss recovered) and a WordPiece tokenizer."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    names = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(names)})
    config = BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=d,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * d,
        max_position_embeddings=64,
    )
    folder.mkdir(parents=True, exist_ok=True)
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
