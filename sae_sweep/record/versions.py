"""Library versions and the code's provenance (git commit, clean tree), recorded with every
run for reproducibility.

`versions()` goes into each run's summary.json (`versions`) and the sweep's sweep.json:
- `git_commit`: the commit of the sae-sweep checkout the code runs from, with `+dirty` when
  the tree was not clean (the form records have always had);
- `git_clean`: whether `git status --porcelain` of that checkout was empty (ignored files
  do not count; untracked ones do);
- both null when the code does not run from a checkout (an installed wheel): the package
  version (`sae-sweep`) then names the code.

`require_clean_tree=true` refuses a launch from an unclean tree (`unclean_tree_message`).
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

_PACKAGES = ("sae-sweep", "torch", "hydra-core", "omegaconf", "wandb", "safetensors", "numpy")

CODE_ROOT = Path(__file__).resolve().parents[2]
"""The folder holding the `sae_sweep` package: a checkout's root, or site-packages."""

DIRTY = "+dirty"
"""Suffix of `git_commit` for a run made from an unclean tree."""


@cache
def versions() -> dict[str, str | bool | None]:
    found: dict[str, str | bool | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    tree = code_tree()
    found["git_commit"] = tree.label
    found["git_clean"] = tree.clean
    return found


@dataclass(frozen=True)
class CodeTree:
    """The git state of the checkout the code runs from."""

    root: Path
    """The folder whose state this is (`CODE_ROOT`)."""
    commit: str | None
    """HEAD's commit; None outside a checkout (an installed wheel) or without git."""
    changed: tuple[str, ...] = ()
    """`git status --porcelain` lines: modified, added, deleted and untracked files."""

    @property
    def clean(self) -> bool | None:
        """True when nothing is changed; None when the commit is unknown."""
        return None if self.commit is None else not self.changed

    @property
    def label(self) -> str | None:
        """The commit, with `+dirty` when the tree is not clean."""
        return None if self.commit is None else self.commit + ("" if self.clean else DIRTY)


def code_tree(root: Path | None = None) -> CodeTree:
    """The git state of `root` (default `CODE_ROOT`), when it is the top of a git checkout.
    A package installed into site-packages (even of a virtual environment inside some
    checkout) has no commit."""
    root = Path(root or CODE_ROOT)

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != Path(root).resolve():
            return CodeTree(root, None)
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain")
        if head.returncode != 0 or status.returncode != 0:
            return CodeTree(root, None)
    except (OSError, subprocess.SubprocessError):
        return CodeTree(root, None)
    changed = tuple(line for line in status.stdout.splitlines() if line.strip())
    return CodeTree(root, head.stdout.strip(), changed)


def unclean_tree_message(tree: CodeTree, shown: int = 5) -> str | None:
    """Why `require_clean_tree=true` refuses to start from `tree`, naming the first changed
    files and the fix; None when the tree is clean or not a checkout (an installed wheel is
    named by its version)."""
    if tree.clean is not False:
        return None
    files = [line[3:] for line in tree.changed[:shown]]
    more = len(tree.changed) - len(files)
    listed = ", ".join(files) + (f" and {more} more" if more > 0 else "")
    return (
        f"require_clean_tree=true: the sae-sweep checkout at {tree.root} has uncommitted "
        f"changes ({listed}), so its runs could not name the code that made them. Fix: "
        "commit (or stash) the changes, and add new files to .gitignore or to a commit; or "
        "launch without require_clean_tree=true (the runs then record git_clean=false)."
    )
