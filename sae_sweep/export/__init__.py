"""Trained SAEs leave the sweep: the SAELens folder format, one job's export, `sae-export`."""

from .run import SAELENS_DIR, export_run, transformer_lens_hook
from .saelens import MAPPINGS, ExportError, read_saelens_folder, write_saelens_folder

__all__ = [
    "MAPPINGS",
    "SAELENS_DIR",
    "ExportError",
    "export_run",
    "read_saelens_folder",
    "transformer_lens_hook",
    "write_saelens_folder",
]
