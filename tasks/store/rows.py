"""How stored rows become the Task records the task layer uses; nothing here raises
on whatever a row holds."""

from __future__ import annotations

import collections
import json
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from shared.jsonbounds import text_too_deep
from tasks.models import Task, TaskStatus

log = logging.getLogger("tasks.store")

COLUMNS = ("seq, task_id, cmd_type, params, status, submitted, started, ended, result, "
           "progress, retry_of, run_s, sequence_id, step, submitted_by, cancelled_by, external_id, "
           "rank, not_before")

# What a stored value that cannot be decoded is served as: the row stays readable,
# and the placeholder says so instead of pretending to be data.
UNREADABLE = "unreadable"
_logged_unreadable: collections.deque[tuple[str, str]] = collections.deque(maxlen=256)


def loads(text: str, task_id: str, column: str) -> Any:
    """Decode one stored JSON value; never raises (a bad row must not break /tasks).

    Text nested deeper than shared/jsonbounds.py allows is not decoded at all: it might decode
    here and still fail when a reply is encoded in a deeper thread."""
    try:
        if text_too_deep(text):
            raise ValueError("nested too deep")
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        reason = f"{type(exc).__name__}: {exc}"[:200]
        if _logged_once(task_id, column):
            log.error("task %s: stored %s cannot be decoded (%s); served as a placeholder",
                      task_id, column, reason)
        return {UNREADABLE: reason}


def _logged_once(task_id: str, column: str) -> bool:
    """True the first time (task_id, column) is reported: a bad row read on every
    GET /tasks must not log on every read."""
    if (task_id, column) in _logged_unreadable:
        return False
    _logged_unreadable.append((task_id, column))
    return True


def _status(text: Any, task_id: str) -> TaskStatus:
    try:
        return TaskStatus(text)
    except ValueError:
        # Only a file written by something else holds one; reading it as failed keeps
        # the row listed, final, and never picked up again as work.
        if _logged_once(task_id, "status"):
            log.error("task %s: stored status %s is not a task status; read as failed",
                      task_id, repr(text)[:60])
        return TaskStatus.FAILED


def row_to_task(row: sqlite3.Row | tuple) -> Task:
    (seq, task_id, cmd_type, params, status, submitted, started, ended, result, progress,
     retry_of, run_s, sequence_id, step, submitted_by, cancelled_by, external_id, rank,
     not_before) = row
    return Task(
        task_id=task_id, cmd_type=cmd_type, params=loads(params, task_id, "params"),
        status=_status(status, task_id), submitted=submitted, started=started, ended=ended,
        result=loads(result, task_id, "result") if result is not None else None,
        progress=loads(progress, task_id, "progress") if progress is not None else None,
        retry_of=retry_of, seq=seq,
        run_s=float(run_s) if isinstance(run_s, (int, float)) and run_s >= 0 else None,
        sequence_id=sequence_id, step=step if isinstance(step, int) else None,
        submitted_by=submitted_by, cancelled_by=cancelled_by, external_id=external_id,
        rank=rank if isinstance(rank, int) else None,
        not_before=float(not_before) if isinstance(not_before, (int, float)) else None)


def with_items(conn: sqlite3.Connection, tasks: list[Task]) -> list[Task]:
    """Attach each task's progress items (kept in their own table) to its progress."""
    wanted = [t.task_id for t in tasks
              if isinstance(t.progress, dict) and "items" not in t.progress
              and UNREADABLE not in t.progress]
    if not wanted:
        return tasks
    items: dict[str, list[Any]] = {task_id: [] for task_id in wanted}
    for start in range(0, len(wanted), 500):  # within any SQLite's parameter limit
        chunk = wanted[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for task_id, text in conn.execute(
                f"SELECT task_id, item FROM progress_items WHERE task_id IN ({marks}) "
                "ORDER BY task_id, n", chunk):
            items[task_id].append(loads(text, task_id, "progress item"))
    for task in tasks:
        if task.task_id in items:
            task.progress = {**(task.progress or {}), "items": items[task.task_id]}
    return tasks


def status_value(status: TaskStatus | str) -> str:
    """The stored form of a status. Not str(): for a str Enum that is the member's
    name on some Pythons. A str that is no status passes unchanged (it matches nothing)."""
    return status.value if isinstance(status, TaskStatus) else status


def filters(*, status: TaskStatus | str | None = None, cmd_type: str | None = None,
            before_seq: int | None = None,
            sequence_id: str | None = None,
            external_id: str | None = None) -> tuple[str, list[Any]]:
    """A WHERE clause of fixed column tests and its parameters (values never in SQL)."""
    stored = None if status is None else status_value(status)
    return where((("status = ?", stored), ("cmd_type = ?", cmd_type),
                  ("seq < ?", before_seq), ("sequence_id = ?", sequence_id),
                  ("external_id = ?", external_id)))


def where(tests: Any) -> tuple[str, list[Any]]:
    """WHERE of the (fixed clause, value) pairs whose value is given, and the values."""
    given = [(clause, value) for clause, value in tests if value is not None]
    if not given:
        return "", []
    return "WHERE " + " AND ".join(c for c, _ in given), [v for _, v in given]


# One SQL statement and its parameters, built by a store module (tasks/store/seqstore.py)
# and run inside another write's transaction (TaskStore.finish's ``extra``); or a
# function of the connection, for a write that must read first (an audit row's chain).
Statement = tuple[str, tuple[Any, ...]] | Callable[[sqlite3.Connection], Any]


def run_statements(conn: sqlite3.Connection, statements: Any) -> None:
    for statement in statements:
        if callable(statement):
            statement(conn)
        else:
            conn.execute(*statement)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


