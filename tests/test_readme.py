"""The README and the manual in docs/ say what the code does: every command they show is
checked, and the config reference is current.

Commands are the lines of ```bash blocks and the inline code spans that start with one of
the project's programs. Each is checked as far as it can be without running a sweep:
- `sae-sweep ...` (and `python -m sae_sweep.data.build_cache ...`, which takes the same
  overrides): the config composes with those overrides, the job's config validates, and
  the launcher and sweeper keys exist (a sweep override `a,b` is checked at its first value);
- `sae-analysis`, `sae-export`, `sae-sweep-status`, `python -m MODULE`, `python SCRIPT.py`:
  the arguments parse with the program's own parser (its `parse_args` is stopped there);
- `bash SCRIPT`: the script exists and has every option the command passes.
Set-up commands (venv, pip, `.` activate) are left alone; a command of any other program
fails the test, so a new kind of command needs a checker here. The programs themselves run
in their own tests (sweeps, analysis, export, status, the GPU check's dry run).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import runpy
import shlex
import sys
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from sae_sweep.config.schema import job_config
from sae_sweep.config_reference import END, START, markdown_table
from sae_sweep.main import CONF_DIR  # also registers the schemas, resolvers and sweeps
from sae_sweep.models import validate

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIG_PAGE = ROOT / "docs" / "configuration.md"

PROGRAMS = ("sae-sweep", "sae-analysis", "sae-export", "sae-sweep-status", "python", "bash")
SETUP = ("python3 -m venv", ". ", "pip ", "wandb sync")
PARSERS = {
    "sae-analysis": "analysis.cli",
    "sae-export": "sae_sweep.export.cli",
    "sae-sweep-status": "sae_sweep.sweep.bookkeeping.status",
}
SAME_OVERRIDES_AS_A_SWEEP = ("sae_sweep", "sae_sweep.data.build_cache")


def _commands(path: Path) -> list[str]:
    """The commands of a page: ```bash blocks (comments dropped, `\\` lines joined, `&&`
    chains split) and inline code spans that start with a program."""
    text = path.read_text()
    found = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                found += [part.strip() for part in line.split("&&")]
    outside = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for span in re.findall(r"`([^`\n]+)`", outside):
        if span.split(" ")[0] in PROGRAMS and " " in span:
            found.append(span)
    return [c for c in found if not c.startswith(SETUP)]


COMMANDS = [(p.relative_to(ROOT).as_posix(), c) for p in PAGES for c in _commands(p)]


class _StopAfterParseError(Exception):
    """Raised by the patched `parse_args` once a program's arguments have parsed."""


def _parse_only(monkeypatch, argv: list[str], run, source: Path) -> None:
    assert "parse_args(" in source.read_text(), (
        f"{source.name} has no argparse parser, so checking its command would run it: "
        "give it one, or a checker in tests/test_readme.py"
    )
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        real(self, args, namespace)
        raise _StopAfterParseError

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", argv)
    with warnings.catch_warnings(), pytest.raises(_StopAfterParseError):
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: module already imported
        run()


def _compose_and_validate(overrides: list[str]) -> None:
    fixed = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():  # `a,b`: each job gets one value; check the first
            first = next(override.sweep_string_iterator())
            fixed.append(f"{override.get_key_element()}={first}")
        else:
            fixed.append(override.input_line)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=fixed, return_hydra_config=True)
    with open_dict(cfg):
        del cfg["hydra"]  # composed above: the launcher's and sweeper's keys exist
    validate(job_config(OmegaConf.to_object(cfg)))


def _concrete(words: list[str]) -> list[str]:
    """Placeholders made concrete: `...` and `key=...` (your own overrides) dropped, optional
    `[--flag value]` kept without brackets, a sweep NAME made `quick`, a number F made 0.5."""
    out = []
    for word in words:
        if word == "..." or word.endswith("=..."):
            continue
        if "=" not in word:
            word = word.removeprefix("[").removesuffix("]")
        word = re.sub(r"=(NAME|<name>)$", "=quick", word)
        out.append("0.5" if word == "F" else word)
    return out


def _check(command: str, monkeypatch) -> None:
    words = _concrete(shlex.split(command))
    while re.match(r"^[A-Z_]+=", words[0]):  # an environment assignment, e.g. WANDB_MODE=online
        words = words[1:]
    if words[0] == "srun":  # srun's own options, then the command it runs
        words = words[next(i for i, w in enumerate(words) if w in PROGRAMS) :]
    program, args = words[0], words[1:]
    if program == "sae-sweep":
        _compose_and_validate(args)
    elif program in PARSERS:
        module = __import__(PARSERS[program], fromlist=["build_parser"])
        module.build_parser().parse_args(args)
    elif program == "python" and args[:1] == ["-m"]:
        module, rest = args[1], args[2:]
        if module in SAME_OVERRIDES_AS_A_SWEEP:
            _compose_and_validate([a for a in rest if a != "--verify"])
        elif module == "pytest":  # the suite itself; a marker it selects must be registered
            markers = [rest[i + 1] for i, arg in enumerate(rest) if arg == "-m"]
            assert all(m.removeprefix("not ") in ("gpu", "slow") for m in markers), markers
        else:
            source = Path(importlib.util.find_spec(module).origin)
            run = lambda: runpy.run_module(module, run_name="__main__")  # noqa: E731
            _parse_only(monkeypatch, [module, *rest], run, source)
    elif program == "python":
        script = ROOT / args[0]
        assert script.is_file(), f"{args[0]} does not exist"
        monkeypatch.chdir(ROOT)
        _parse_only(
            monkeypatch, [str(script), *args[1:]],
            lambda: runpy.run_path(str(script), run_name="__main__"), script,
        )  # fmt: skip
    elif program == "bash":
        script = ROOT / args[0]
        assert script.is_file(), f"{args[0]} does not exist"
        for option in (a for a in args[1:] if a.startswith("--")):
            assert option in script.read_text(), f"{args[0]} has no option {option}"
    else:
        pytest.fail(f"no checker for `{program}`: add one to tests/test_readme.py")


def test_the_pages_show_commands():
    pages = {page for page, _ in COMMANDS}
    assert {"README.md", "docs/sweeps.md", "docs/analysis.md", "docs/export.md"} <= pages
    assert len(COMMANDS) > 40


@pytest.mark.parametrize(("page", "command"), COMMANDS)
def test_command_in_the_docs_is_current(page, command, monkeypatch):
    _check(command, monkeypatch)


def test_a_stale_command_fails_the_check(monkeypatch):
    with pytest.raises(Exception, match="sae.k"):
        _check("sae-sweep sae=gated sae.k=16", monkeypatch)
    with pytest.raises(SystemExit):
        _check("sae-analysis multirun/x --no-such-option", monkeypatch)
    with pytest.raises(SystemExit):
        _check("python bench/step.py --no-such-option", monkeypatch)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces -> '-'."""
    headings = re.findall(
        r"^#+ (.+)$", re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M), flags=re.M
    )
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


LINKS = [
    (page, target)
    for page in PAGES
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text())
    if not target.startswith(("http://", "https://", "mailto:"))
]


@pytest.mark.parametrize(("page", "target"), LINKS, ids=[f"{p.name}->{t}" for p, t in LINKS])
def test_link_in_the_docs_resolves(page, target):
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    assert file.exists(), f"{page.name} links to {path}, which does not exist"
    if anchor and file.suffix == ".md":
        assert anchor in _anchors(file), f"{page.name} links to {target}: no such heading"


def _expand_braces(path: str) -> list[str]:
    """`models/{topk,batchtopk}.py` -> `models/topk.py`, `models/batchtopk.py`."""
    m = re.search(r"\{([^}]*)\}", path)
    if not m:
        return [path]
    alternatives = (path[: m.start()] + alt + path[m.end() :] for alt in m.group(1).split(","))
    return [p for alt in alternatives for p in _expand_braces(alt)]


REPO_PATH = re.compile(
    r"`((?:sae_sweep|analysis|hydra_plugins|conf|sweeps|bench|tests|docs)/[\w./{},*-]*)`"
)
PATHS = sorted(
    {(page.relative_to(ROOT).as_posix(), span) for page in PAGES
     for span in REPO_PATH.findall(page.read_text())}
)  # fmt: skip


@pytest.mark.parametrize(("page", "path"), PATHS)
def test_path_in_the_docs_exists(page, path):
    """A file the pages name (the map of where the science is, above all) is where they say."""
    for one in _expand_braces(path):
        if re.search(r"\b[A-Z]{3,}\b", one):  # a placeholder: sweeps/NAME.yaml
            continue
        assert list(ROOT.glob(one.rstrip("/"))), f"{page} names {one}, which does not exist"


def test_config_reference_is_current():
    text = CONFIG_PAGE.read_text()
    table = text[text.index(START) + len(START) : text.index(END)].strip()
    assert table == markdown_table().strip(), (
        "docs/configuration.md's config reference is stale: regenerate it with "
        "`python -m sae_sweep.config_reference --update docs/configuration.md`"
    )


def test_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300, (
        "README.md is for a newcomer (at most 300 lines): move the manual part into docs/"
    )
