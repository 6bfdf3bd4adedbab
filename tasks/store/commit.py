"""The group commit of submits: submits that arrive together share one transaction.

Whoever holds the write lock commits every submit queued behind it, and each caller
returns only after the transaction holding its row has committed (the row is durable
before its 202 goes out). Nothing is called back under the lock: the caller gets the
row's seq and keeps its own order from it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple

from tasks.errors import IdempotencyConflict, StoreWriteError
from tasks.store.audit import AuditEntry, write
from tasks.store.rows import dumps

# The seq of an idempotent replay whose original task has since been pruned.
NO_SEQ = -1


@dataclass
class NewTask:
    task_id: str
    cmd_type: str
    params: dict[str, Any]
    submitted: float
    retry_of: str | None = None
    idempotency_key: str | None = None
    body_hash: str | None = None
    submitted_by: str | None = None
    external_id: str | None = None
    audit: AuditEntry | None = None  # its row, committed with the task
    not_before: float | None = None


class Inserted(NamedTuple):
    """The task that answers a submit: the new one (created) or, for a replay of an
    Idempotency-Key, the original, with the original's seq."""

    task_id: str
    created: bool
    seq: int


@dataclass(slots=True)
class _PendingInsert:
    task: NewTask
    # Set and read only under the write lock, which orders them: a flag is enough (an
    # Event, i.e. a Condition and a lock, per submit was pure cost: nobody waits on it).
    done: bool = False
    task_id: str | None = None  # the task that answers this submit (an earlier one on replay)
    created: bool = False
    seq: int = NO_SEQ
    error: Exception | None = None


class GroupCommit:
    """The submit queue in front of the store's write lock.

    ``transaction`` opens one durable write transaction (failures become
    StoreWriteError); it is entered with ``write_lock`` held."""

    def __init__(self, write_lock: threading.Lock,
                 transaction: Callable[[], AbstractContextManager[sqlite3.Connection]]) -> None:
        self._write_lock = write_lock
        self._transaction = transaction
        self._pending_lock = threading.Lock()
        self.pending: list[_PendingInsert] = []

    def insert(self, task: NewTask) -> Inserted:
        item = _PendingInsert(task)
        with self._pending_lock:
            self.pending.append(item)
        with self._write_lock:
            if not item.done:  # else another caller's batch committed it
                with self._pending_lock:
                    batch, self.pending = self.pending, []
                self._commit(batch)
        if item.error is not None:
            raise item.error
        assert item.task_id is not None
        return Inserted(item.task_id, item.created, item.seq)

    def _commit(self, batch: list[_PendingInsert]) -> None:
        # Called with the write lock held.
        try:
            with self._transaction() as conn:
                for item in batch:
                    _insert_one(conn, item)
        except StoreWriteError as error:
            for item in batch:
                if item.error is None:
                    item.error = error
                    item.created = False
        finally:
            for item in batch:
                item.done = True


def claim_key(conn: sqlite3.Connection, key: str, body_hash: str | None, owner: str,
              created: float) -> str | None:
    """Record Idempotency-Key ``key`` for ``owner`` (a task or a sequence id); or, if
    it was used before with the same body, the id it answers (nothing recorded).
    Raises IdempotencyConflict if it was used with another body."""
    row = conn.execute("SELECT body_hash, task_id FROM idempotency WHERE key = ?",
                       (key,)).fetchone()
    if row is not None:
        if row[0] != body_hash:
            raise IdempotencyConflict(row[1])
        return str(row[1])
    conn.execute("INSERT INTO idempotency(key, body_hash, task_id, created) "
                 "VALUES (?, ?, ?, ?)", (key, body_hash, owner, created))
    return None


def _insert_one(conn: sqlite3.Connection, item: _PendingInsert) -> None:
    task = item.task
    if task.idempotency_key is not None:
        try:
            first = claim_key(conn, task.idempotency_key, task.body_hash, task.task_id,
                              task.submitted)
        except IdempotencyConflict as conflict:
            item.error = conflict
            return
        if first is not None:
            item.task_id = first
            original = conn.execute("SELECT seq FROM tasks WHERE task_id = ?",
                                    (first,)).fetchone()
            item.seq = original[0] if original else NO_SEQ
            return
    cur = conn.execute(
        "INSERT INTO tasks(task_id, cmd_type, params, status, submitted, retry_of, "
        "submitted_by, external_id, not_before) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
        (task.task_id, task.cmd_type, dumps(task.params), task.submitted, task.retry_of,
         task.submitted_by, task.external_id, task.not_before))
    if task.audit is not None:  # a replay changed nothing: no row
        task.audit.target, task.audit.after = task.task_id, "pending"
        write(conn, task.audit)
    # seq is the table's INTEGER PRIMARY KEY, i.e. the rowid just assigned.
    item.task_id = task.task_id
    item.seq = cur.lastrowid if cur.lastrowid is not None else NO_SEQ
    item.created = True
