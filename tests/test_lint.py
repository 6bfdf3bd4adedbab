"""The code stays ruff- and mypy-clean (settings in pyproject.toml)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_ruff_check_is_clean() -> None:
    if shutil.which("ruff") is None and subprocess.run(
            [sys.executable, "-m", "ruff", "--version"], capture_output=True).returncode != 0:
        pytest.skip("ruff is not installed (pip install -r requirements-dev.txt)")
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_is_clean() -> None:
    # `python -m mypy` alone checks the project: the files and settings are in
    # pyproject.toml's [tool.mypy]. mypy is in requirements-dev.txt, so it is never skipped.
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def _project_imports(path: str) -> set[str]:
    """Top-level names of everything the module imports, at any depth (lazy imports too).
    The layers and cycles are checked in tests/test_layout.py."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_api_client_is_one_file_with_only_the_standard_library() -> None:
    # A user copies client/api.py alone to a client PC: nothing of this project, no pip.
    imports = _project_imports(os.path.join(ROOT, "client", "api.py"))
    assert imports <= set(sys.stdlib_module_names) | {"__future__"}, imports
