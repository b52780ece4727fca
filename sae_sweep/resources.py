"""Where the YAML trees are: `conf/` (the config groups) and `sweeps/` (the sweep files).

Both stay at the top of the repository, where they are edited. A built wheel ships them
inside the package as `sae_sweep/conf` and `sae_sweep/sweeps` (setup.py), so an installed
`sae-sweep` runs from any folder; a checkout or an editable install reads the repository's.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _shipped_dir(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):  # wheel, then checkout
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"sae_sweep cannot find its {name}/ folder (looked in {_PACKAGE / name} and "
        f"{_PACKAGE.parent / name}). Install from a built wheel (`pip wheel --no-deps .`) "
        "or install the checkout editable (`pip install -e .`)."
    )


CONF_DIR = _shipped_dir("conf")
SWEEPS_DIR = _shipped_dir("sweeps")
