"""How stored rows become the dicts the task layer uses; nothing here raises on
whatever a row holds."""

from __future__ import annotations

import collections
import json
import logging
import sqlite3
from typing import Any

from robot.bounds import text_too_deep

log = logging.getLogger("tasks.store")

COLUMNS = ("seq, task_id, cmd_type, params, status, submitted, started, ended, result, "
           "progress, retry_of")

# What a stored value that cannot be decoded is served as: the row stays readable,
# and the placeholder says so instead of pretending to be data.
UNREADABLE = "unreadable"
_logged_unreadable: collections.deque[tuple[str, str]] = collections.deque(maxlen=256)


def loads(text: str, task_id: str, column: str) -> Any:
    """Decode one stored JSON value; never raises (a bad row must not break /tasks).

    Text nested deeper than robot.bounds allows is not decoded at all: it might decode
    here and still fail when a reply is encoded in a deeper thread."""
    try:
        if text_too_deep(text):
            raise ValueError("nested too deep")
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        reason = f"{type(exc).__name__}: {exc}"[:200]
        if (task_id, column) not in _logged_unreadable:
            _logged_unreadable.append((task_id, column))
            log.error("task %s: stored %s cannot be decoded (%s); served as a placeholder",
                      task_id, column, reason)
        return {UNREADABLE: reason}


def row_to_dict(row: sqlite3.Row | tuple) -> dict[str, Any]:
    (seq, task_id, cmd_type, params, status, submitted, started, ended, result, progress,
     retry_of) = row
    return {
        "seq": seq, "task_id": task_id, "cmd_type": cmd_type,
        "params": loads(params, task_id, "params"),
        "status": status, "submitted": submitted, "started": started, "ended": ended,
        "result": loads(result, task_id, "result") if result is not None else None,
        "progress": loads(progress, task_id, "progress") if progress is not None else None,
        "retry_of": retry_of,
    }


def with_items(conn: sqlite3.Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Attach each row's progress items (kept in their own table) to its progress."""
    wanted = [r["task_id"] for r in rows
              if isinstance(r["progress"], dict) and "items" not in r["progress"]
              and UNREADABLE not in r["progress"]]
    if not wanted:
        return rows
    items: dict[str, list[Any]] = {task_id: [] for task_id in wanted}
    for start in range(0, len(wanted), 500):  # within any SQLite's parameter limit
        chunk = wanted[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for task_id, text in conn.execute(
                f"SELECT task_id, item FROM progress_items WHERE task_id IN ({marks}) "
                "ORDER BY task_id, n", chunk):
            items[task_id].append(loads(text, task_id, "progress item"))
    for row in rows:
        if row["task_id"] in items:
            row["progress"] = {**row["progress"], "items": items[row["task_id"]]}
    return rows


def filters(*, status: str | None = None, cmd_type: str | None = None,
             before_seq: int | None = None) -> tuple[str, list[Any]]:
    """A WHERE clause of fixed column tests and its parameters (values never in SQL)."""
    clauses, args = [], []
    for clause, value in (("status = ?", status), ("cmd_type = ?", cmd_type),
                          ("seq < ?", before_seq)):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), args


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


