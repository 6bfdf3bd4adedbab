"""docs/security.md's table of who may call which route is the one the route table
makes (server/api/permtable.py): the document cannot drift from what is enforced."""

from __future__ import annotations

import os
import subprocess
import sys

from server.api.permtable import BEGIN, DOC, END, permission_table, with_table
from server.api.routes import build_router

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _documented() -> str:
    with open(DOC, encoding="utf-8") as fh:
        text = fh.read()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def test_the_document_holds_exactly_the_generated_table() -> None:
    assert os.path.samefile(DOC, os.path.join(ROOT, "docs", "security.md"))
    assert _documented() == "\n" + permission_table(), (
        "docs/security.md's permission table is stale: run "
        "python -m server.api.permtable --update")


def test_the_table_has_a_row_per_route_and_says_who_may() -> None:
    table = permission_table()
    rows = {line.split(" | ")[0].strip("| `"): line.split(" | ")[1:]
            for line in table.splitlines()[2:]}
    assert len(rows) == len(list(build_router().routes()))
    assert table.splitlines()[0] == ("| method and path | permission | viewer | operator "
                                     "| admin |")
    # Stopping is always safe; the audit trail and the users are the admin's alone.
    assert rows["POST /robot/stop"] == ["`stop`", "yes", "yes", "yes |"]
    assert rows["GET /audit"] == ["`audit`", "-", "-", "yes |"]
    assert rows["POST /admin/users"] == ["`users`", "-", "-", "yes |"]
    assert rows["POST /"] == ["`submit`", "-", "yes", "yes |"]
    assert rows["GET /health"] == ["`public`", "yes", "yes", "yes |"]


def test_the_module_prints_it_and_replaces_only_the_marked_part() -> None:
    out = subprocess.run([sys.executable, "-m", "server.api.permtable"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout == permission_table()
    text = f"# title\n{BEGIN}\nold rows\n{END}\nafter\n"
    assert with_table(text, "| new |\n") == f"# title\n{BEGIN}\n| new |\n{END}\nafter\n"
