"""The packages import in one direction: no module imports one that imports it back.

A cycle is what forces imports to be delayed inside functions, and makes the order in which
modules happen to be imported decide whether the program starts. The graph is read from the
source with `ast`, so every import counts: top-level or inside a function, absolute or
relative, `from . import x`, and the package `__init__` a module's import runs first.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sae_sweep", "analysis", "hydra_plugins")


def module_files(root: Path = ROOT, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages (a package is its
    `__init__.py`)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _ancestors(name: str) -> list[str]:
    """The packages that importing `name` runs first: a.b.c -> [a, a.b]."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that importing `name` can run: each import statement anywhere in
    the file (a function's included; not those under `if TYPE_CHECKING:`, which never run),
    resolved to the deepest known module, with the packages above it. A module's own packages
    are left out where they are only on the way to a submodule: Python has started them before
    the module, so importing through them runs nothing; `from <own package> import <a name it
    defines>` does count."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    targets = []
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = package.split(".")
                source = ".".join(base[: len(base) - node.level + 1] + ([source] if source else []))
            for alias in node.names:  # `from pkg import x`: the submodule x, or a name of pkg
                sub = f"{source}.{alias.name}"
                targets.append(sub if sub in known else source)
    own = set(_ancestors(name))
    found = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target:
            found |= {target} | (set(_ancestors(target)) - own)
    found.discard(name)
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node of the tree, except the bodies of `if TYPE_CHECKING:` (type-only imports)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack += node.orelse
        else:
            stack += ast.iter_child_nodes(node)


def _is_type_checking(test: ast.expr) -> bool:
    """`TYPE_CHECKING` or `typing.TYPE_CHECKING` (not `not TYPE_CHECKING`, whose body runs)."""
    name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
    return name == "TYPE_CHECKING"


def import_graph(root: Path = ROOT, packages=PACKAGES) -> dict[str, set[str]]:
    files = module_files(root, packages)
    known = set(files)
    return {name: imported_modules(name, path, known) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None (depth-first search, iterative)."""
    state = dict.fromkeys(graph, 0)  # 0 unseen, 1 on the current path, 2 done
    for start in sorted(graph):
        if state[start]:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt, 2) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif state.get(nxt, 2) == 0:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_no_module_imports_one_that_imports_it_back():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle:\n  " + "\n  -> ".join(cycle)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module that importing `start` can run, directly or through others."""
    seen, stack = set(), [start]
    while stack:
        for nxt in graph[stack.pop()] - seen:
            seen.add(nxt)
            stack.append(nxt)
    return seen


def test_the_config_package_does_not_import_the_architectures():
    """The architectures extend the config schema (models/ imports config/); the schema store
    and the checks against an architecture sit above both, never inside config/."""
    graph = import_graph()
    for module in [m for m in graph if m.split(".")[:2] == ["sae_sweep", "config"]]:
        models = sorted(m for m in reachable(graph, module) if m.startswith("sae_sweep.models"))
        assert not models, f"{module} imports {models}, which build on the config"


def _package(root: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return import_graph(root, ("pkg",))


def test_the_graph_sees_every_form_of_import(tmp_path):
    """The reader itself: relative, absolute, function-level and `from . import x` imports,
    and the package `__init__`s on the way, make edges; a module's own packages and type-only
    imports do not."""
    graph = _package(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import f\n",
            "pkg/a.py": "def f():\n    from .sub import b\n",
            "pkg/sub/__init__.py": "from . import b\n",
            "pkg/sub/b.py": "import pkg.c\n",
            "pkg/c.py": "from .sub.b import thing\nfrom pkg import a\n",
            "pkg/d.py": "import typing\nif typing.TYPE_CHECKING:\n    from . import c\n",
            "pkg/e.py": "import typing\nif not typing.TYPE_CHECKING:\n    from . import c\n",
        },
    )
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub", "pkg.sub.b"},
        "pkg.sub": {"pkg.sub.b"},
        "pkg.sub.b": {"pkg.c"},
        "pkg.c": {"pkg.sub", "pkg.sub.b", "pkg.a"},
        "pkg.d": set(),  # a type-only import never runs
        "pkg.e": {"pkg.c"},
    }
    assert find_cycle(graph) == ["pkg.a", "pkg.sub", "pkg.sub.b", "pkg.c", "pkg.a"]
    (tmp_path / "pkg/sub/b.py").write_text("x = 1\n")
    assert find_cycle(import_graph(tmp_path, ("pkg",))) is None


def test_a_name_taken_from_the_own_package_counts(tmp_path):
    """`from . import NAME` needs the package's `__init__` to have run past NAME: a cycle
    when that `__init__` imports the module."""
    graph = _package(
        tmp_path,
        {"pkg/__init__.py": "from .a import f\nNAME = 1\n", "pkg/a.py": "from . import NAME\n"},
    )
    assert find_cycle(graph) == ["pkg", "pkg.a", "pkg"]
