"""A Hydra callback that checks the output folder can be written before any job starts.

Without it an unwritable `hydra.run.dir` / `hydra.sweep.dir` ends in Hydra's "Unable to
configure handler 'file'", the real cause buried above it. Registered in conf/config.yaml
under `hydra.callbacks.output_dir`; callbacks start before the sweeper writes anything.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class OutputDirCheck(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(str(config.hydra.run.dir)), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(str(config.hydra.sweep.dir)), "hydra.sweep.dir")


def check_writable(folder: Path, key: str) -> None:
    """Create `folder` and a file in it; on failure print the cause and the fix, exit 1."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        # SystemExit passes Hydra's error report untouched: this message is the last line
        sys.exit(
            f"cannot write the output folder {key}={folder} ({type(exc).__name__}: {exc}). "
            f"Fix: {key}=<a writable folder> (or free space / fix permissions there)."
        )
