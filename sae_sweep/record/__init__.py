"""The local record of one job (docs/design.md, "The record") and its W&B mirror."""

from .atomic import atomic_write_json, atomic_write_text, replace_atomically
from .run_logger import METRICS_FILE, SUMMARY_FILE, RunLogger

__all__ = [
    "METRICS_FILE",
    "SUMMARY_FILE",
    "RunLogger",
    "atomic_write_json",
    "atomic_write_text",
    "replace_atomically",
]
