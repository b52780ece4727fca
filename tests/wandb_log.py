"""Read an offline W&B run's transaction log (`run-<id>.wandb`): the records a job sent, as
`wandb sync` would upload them. The file is W&B's LevelDB-style log: a 7-byte header, then
32 KiB blocks of chunks (checksum, length, type) holding serialised `Record` protobufs."""

from __future__ import annotations

import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

_HEADER = 7
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records, pos, pending = [], _HEADER, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def offline_run(folder: Path) -> dict:
    """The run, the summary and history keys and the artifacts of the one offline W&B run
    in `folder` (a job folder, or the report folder of the summary run)."""
    (log,) = Path(folder).glob("wandb/offline-run-*/run-*.wandb")
    out: dict = {"summary_keys": set(), "history_keys": set(), "artifacts": []}
    for r in read_records(log):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
        elif kind == "summary":
            out["summary_keys"] |= {u.key or "/".join(u.nested_key) for u in r.summary.update}
        elif kind == "history":
            out["history_keys"] |= {i.key or "/".join(i.nested_key) for i in r.history.item}
        elif kind == "artifact":
            out["artifacts"].append(r.artifact)
    for kind in ("summary_keys", "history_keys"):
        out[kind] = _logged_keys(out[kind])
    return out


def _logged_keys(items: set[str]) -> set[str]:
    """The keys as logged: W&B spreads a media value (table, image) over `<key>/_type`,
    `<key>/path`, ...; those are one key."""
    media = {k.removesuffix("/_type") for k in items if k.endswith("/_type")}
    return media | {k for k in items if not any(k.startswith(f"{m}/") for m in media)}
