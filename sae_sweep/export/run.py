"""Export one job's record (sae.safetensors + sae_config.json) as a SAELens folder."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from ..evaluation.catalogue import names
from ..record import layout
from ..record.layout import FIRING as FIRING_FILE
from ..record.layout import WEIGHTS as WEIGHTS_FILE
from ..record.layout import WEIGHTS_CONFIG as WEIGHTS_CONFIG_FILE
from ..record.malformed import read_checked_summary
from .saelens import ExportError, write_saelens_folder

SAELENS_DIR = layout.SAELENS_DIR
"""The job's own export, inside its record (what the W&B artifact holds)."""

# HF module names of a decoder block and its sublayers -> TransformerLens hook names, which
# SAEBench and SAELens's `HookedSAETransformer` expect. Unknown sites keep their HF name.
_TL_HOOKS = [
    (
        re.compile(
            r"^(?:transformer\.h|model\.layers|gpt_neox\.layers|model\.decoder\.layers)"
            r"\.(\d+)$"
        ),
        "blocks.{}.hook_resid_post",
    ),  # fmt: skip
    (re.compile(r"\.(\d+)\.(?:mlp|feed_forward)$"), "blocks.{}.hook_mlp_out"),
    (re.compile(r"\.(\d+)\.(?:attn|self_attn|attention)$"), "blocks.{}.hook_attn_out"),
]


def transformer_lens_hook(site: str) -> str | None:
    """`transformer.h.3` -> `blocks.3.hook_resid_post`; None when the site has no known form."""
    for pattern, template in _TL_HOOKS:
        m = pattern.search(site)
        if m:
            return template.format(m.group(1))
    return None


def saelens_metadata(knobs: dict[str, Any], summary: dict[str, Any] | None) -> dict[str, Any]:
    """cfg.json `metadata`: where the activations came from, and the sae-sweep run behind it."""
    site = knobs.get("data.site")
    tl_hook = transformer_lens_hook(site) if site else None
    meta: dict[str, Any] = {
        "model_name": knobs.get("data.model"),
        "hook_name": tl_hook or site,
        "hook_layer": int(re.search(r"\d+", tl_hook).group()) if tl_hook else None,
        "context_size": knobs.get("data.context_length"),
        "prepend_bos": knobs.get("data.prepend_bos"),
        "dataset_path": knobs.get("data.dataset") or knobs.get("data.path"),
        "exclude_special_tokens": knobs.get("data.exclude_special_tokens"),
        "hf_hook_name": site,
        "sae_sweep": {
            "knobs": knobs,
            "variant": (summary or {}).get("variant"),
            "sweep": (summary or {}).get("sweep"),
            "metrics": {k: v for k, v in (summary or {}).items() if k in names(exported=True)},
        },
    }
    return meta


def finished_summary(record_dir: Path) -> dict[str, Any]:
    """The job's summary, which must say `done`: weights of a job that failed (non-finite
    metrics, a divergence at its last step) or is still running are not a result."""
    summary, unreadable = read_checked_summary(Path(record_dir) / layout.SUMMARY)
    if unreadable:
        raise ExportError(unreadable)
    if summary is None:
        raise ExportError(
            f"{record_dir} has weights but no {layout.SUMMARY}: the job has not finished. Fix: "
            "export it once its summary says done."
        )
    if summary.get("status") != "done":
        error = str(summary.get("error") or "").strip().splitlines()[:1]
        raise ExportError(
            f"{record_dir}: its summary says {summary.get('status')!r}, not 'done'"
            f"{': ' + error[0] if error else ''}. Only a finished job's SAE is exported. Fix: "
            "re-run the job (rerun_failed=true in a sweep), or export another job."
        )
    return summary


def export_run(record_dir: Path, out_dir: Path, summary: dict[str, Any] | None = None) -> Path:
    """Write the SAELens folder of one finished job into `out_dir`; returns `out_dir`.

    `summary` (variant, sweep, metrics) defaults to the record's summary.json, which must
    say `done` (`finished_summary`).
    """
    record_dir = Path(record_dir)
    config_path = record_dir / WEIGHTS_CONFIG_FILE
    if not (config_path.is_file() and (record_dir / WEIGHTS_FILE).is_file()):
        raise ExportError(
            f"{record_dir} holds no trained SAE ({WEIGHTS_FILE} + {WEIGHTS_CONFIG_FILE}): "
            "the job failed or is still running. Fix: give a finished job folder or a sweep "
            "folder (with --all or --frontier)."
        )
    config = json.loads(config_path.read_text())
    if summary is None:
        summary = finished_summary(record_dir)
    knobs = config.get("config") or {}
    firing = record_dir / FIRING_FILE
    frequency = load_file(str(firing))["frequency"] if firing.is_file() else None
    return write_saelens_folder(
        out_dir,
        load_file(str(record_dir / WEIGHTS_FILE)),
        config["kind"],
        config.get("norm_scale", 1.0),
        saelens_metadata(knobs, summary),
        options=config.get("options", {}),
        firing_frequency=frequency,
    )
