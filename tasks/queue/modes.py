"""The queue's mode (open, draining, maintenance) as it is stored: the meta keys and
the maintenance record, one row per window from the drain or maintenance request until
the queue is opened again (schema in tasks/store/db.py; docs/queue.md).

Every change is a list of statements committed in one transaction with its audit row
(tasks/queue/shaping.py); nothing here holds a lock.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from tasks.models import format_time
from tasks.queue.state import DRAINING, MAINTENANCE, OPEN, OPEN_MODE, Mode
from tasks.store import Statement, TaskStore

MODES = (OPEN_MODE, DRAINING, MAINTENANCE)
_WINDOW = ("id, how, reason, opened, opened_by, maintenance_at, closed, closed_by, "
           "close_reason")


def _set_mode(conn: sqlite3.Connection, mode: str, window: int | None) -> None:
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('queue_mode', ?)", (mode,))
    if window is None:
        conn.execute("DELETE FROM meta WHERE key = 'maintenance_window'")
    else:
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('maintenance_window', ?)",
                     (str(window),))


def opened(how: str, mode: str, reason: str, by: str | None, now: float,
           into: list[int]) -> Statement:
    """A new window (``how``: "drain" or "maintenance") and the mode; its id is appended
    to ``into`` once the statement ran."""
    def run(conn: sqlite3.Connection) -> None:
        cur = conn.execute(
            "INSERT INTO maintenance(how, reason, opened, opened_by, maintenance_at) "
            "VALUES (?, ?, ?, ?, ?)", (how, reason, now, by, now if mode == MAINTENANCE else None))
        assert cur.lastrowid is not None
        _set_mode(conn, mode, cur.lastrowid)
        into.append(cur.lastrowid)
    return run


def entered(window: int, now: float) -> Statement:
    """A draining queue found empty, or maintenance asked while draining."""
    def run(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE maintenance SET maintenance_at = COALESCE(maintenance_at, ?) "
                     "WHERE id = ?", (now, window))
        _set_mode(conn, MAINTENANCE, window)
    return run


def closed(window: int | None, by: str | None, reason: str | None, now: float) -> Statement:
    def run(conn: sqlite3.Connection) -> None:
        if window is not None:
            conn.execute("UPDATE maintenance SET closed = ?, closed_by = ?, close_reason = ? "
                         "WHERE id = ? AND closed IS NULL", (now, by, reason, window))
        _set_mode(conn, OPEN_MODE, None)
    return run


def load(store: TaskStore) -> Mode:
    """The stored mode (after a restart); open when none was ever set."""
    mode = store.get_meta("queue_mode")
    window = store.get_meta("maintenance_window")
    if mode not in (DRAINING, MAINTENANCE) or window is None or not window.isdigit():
        return OPEN
    with store._reader() as conn:
        row = conn.execute("SELECT id, reason, opened, opened_by, maintenance_at "
                           "FROM maintenance WHERE id = ?", (int(window),)).fetchone()
    if row is None:
        return Mode(mode)
    return Mode(mode, row[0], row[1], row[3], row[2], row[4])


def describe(mode: Mode) -> dict[str, Any] | None:
    """The current window as clients read it (``maintenance`` of /queue/status)."""
    if mode.mode == OPEN_MODE:
        return None
    return {"id": mode.window, "reason": mode.reason, "opened_by": mode.opened_by,
            "opened_at": format_time(mode.opened_at),
            "maintenance_at": format_time(mode.maintenance_at)}


def windows(store: TaskStore, limit: int) -> list[dict[str, Any]]:
    """The maintenance record, newest first."""
    with store._reader() as conn:
        rows = conn.execute(f"SELECT {_WINDOW} FROM maintenance ORDER BY id DESC LIMIT ?",
                            (limit,)).fetchall()
    return [{"id": id_, "how": how, "reason": reason, "opened_at": format_time(opened_at),
             "opened_by": opened_by, "maintenance_at": format_time(maintenance_at),
             "closed_at": format_time(closed_at), "closed_by": closed_by,
             "close_reason": close_reason}
            for (id_, how, reason, opened_at, opened_by, maintenance_at, closed_at, closed_by,
                 close_reason) in rows]
