"""Who may call which route: the table of docs/security.md, made from the route table
(each route's one permission) and the roles' permissions, so the document cannot drift
from what the server enforces (tests/test_security_doc.py compares them).

    python -m server.api.permtable            # print the table
    python -m server.api.permtable --update   # write it into docs/security.md
"""

from __future__ import annotations

import os
import sys

from server.api.routes import build_router
from server.guard.permissions import ROLES, allowed

BEGIN = "<!-- permissions:begin -->"
END = "<!-- permissions:end -->"
DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "docs", "security.md")


def permission_table() -> str:
    """Markdown: one row per route, `METHOD /path | permission | a column per role`."""
    lines = [f"| method and path | permission | {' | '.join(ROLES)} |",
             f"| --- | --- |{' --- |' * len(ROLES)}"]
    for method, pattern, perm in build_router().routes():
        cells = ["yes" if allowed(role, perm) else "-" for role in ROLES]
        lines.append(f"| `{method} {pattern}` | `{perm}` | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def with_table(text: str, table: str) -> str:
    """``text`` with the lines between the markers replaced by ``table``."""
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"{BEGIN} ... {END} not found")
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def main(argv: list[str]) -> int:
    table = permission_table()
    if argv[1:] == ["--update"]:
        with open(DOC, encoding="utf-8") as fh:
            text = fh.read()
        with open(DOC, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(with_table(text, table))
        return 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
