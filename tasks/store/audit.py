"""The audit trail (docs/security.md): one append-only table in the task database.

A row is written inside the transaction of the change it records (``entry.statement()``
goes into that write's statements), so a change without its row, or a row without its
change, cannot exist. Each row carries the SHA-256 of the previous row's hash and its
own canonical content; triggers refuse UPDATE and DELETE. ``verify`` recomputes the
chain and names the first row that does not match.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tasks.store.rows import where

FIELDS = ("seq", "time", "principal", "role", "address", "action", "target", "before",
          "after", "reason", "request_id", "status")
_COLUMNS = ", ".join((*FIELDS, "hash"))
GENESIS = "0" * 64
# Targets whose status the row reads in the transaction, after the change.
_STATUS_OF = {"task": "SELECT status FROM tasks WHERE task_id = ?",
              "sequence": "SELECT status FROM sequences WHERE sequence_id = ?"}


def utc_iso(seconds: float) -> str:
    """ISO 8601 UTC with milliseconds and Z."""
    whole = time.gmtime(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", whole) + f".{int(seconds * 1000) % 1000:03d}Z"


@dataclass
class AuditEntry:
    """One state-changing request (or a refused one): who, from where, what, why."""

    principal: str
    role: str
    address: str
    action: str
    target: str | None = None
    before: str | None = None
    after: str | None = None  # None: read from the target (a task or sequence) when written
    reason: str | None = None
    request_id: str | None = None
    status: int | None = None  # the HTTP status of the reply
    target_kind: str | None = None  # "task", "sequence": whose status `after` is read
    wall: Callable[[], float] = time.time

    def statement(self) -> Callable[[sqlite3.Connection], int]:
        """The row as a statement run inside another write's transaction (last, so it
        sees the change)."""
        return lambda conn: write(conn, self)


def canonical(values: tuple[Any, ...] | list[Any]) -> str:
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))


def chain_hash(previous: str, values: tuple[Any, ...] | list[Any]) -> str:
    return hashlib.sha256((previous + canonical(values)).encode("utf-8")).hexdigest()


def write(conn: sqlite3.Connection, entry: AuditEntry) -> int:
    """Append ``entry`` (inside the caller's transaction); its seq."""
    after = entry.after
    if after is None and entry.target_kind in _STATUS_OF and entry.target:
        row = conn.execute(_STATUS_OF[entry.target_kind], (entry.target,)).fetchone()
        after = row[0] if row else None
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, previous = (last[0] + 1, last[1]) if last else (1, GENESIS)
    values = (seq, utc_iso(entry.wall()), entry.principal, entry.role, entry.address,
              entry.action, entry.target, entry.before, after, entry.reason,
              entry.request_id, entry.status)
    conn.execute(f"INSERT INTO audit({_COLUMNS}) VALUES ({', '.join('?' * 13)})",
                 (*values, chain_hash(previous, values)))
    return seq


@dataclass
class Verified:
    ok: bool
    rows: int
    first_bad: int | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.ok:
            return {"ok": True, "rows": self.rows}
        return {"ok": False, "rows": self.rows, "first_bad": self.first_bad,
                "problem": self.problem}


def verify(conn: sqlite3.Connection) -> Verified:
    """Recompute the chain from the first row; the first row that does not match."""
    previous, expected, rows = GENESIS, 1, 0
    for row in conn.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq"):
        values, stored = tuple(row[:-1]), row[-1]
        rows += 1
        if values[0] != expected:
            return Verified(False, rows, values[0],
                            f"row {expected} is missing (next row is {values[0]})")
        if chain_hash(previous, values) != stored:
            return Verified(False, rows, values[0],
                            f"row {values[0]} does not match its hash")
        previous, expected = stored, expected + 1
    return Verified(True, rows)


def _where(since: str | None, principal: str | None, action: str | None,
           target: str | None, before_seq: int | None) -> tuple[str, list[Any]]:
    return where((("time >= ?", since), ("principal = ?", principal),
                  ("action = ?", action), ("target = ?", target), ("seq < ?", before_seq)))


def page(conn: sqlite3.Connection, *, limit: int, since: str | None = None,
         principal: str | None = None, action: str | None = None,
         target: str | None = None, before_seq: int | None = None) -> list[dict[str, Any]]:
    """Entries newest first."""
    where, args = _where(since, principal, action, target, before_seq)
    rows = conn.execute(f"SELECT {_COLUMNS} FROM audit {where} ORDER BY seq DESC LIMIT ?",
                        (*args, limit)).fetchall()
    return [dict(zip((*FIELDS, "hash"), row, strict=True)) for row in rows]


def every(conn: sqlite3.Connection, *, since: str | None = None,
          principal: str | None = None, action: str | None = None,
          target: str | None = None) -> Iterator[tuple[Any, ...]]:
    """Every matching row (with its hash), newest first, for the CSV export."""
    where, args = _where(since, principal, action, target, None)
    yield from conn.execute(f"SELECT {_COLUMNS} FROM audit {where} ORDER BY seq DESC", args)


def attribution(table: str, column: str, key: str, entry: AuditEntry) -> list[Any]:
    """Who did it, on the row (``tasks.cancelled_by``...), and the request's audit row:
    statements for one transaction. ``table`` and ``column`` are the store's own names."""
    assert (table, column) in _ATTRIBUTION
    id_column = "task_id" if table == "tasks" else "sequence_id"
    entry.target = key
    entry.target_kind = "task" if table == "tasks" else "sequence"
    return [(f"UPDATE {table} SET {column} = ? WHERE {id_column} = ?", (entry.principal, key)),
            entry.statement()]


_ATTRIBUTION = {("tasks", "cancelled_by"), ("sequences", "cancelled_by"),
                ("sequences", "recovered_by"), ("sequences", "resumed_by")}
