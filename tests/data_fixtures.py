"""Tiny randomly initialised language models (GPT-2, Llama, BERT) with tokenizers built here,
and a small text file.

Everything is built in a temp folder: no network, no Hugging Face hub.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from sae_sweep.models.base import SAEOutput

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


def write_chain_text(path: Path, n_lines: int = 400, seed: int = 0) -> Path:
    """Stories with an order to learn: after each of the 31 words comes one of two fixed
    others, so predicting the next word needs the current one (about 1 bit of uncertainty
    instead of 5): a model must carry each token through its residual stream."""
    rng = random.Random(seed)
    n = len(WORDS)
    follows = {w: (WORDS[(3 * i + 1) % n], WORDS[(7 * i + 2) % n]) for i, w in enumerate(WORDS)}
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(WORDS)]
        for _ in range(rng.randint(8, 40) - 1):
            words.append(rng.choice(follows[words[-1]]))
        lines.append(" ".join(words))
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


class FixedSAE(torch.nn.Module):
    """An SAE replaced by the identity (x_hat = x) or by zero (x_hat = 0): splices whose loss
    recovered is known exactly (1 and 0)."""

    def __init__(self, identity: bool):
        super().__init__()
        self.identity = identity
        self.w = torch.nn.Parameter(torch.zeros(1))  # the splice reads its device and dtype

    def forward(self, x):
        x_hat = x.clone() if self.identity else torch.zeros_like(x)
        return SAEOutput(x_hat=x_hat, f=x, g=x)


LLAMA_SPECIALS = ["<unk>", "<s>", "</s>"]
"""Llama's special tokens, with its ids: <unk> 0, BOS <s> 1, EOS </s> 2."""


def write_jsonl(path: Path, stories: Path) -> Path:
    """The stories of a .txt (one per line) as a .jsonl of {"text": ...} rows, the layout of
    TinyStories."""
    import json

    lines = stories.read_text().splitlines()
    path.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
    return path


def save_tiny_llama(
    folder: Path, stories: Path, n_layer: int = 3, d: int = 32, seed: int = 0, steps: int = 60
) -> Path:
    """A small Llama (`model.layers.0` ... , RMSNorm, rotary, grouped-query attention) and a
    BPE tokenizer trained here on the 31 words, saved with save_pretrained. Like the real
    Llama tokenizer it adds BOS to every text it encodes with special tokens.

    From its random initialisation the model is trained for `steps` Adam steps on the
    `stories` (a .txt, one per line, as `write_chain_text` writes them): a few seconds, enough
    to predict them far better than chance, so that ablating a block costs loss and loss
    recovered means something."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=96, special_tokens=LLAMA_SPECIALS, show_progress=False)
    tok.train_from_iterator([" ".join(WORDS)] * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=d,
        intermediate_size=2 * d,
        num_hidden_layers=n_layer,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    ids: list[int] = []
    for line in stories.read_text().splitlines():
        ids += [1, *tokenizer(line, add_special_tokens=False)["input_ids"]]
    n = len(ids) // 32
    sequences = torch.tensor(ids[: n * 32]).view(n, 32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = sequences[torch.randint(0, n, (16,), generator=order)]
        optimizer.zero_grad()
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
