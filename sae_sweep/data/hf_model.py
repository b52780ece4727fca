"""Load a `transformers` model and its tokenizer, and read (or replace) one module's output.

The hooked site is a module name from `model.named_modules()`; its output (the first element
when the module returns a tuple) is the activation. For a decoder block that is the residual
stream after the block; for `...mlp` / `...self_attn` it is that sublayer's contribution.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .source import DataError

_BLOCK = re.compile(r"\.\d+$")


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    causal_lm: bool
    """True when the model predicts next tokens (then loss recovered is defined)."""
    device: torch.device


def load_model(name: str, device: str, dtype: str) -> LoadedModel:
    """The model (causal LM if it is one, else the bare encoder) and its tokenizer, in eval mode."""
    import transformers
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch_device = _device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        config = transformers.AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"data.model={name!r} cannot be loaded: {_first_line(exc)}. It is neither a local "
            "folder nor in the Hugging Face cache (the hub is unreachable or HF_HUB_OFFLINE=1). "
            f"Fix: download it where there is internet (`hf download {name}`) and copy the cache, "
            "or set data.model to a local folder saved with save_pretrained."
        ) from exc
    # A causal LM by its saved architecture (BERT's config also maps to a causal head class)
    architectures = getattr(config, "architectures", None) or []
    if architectures:
        causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    else:
        causal = type(config) in AutoModelForCausalLM._model_mapping
    loader = AutoModelForCausalLM if causal else AutoModel
    try:
        model = loader.from_pretrained(name, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as exc:
        raise DataError(f"data.model={name!r}: the weights cannot be loaded: {exc}") from exc
    model.to(torch_device).eval().requires_grad_(False)
    return LoadedModel(model, tokenizer, causal, torch_device)


def find_site(model: torch.nn.Module, site: str) -> torch.nn.Module:
    """The module named `site`, or an error that lists the names that would work."""
    modules = dict(model.named_modules())
    if site in modules and site != "":
        return modules[site]
    names = [n for n in modules if n]
    blocks = [n for n in names if _BLOCK.search(n)]
    first_block = blocks[0] if blocks else ""
    inside = [n for n in names if first_block and n.startswith(first_block + ".")]
    close = difflib.get_close_matches(site, names, n=5, cutoff=0.5)
    raise DataError(
        f"data.site={site!r} is not a module of {type(model).__name__}.\n"
        f"  closest names: {close or 'none'}\n"
        f"  blocks (residual stream after each): {_abbrev(blocks)}\n"
        f"  inside a block (e.g. mlp / attention output): {_abbrev(inside)}\n"
        "Fix: set data.site to one of these (all names: model.named_modules())."
    )


class _StopForwardError(Exception):
    """Raised by the capture hook: nothing after the hooked site needs computing."""


@torch.no_grad()
def site_activations(model: torch.nn.Module, site: torch.nn.Module, ids: torch.Tensor):
    """(B, T, d) output of `site` for token ids (B, T); the forward pass stops at the site."""
    captured = {}

    def hook(_module, _inputs, output):
        captured["x"] = output[0] if isinstance(output, tuple) else output
        raise _StopForwardError

    handle = site.register_forward_hook(hook)
    try:
        model(input_ids=ids)
    except _StopForwardError:
        pass
    finally:
        handle.remove()
    if "x" not in captured:
        raise DataError("the hooked site did not run during the forward pass: choose another site")
    return captured["x"]


@contextmanager
def replaced_output(
    site: torch.nn.Module, replace: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Within the block, `site`'s output (first element if a tuple) becomes `replace(output)`."""

    def hook(_module, _inputs, output):
        if isinstance(output, tuple):
            return (replace(output[0]), *output[1:])
        return replace(output)

    handle = site.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def special_ids(tokenizer) -> list[int]:
    """BOS/EOS/pad/unk... ids: the positions `exclude_special_tokens` leaves out."""
    return sorted(set(getattr(tokenizer, "all_special_ids", []) or []))


def _device(name: str) -> torch.device:
    """`auto` and `cuda` are the current GPU: the job's own, which the job made current."""
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda" if name == "auto" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataError(
            f"data.lm_device={name!r} but CUDA is not available. Fix: data.lm_device=cpu"
        )
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _abbrev(names: list[str], limit: int = 12) -> str:
    if len(names) <= limit:
        return str(names)
    return f"{names[:limit]} ... ({len(names)} in all)"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
