"""Text from a `datasets` dataset, tokenized and packed into fixed-length sequences.

Documents are concatenated, each preceded by a separator (BOS, or [CLS] for BERT-like
encoders, or EOS when the tokenizer has neither), and cut into sequences of
`context_length` tokens. With `prepend_bos` each sequence starts with BOS and holds
`context_length - 1` stream tokens. The dataset is streamed, so only the tokens that are
used are ever read.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator

import numpy as np

from .source import DataError

_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_BUILDERS[".csv"] = "csv"


def iter_texts(dataset: str, config: str | None, split: str, text_column: str) -> Iterator[str]:
    """The text of each document of a hub dataset or of local files, in order."""
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    files = _local_files(dataset)
    try:
        if files is not None:
            builder = _builder(files)
            ds = datasets.load_dataset(builder, data_files=files, split="train", streaming=True)
        else:
            ds = datasets.load_dataset(dataset, config, split=split, streaming=True)
    except (FileNotFoundError, ConnectionError, OSError, ValueError) as exc:
        raise DataError(
            f"data.dataset={dataset!r} cannot be loaded: {str(exc).strip()[:300]}. It is neither "
            "local files nor reachable on the Hugging Face hub (offline?). Fix: point "
            "data.dataset at local .txt/.jsonl/.parquet files, or run once with internet."
        ) from exc
    first = True
    for row in ds:
        if first:
            first = False
            if text_column not in row:
                raise DataError(
                    f"data.text_column={text_column!r} is not a column of {dataset!r}; its "
                    f"columns are {sorted(row)}. Fix: data.text_column=<one of them>"
                )
        text = row[text_column]
        if text:
            yield text


def pack(
    texts: Iterable[str],
    tokenizer,
    context_length: int,
    prepend_bos: bool,
    batch_docs: int = 256,
) -> Iterator[np.ndarray]:
    """(context_length,) int64 token-id sequences packed from the documents, in order."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None:  # encoders such as BERT start a sequence with [CLS]
        bos = getattr(tokenizer, "cls_token_id", None)
    separator = bos if bos is not None else eos
    if prepend_bos and bos is None and eos is None:
        raise DataError("the tokenizer has neither BOS nor EOS: set data.prepend_bos=false")
    start = [separator] if prepend_bos else []
    body = context_length - len(start)
    if body < 1:
        raise DataError(f"data.context_length={context_length} is too short")
    buffer: list[int] = []
    for docs in _batched(texts, batch_docs):
        encoded = tokenizer(docs, add_special_tokens=False)["input_ids"]
        for ids in encoded:
            if separator is not None:
                buffer.append(separator)
            buffer.extend(ids)
        pos = 0
        while len(buffer) - pos >= body:
            # A sequence never starts with a bare separator right after the BOS we prepend.
            if prepend_bos and buffer[pos] == separator:
                pos += 1
                continue
            yield np.asarray(start + buffer[pos : pos + body], dtype=np.int64)
            pos += body
        del buffer[:pos]


def _local_files(dataset: str) -> list[str] | None:
    """The files named by a path, folder or glob, or None when `dataset` is a hub name."""
    if os.path.isdir(dataset):
        found = sorted(
            os.path.join(root, f)
            for root, _dirs, names in os.walk(dataset)
            for f in names
            if os.path.splitext(f)[1] in _BUILDERS
        )
        if not found:
            raise DataError(
                f"data.dataset={dataset!r} is a folder without .txt/.jsonl/.json/.parquet/.csv "
                "files"
            )
        return found
    if os.path.isfile(dataset):
        return [dataset]
    if any(c in dataset for c in "*?["):
        found = sorted(glob.glob(dataset))
        if not found:
            raise DataError(f"data.dataset={dataset!r} matches no files")
        return found
    if dataset.startswith((".", "/", "~")) or os.path.splitext(dataset)[1] in _BUILDERS:
        raise DataError(f"data.dataset={dataset!r}: no such file or folder")
    return None


def _builder(files: list[str]) -> str:
    kinds = {_BUILDERS.get(os.path.splitext(f)[1]) for f in files}
    if None in kinds or len(kinds) != 1:
        raise DataError(
            f"local dataset files must all be one of .txt, .jsonl/.json, .parquet, .csv; "
            f"got {sorted({os.path.splitext(f)[1] for f in files})}"
        )
    return kinds.pop()


def _batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
