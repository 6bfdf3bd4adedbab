"""The SQLite task store: every read and write of task state. No other module
writes SQL (the schema and opening the file: tasks/store/db.py; the group commit
of submits: tasks/store/commit.py).

Durability rules (see docs/durability.md): a task row is committed before its
202 goes out, `running` is committed before the first byte goes to the robot,
and every final state is committed before it is reported.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tasks.errors import StoreWriteError
from tasks.models import FINAL_STATUSES, Task, TaskStatus
from tasks.store.audit import Verified, every, page, verify
from tasks.store.commit import GroupCommit, Inserted, NewTask
from tasks.store.db import connect, immediate, on_read_only_fs, open_database, write_hint
from tasks.store.rows import (
    COLUMNS,
    Statement,
    dumps,
    filters,
    loads,
    row_to_task,
    run_statements,
    status_value,
    with_items,
)

__all__ = ["IDEMPOTENCY_KEEP_S", "Inserted", "NewTask", "Statement", "TaskStore",
           "on_read_only_fs"]

log = logging.getLogger("tasks.store")

_FINAL = tuple(s.value for s in FINAL_STATUSES)
IDEMPOTENCY_KEEP_S = 24 * 3600.0


class TaskStore:
    """All reads and writes of task state. Thread-safe."""

    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._write_lock = threading.Lock()
        self._inserts = GroupCommit(self._write_lock, self._write_transaction)
        # A deque, not a queue.Queue: append/pop are atomic in CPython, so taking a
        # read connection costs no lock (profiling showed the Queue's Condition on
        # every GET).
        self._readers: collections.deque[sqlite3.Connection] = collections.deque()
        self._writer: sqlite3.Connection | None = None
        # The last write's failure (None after a write succeeded): /health reports it.
        self.write_error: str | None = None
        # Set after every COMMIT when a checkpointer takes the WAL's checkpoints.
        self._committed: threading.Event | None = None

    # -- life cycle ------------------------------------------------------------------
    def open(self) -> None:
        """Open or create the database; raise StoreError with one clear line."""
        self._writer = open_database(self.path, self.busy_timeout)

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        while True:
            try:
                self._readers.pop().close()
            except IndexError:
                break

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._readers.pop()
        except IndexError:
            conn = connect(self.path, self.busy_timeout)
        try:
            yield conn
        finally:
            self._readers.append(conn)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One durable write transaction; failures become StoreWriteError."""
        with self._write_lock:
            if self._writer is None:
                raise StoreWriteError("the task database is closed")
            with self._write_transaction() as conn:
                yield conn

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Connection]:
        """The body of every write, entered with the write lock held: a failure is
        logged, kept for /health and raised as StoreWriteError."""
        try:
            conn = self._writer
            if conn is None:
                raise sqlite3.OperationalError("the task database is closed")
            with immediate(conn):
                yield conn
        except sqlite3.Error as exc:
            log.error("task database write failed: %s", exc)
            self.write_error = f"{exc}{write_hint(self.path)}"
            raise StoreWriteError(f"the task database cannot be written ({exc})",
                                  reason=exc) from exc
        self.write_error = None
        committed = self._committed
        if committed is not None and not committed.is_set():  # set: a plain read
            committed.set()

    # -- the WAL's checkpoints (tasks/store/housekeeping.py) ---------------------------
    def checkpoints_by(self, committed: threading.Event | None, wal_limit: int = -1) -> None:
        """``committed``: an Event set after every COMMIT, whose owner checkpoints the WAL;
        the writer then never does (wal_autocheckpoint 0), and a WAL restarted by it is
        cut to ``wal_limit`` bytes (journal_size_limit). None: SQLite's own again."""
        with self._write_lock:
            if self._writer is not None:
                self._writer.execute(f"PRAGMA wal_autocheckpoint = {0 if committed else 1000}")
                self._writer.execute(f"PRAGMA journal_size_limit = {int(wal_limit)}")
            self._committed = committed

    def between_writes(self, work: Callable[[], object], wait: float = 0.0) -> bool:
        """Run ``work`` holding the write lock, taken within ``wait`` s (0: only if no
        write holds it now); False if it was not."""
        if not self._write_lock.acquire(timeout=wait):
            return False
        try:
            work()
        finally:
            self._write_lock.release()
        return True

    def wal_bytes(self) -> int:
        """The size of the WAL file on disk (0: none)."""
        try:
            return os.stat(self.path + "-wal").st_size
        except OSError:
            return 0

    def probe_write(self) -> str | None:
        """Write one small row now; the reason it failed, or None. For /health."""
        try:
            self.set_meta({"probe": f"{time.time():.3f}"})
        except StoreWriteError:
            return self.write_error or "the task database cannot be written"
        return None

    # -- submit ------------------------------------------------------------------------
    def insert(self, task: NewTask) -> Inserted:
        """Commit a new task, together with the submits queued meanwhile.

        With an idempotency key seen before and the same body hash, the original
        task answers (created=False, its seq). Raises IdempotencyConflict or
        StoreWriteError."""
        return self._inserts.insert(task)

    # -- state transitions -------------------------------------------------------------
    def mark_running(self, task_id: str, started: float, *,
                     extra: Sequence[Statement] = ()) -> Task | None:
        """Commit pending -> running; the task as now stored, or None if not pending.
        ``extra``: statements committed with it, only if it was pending."""
        with self._transaction() as conn:
            # RETURNING: the worker gets the row from the same statement (one query
            # fewer between one task's result and the next task's command).
            row = conn.execute(f"UPDATE tasks SET status = 'running', started = ? "
                               f"WHERE task_id = ? AND status = 'pending' RETURNING {COLUMNS}",
                               (started, task_id)).fetchone()
            if row:
                run_statements(conn, extra)
        return row_to_task(row) if row else None

    def unstart(self, task_id: str) -> bool:
        """running -> pending, for a command that never reached the robot."""
        with self._transaction() as conn:
            cur = conn.execute("UPDATE tasks SET status = 'pending', started = NULL, "
                               "progress = NULL WHERE task_id = ? AND status = 'running'",
                               (task_id,))
            if cur.rowcount == 1:
                conn.execute("DELETE FROM progress_items WHERE task_id = ?", (task_id,))
            return cur.rowcount == 1

    def set_progress(self, task_id: str, progress: dict[str, Any],
                     new_items: list[Any] | None = None, first: int = 0) -> None:
        """Save the progress summary (without items) and append ``new_items`` as items
        ``first``, ``first + 1``, ...: earlier items are never rewritten."""
        summary = {k: v for k, v in progress.items() if k != "items"}
        with self._transaction() as conn:
            conn.execute("UPDATE tasks SET progress = ? WHERE task_id = ?",
                         (dumps(summary), task_id))
            if new_items:
                conn.executemany(
                    "INSERT OR REPLACE INTO progress_items(task_id, n, item) VALUES (?, ?, ?)",
                    [(task_id, first + i, dumps(item)) for i, item in enumerate(new_items)])

    def finish(self, task_id: str, status: TaskStatus | str, ended: float,
               result: dict[str, Any], transcript: list[dict[str, Any]] | None = None,
               only_if: tuple[TaskStatus | str, ...] = ("pending", "running"), *,
               run_s: float | None = None, drop_items: bool = False,
               extra: Sequence[Statement] = ()) -> bool:
        """Record a final state; False if the task was not in one of `only_if`.

        ``run_s``: seconds it ran on the monotonic clock. ``drop_items``: its progress
        items are deleted in the same transaction (they may be another command's).
        ``extra``: statements committed with it (a sequence's next state)."""
        value = status_value(status)
        assert value in _FINAL
        with self._transaction() as conn:
            marks = ",".join("?" * len(only_if))
            cur = conn.execute(
                f"UPDATE tasks SET status = ?, ended = ?, result = ?, run_s = ? "
                f"WHERE task_id = ? AND status IN ({marks})",
                (value, ended, dumps(result), run_s, task_id, *map(status_value, only_if)))
            if cur.rowcount == 1 and drop_items:
                conn.execute("DELETE FROM progress_items WHERE task_id = ?", (task_id,))
            if cur.rowcount == 1 and transcript:
                conn.execute("INSERT OR REPLACE INTO transcripts(task_id, lines) VALUES (?, ?)",
                             (task_id, dumps(transcript)))
            if cur.rowcount == 1:
                run_statements(conn, extra)
            return cur.rowcount == 1

    # -- reads -------------------------------------------------------------------------
    def get(self, task_id: str) -> Task | None:
        with self._reader() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM tasks WHERE task_id = ?",
                               (task_id,)).fetchone()
            return with_items(conn, [row_to_task(row)])[0] if row else None

    def idempotent_task(self, key: str) -> str | None:
        """The task an Idempotency-Key was first used for, if any."""
        with self._reader() as conn:
            row = conn.execute("SELECT task_id FROM idempotency WHERE key = ?",
                               (key,)).fetchone()
        return row[0] if row else None

    def transcript(self, task_id: str) -> list[dict[str, Any]] | None:
        with self._reader() as conn:
            row = conn.execute("SELECT lines FROM transcripts WHERE task_id = ?",
                               (task_id,)).fetchone()
        if not row:
            return None
        lines = loads(row[0], task_id, "transcript")
        return lines if isinstance(lines, list) else \
            [{"t": 0.0, "dir": "note", "line": f"transcript cannot be read: {lines}"}]

    def recent(self, limit: int) -> list[tuple[str, str, str, float, float | None,
                                               float | None]]:
        """(task_id, status, cmd_type, submitted, started, ended) of the newest tasks."""
        if limit <= 0:
            return []
        with self._reader() as conn:
            return conn.execute("SELECT task_id, status, cmd_type, submitted, started, ended "
                                "FROM tasks ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()

    def count(self, *, status: TaskStatus | str | None = None,
              cmd_type: str | None = None, sequence_id: str | None = None,
              external_id: str | None = None) -> int:
        where, args = filters(status=status, cmd_type=cmd_type, sequence_id=sequence_id,
                              external_id=external_id)
        with self._reader() as conn:
            return conn.execute(f"SELECT count(*) FROM tasks {where}", args).fetchone()[0]

    def status_counts(self) -> dict[str, int]:
        """Tasks per status over the server's life: pruned tasks still count."""
        with self._reader() as conn:
            rows = conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall()
            pruned = conn.execute("SELECT key, value FROM meta WHERE key LIKE 'pruned:%'")
            counts = {status: n for status, n in rows}
            for key, value in pruned.fetchall():
                status = key.split(":", 1)[1]
                counts[status] = counts.get(status, 0) + int(value)
        return counts

    def unfinished(self) -> list[Task]:
        """Pending and running tasks in the queue's order (COALESCE(rank, seq): an
        operator's moves kept), seq set (for start-up recovery)."""
        with self._reader() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM tasks WHERE status IN ('pending', 'running') "
                "ORDER BY COALESCE(rank, seq)").fetchall()
            return with_items(conn, [row_to_task(r) for r in rows])

    def recent_durations(self, limit: int = 20) -> dict[str, list[float]]:
        """The last `limit` completed durations per cmd_type, oldest first."""
        out: dict[str, list[float]] = {}
        with self._reader() as conn:
            types = [r[0] for r in conn.execute("SELECT DISTINCT cmd_type FROM tasks")]
            for cmd_type in types:
                rows = conn.execute(
                    "SELECT COALESCE(run_s, ended - started) FROM tasks WHERE cmd_type = ? "
                    "AND status = 'completed' AND started IS NOT NULL ORDER BY seq DESC LIMIT ?",
                    (cmd_type, limit)).fetchall()
                out[cmd_type] = [r[0] for r in reversed(rows)]
        return out

    def list(self, *, status: TaskStatus | str | None = None, cmd_type: str | None = None,
             limit: int = 50, before_seq: int | None = None, offset: int = 0,
             sequence_id: str | None = None, external_id: str | None = None) -> list[Task]:
        """Newest first, seq set. `before_seq` is a cursor (the last seq of the
        previous page)."""
        where, args = filters(status=status, cmd_type=cmd_type, before_seq=before_seq,
                              sequence_id=sequence_id, external_id=external_id)
        sql = f"SELECT {COLUMNS} FROM tasks {where} ORDER BY seq DESC LIMIT ? OFFSET ?"
        with self._reader() as conn:
            rows = conn.execute(sql, (*args, limit, offset)).fetchall()
            return with_items(conn, [row_to_task(r) for r in rows])

    # -- queue state and housekeeping ------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._reader() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, values: dict[str, str | None], *,
                 extra: Sequence[Statement] = ()) -> None:
        with self._transaction() as conn:
            for key, value in values.items():
                if value is None:
                    conn.execute("DELETE FROM meta WHERE key = ?", (key,))
                else:
                    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                 (key, value))
            run_statements(conn, extra)

    def commit(self, statements: Sequence[Statement]) -> None:
        """Statements with no change of their own around them (an audit row alone, a
        cancel's attribution)."""
        with self._transaction() as conn:
            run_statements(conn, statements)

    # -- the audit trail (tasks/store/audit.py) ------------------------------------------
    def audit_page(self, **filters: Any) -> builtins.list[dict[str, Any]]:
        with self._reader() as conn:
            return page(conn, **filters)

    def audit_rows(self, **filters: Any) -> Iterator[tuple[Any, ...]]:
        with self._reader() as conn:
            yield from every(conn, **filters)

    def audit_verify(self) -> Verified:
        with self._reader() as conn:
            return verify(conn)

    def prune(self, older_than: float, now: float | None = None) -> int:
        """Delete finished tasks that ended before `older_than`, and the idempotency keys
        whose task is gone, in one transaction; the number of tasks deleted.

        A task goes by its status and finish time (`ended`), never by its age: a pending
        or running task stays whatever the clock says. A key goes only once its task is
        gone (pruned now or before) and the key is at least IDEMPOTENCY_KEEP_S old at
        `now`: it lives as long as its task and at least a day, so a re-sent key of a
        held task never makes a second task (docs/durability.md)."""
        now = time.time() if now is None else now
        final = ", ".join("?" * len(_FINAL))
        prunable = f"status IN ({final}) AND ended < ?"
        with self._transaction() as conn:
            gone = conn.execute(f"SELECT status, count(*) FROM tasks WHERE {prunable} "
                                "GROUP BY status", (*_FINAL, older_than)).fetchall()
            for status, n in gone:
                conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO "
                             "UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
                             (f"pruned:{status}", n))
            for table in ("transcripts", "progress_items"):
                conn.execute(f"DELETE FROM {table} WHERE task_id IN "
                             f"(SELECT task_id FROM tasks WHERE {prunable})",
                             (*_FINAL, older_than))
            cur = conn.execute(f"DELETE FROM tasks WHERE {prunable}", (*_FINAL, older_than))
            # A sequence goes like a task, by its own end: its steps end before it.
            ended_seq = "status IN ('completed', 'failed', 'cancelled') AND ended < ?"
            conn.execute("DELETE FROM sequence_steps WHERE sequence_id IN "
                         f"(SELECT sequence_id FROM sequences WHERE {ended_seq})", (older_than,))
            conn.execute(f"DELETE FROM sequences WHERE {ended_seq}", (older_than,))
            # After the tasks: the keys of those just pruned are gone with them (with
            # --keep-days under a day, a day after they were made). A sequence's key
            # names the sequence.
            conn.execute("DELETE FROM idempotency WHERE created < ? AND NOT EXISTS "
                         "(SELECT 1 FROM tasks WHERE tasks.task_id = idempotency.task_id) "
                         "AND NOT EXISTS (SELECT 1 FROM sequences "
                         "WHERE sequences.sequence_id = idempotency.task_id)",
                         (now - IDEMPOTENCY_KEEP_S,))
            return cur.rowcount
