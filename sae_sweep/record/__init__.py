"""The local record of one job (docs/design.md, "The record") and its W&B mirror; `layout`
names every file."""

from . import layout
from .atomic import atomic_write_json, atomic_write_text, replace_atomically
from .run_logger import RunLogger

__all__ = [
    "RunLogger",
    "atomic_write_json",
    "atomic_write_text",
    "layout",
    "replace_atomically",
]
