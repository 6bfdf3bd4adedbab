"""The layout tells the architecture (docs/architecture.md): read from the imports with
`ast`, the project has no import cycle, each layer imports only what lies below it, the
client reaches nothing of the server side, and modules and folders stay small.

Every import counts: at module level, inside a function (lazy) and under
`TYPE_CHECKING`, since each is a dependency a reader has to follow. The checker itself
is tested on a small tree written for the purpose, so a check that finds nothing is
known to be able to find something.
"""

from __future__ import annotations

import ast
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.conftest import ROOT

# The project's own top-level modules and packages (bench/, examples/, tests/ are not
# imported by it). A new top-level package must be added here and to a layer below.
PROJECT = ("main", "constants", "settings", "client", "console", "i18n", "robot", "server",
           "shared", "tasks")

# What each part may import, by top-level name: downward only. `shared` and `i18n` are
# below every layer; robot/ and tasks/ know nothing of each other (server/ wires them).
LAYERS: dict[str, set[str]] = {
    "shared": set(),
    "i18n": set(),
    "constants": set(),
    "settings": {"constants", "i18n"},
    "robot": {"shared", "i18n"},
    "tasks": {"shared", "i18n"},
    "server": {"tasks", "robot", "shared", "i18n", "settings", "constants"},
    "console": {"robot", "shared", "i18n", "settings", "constants"},
    "client": {"i18n", "constants", "console"},
}
# The client (a separate program on a client PC) may reach these and nothing else, even
# through what it imports: the console's words and output, never its menus or banner.
CLIENT_REACHES = ("client", "i18n", "constants", "console.text", "console.terminal")

MAX_LINES = 400
MAX_MODULES_PER_FOLDER = 12


def module_files(root: str, tops: Iterable[str]) -> dict[str, str]:
    """Dotted module name -> file, for the given top-level modules and packages."""
    found: dict[str, str] = {}
    for top in tops:
        single = os.path.join(root, top + ".py")
        if os.path.isfile(single):
            found[top] = single
            continue
        for folder, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
            package = os.path.relpath(folder, root).replace(os.sep, ".")
            for name in files:
                if name.endswith(".py"):
                    stem = name[:-3]
                    found[package if stem == "__init__" else f"{package}.{stem}"] = \
                        os.path.join(folder, name)
    return found


def import_graph(root: str, tops: Iterable[str]) -> dict[str, set[str]]:
    """Which project modules each project module imports.

    `from a.b import c` is an edge to module `a.b.c` when that is a module, else to
    `a.b`; relative imports are resolved. A package's `__init__` is not counted as
    imported by importing one of its submodules (Python runs it, but it is not the
    dependency a reader follows)."""
    files = module_files(root, tops)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                edges.update(_known(alias.name, files) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    anchor = ".".join(parts[:len(parts) - node.level + 1])
                    base = ".".join(part for part in (anchor, base) if part)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    edges.add(sub if sub in files else _known(base, files))
        edges.discard("")
        edges.discard(name)
        graph[name] = edges
    return graph


def _known(dotted: str, files: dict[str, str]) -> str:
    """The longest prefix of `dotted` that is a project module ('' if none)."""
    parts = dotted.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in files:
            return candidate
        parts.pop()
    return ""


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer_leaks(graph: dict[str, set[str]], layers: dict[str, set[str]]) -> dict[str, list[str]]:
    """module -> the imports its layer may not make."""
    leaks = {}
    for name, edges in graph.items():
        top = name.split(".")[0]
        if top not in layers:
            continue
        bad = sorted(e for e in edges if e.split(".")[0] not in layers[top] | {top})
        if bad:
            leaks[name] = bad
    return leaks


def reachable(graph: dict[str, set[str]], start: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def _within(name: str, allowed: Iterable[str]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


# -- the project ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT, PROJECT)


def test_every_top_level_module_belongs_to_the_layout() -> None:
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    tops = {path.split("/")[0].removesuffix(".py") for path in tracked}
    assert tops - set(PROJECT) <= {"bench", "examples", "tests", "deploy"}, \
        "a new top-level module or package: add it to PROJECT and LAYERS"
    assert set(LAYERS) | {"main"} == set(PROJECT)


def test_the_project_has_no_import_cycle(graph: dict[str, set[str]]) -> None:
    assert len(graph) > 80  # the whole project was read
    assert cycles(graph) == []


def test_each_layer_imports_only_what_lies_below_it(graph: dict[str, set[str]]) -> None:
    assert layer_leaks(graph, LAYERS) == {}


def test_the_client_reaches_nothing_of_the_server_side(graph: dict[str, set[str]]) -> None:
    client = [name for name in graph if name.split(".")[0] == "client"]
    outside = sorted(n for n in reachable(graph, client) if not _within(n, CLIENT_REACHES))
    assert outside == []


def test_modules_and_folders_stay_small() -> None:
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    too_long, folders = {}, {}
    for path in tracked:
        if path.split("/")[0] == "tests" or not os.path.isfile(os.path.join(ROOT, path)):
            continue
        with open(os.path.join(ROOT, path), encoding="utf-8") as fh:
            lines = sum(1 for _ in fh)
        if lines > MAX_LINES:
            too_long[path] = lines
        folders.setdefault(os.path.dirname(path) or ".", []).append(path)
    crowded = {folder: len(paths) for folder, paths in folders.items()
               if len(paths) > MAX_MODULES_PER_FOLDER}
    assert too_long == {}, f"modules over {MAX_LINES} lines"
    assert crowded == {}, f"folders with more than {MAX_MODULES_PER_FOLDER} modules"


def test_the_seams_old_import_path_still_works() -> None:
    # A lab's codec written against robot.codec keeps loading; robot.codecs is preferred.
    import robot.codec
    import robot.codecs

    for name in robot.codecs.__all__:
        assert getattr(robot.codec, name) is getattr(robot.codecs, name)


# -- the checker, on a tree written for it ---------------------------------------------------
def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checker_finds_a_cycle_through_a_lazy_or_type_only_import(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "low/__init__.py": "",
        "low/a.py": "from low import b\n",
        "low/b.py": "def f():\n    from .c import X\n",
        "low/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import low.a\n",
        "low/d.py": "from low.a import thing\n",  # into the cycle, not part of it
    })
    found = cycles(import_graph(str(tmp_path), ["low"]))
    assert found == [["low.a", "low.b", "low.c"]]


def test_the_checker_finds_a_layer_leak_and_what_the_client_reaches(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "robot/__init__.py": "",
        "robot/x.py": "import json\nfrom shared import util\n",
        "tasks/__init__.py": "",
        "tasks/y.py": "from robot.x import thing\n",
        "shared/__init__.py": "",
        "shared/util.py": "",
        "console/__init__.py": "",
        "console/text.py": "",
        "console/menus.py": "import robot\n",
        "client/__init__.py": "",
        "client/cli.py": "from console import text\nfrom console.menus import ask\n",
    })
    graph = import_graph(str(tmp_path), ["robot", "tasks", "shared", "console", "client"])
    assert graph["client.cli"] == {"console.text", "console.menus"}
    assert layer_leaks(graph, LAYERS) == {"tasks.y": ["robot.x"]}
    client = reachable(graph, ["client.cli"])
    assert sorted(n for n in client if not _within(n, CLIENT_REACHES)) == \
        ["console.menus", "robot"]
