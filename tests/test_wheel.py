"""A built wheel carries conf/ and sweeps/, so an installed `sae-sweep` runs outside a checkout.

(.ci/run goes further: it installs the wheel into a fresh environment and runs a short
quick sweep and its analysis from an empty folder.)
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("sae_sweep", "analysis", "hydra_plugins", "conf", "sweeps")
FILES = ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in")


def test_wheel_ships_the_yaml_trees_and_the_entry_points(tmp_path):
    pytest.importorskip("setuptools", reason="building a wheel without isolation needs it")
    src = tmp_path / "src"  # a copy, so the build leaves no build/ or egg-info in the checkout
    for name in SOURCES:
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in FILES:
        shutil.copy2(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "-w", str(tmp_path / "dist"), str(src)],
        check=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("sae_sweep-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    for tree in SOURCES:
        shipped_as = "sae_sweep/" if tree in ("conf", "sweeps") else ""  # see setup.py
        expected = {
            shipped_as + p.relative_to(ROOT).as_posix()
            for p in (ROOT / tree).rglob("*")
            if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts
        }
        assert expected, tree
        assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script in ("sae-sweep", "sae-analysis", "sae-sweep-status", "sae-export"):
        assert f"{script} = " in scripts
