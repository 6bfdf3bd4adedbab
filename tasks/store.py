"""The SQLite task store. This module owns the schema; no other module writes SQL.

Durability rules (see docs/durability.md): a task row is committed before its
202 goes out, `running` is committed before the first byte goes to the robot,
and every final state is committed before it is reported. Submits that arrive
together share one transaction (group commit): whoever holds the write lock
commits every submit queued behind it, and each caller returns only after the
transaction holding its row has committed.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tasks.store_rows import COLUMNS, dumps, filters, loads, row_to_dict, with_items

log = logging.getLogger("tasks.store")

SCHEMA_VERSION = 1
# PRAGMA application_id marks our files, so a foreign SQLite file is refused
# instead of being written into.
APPLICATION_ID = 0x52425453  # "RBTS"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id   TEXT NOT NULL UNIQUE,
    cmd_type  TEXT NOT NULL,
    params    TEXT NOT NULL,
    status    TEXT NOT NULL,
    submitted REAL NOT NULL,
    started   REAL,
    ended     REAL,
    result    TEXT,
    progress  TEXT,
    retry_of  TEXT
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks(status, seq);
CREATE INDEX IF NOT EXISTS tasks_cmd ON tasks(cmd_type, seq);
CREATE INDEX IF NOT EXISTS tasks_ended ON tasks(ended);
CREATE TABLE IF NOT EXISTS transcripts (
    task_id TEXT PRIMARY KEY,
    lines   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key       TEXT PRIMARY KEY,
    body_hash TEXT NOT NULL,
    task_id   TEXT NOT NULL,
    created   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency(created);
"""
# Added to schema 1 without a version bump: additive, so an older server still opens
# the file (it just does not see the items). Progress items are appended here one row
# each, so a progress line costs one INSERT however many came before it.
_ADDITIVE = """
CREATE TABLE IF NOT EXISTS progress_items (
    task_id TEXT NOT NULL,
    n       INTEGER NOT NULL,
    item    TEXT NOT NULL,
    PRIMARY KEY (task_id, n)
) WITHOUT ROWID;
"""

_FINAL = ("completed", "failed", "cancelled")
IDEMPOTENCY_KEEP_S = 24 * 3600.0


def on_read_only_fs(directory: str) -> bool:
    """True if ``directory`` is on a file system mounted read-only (False where the OS
    cannot say: no statvfs on Windows)."""
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


class StoreError(Exception):
    """The database cannot be used (corrupt, foreign, unreadable): stops start-up."""


class StoreWriteError(Exception):
    """A write failed (disk full, read-only, locked): the request gets 503."""


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request body."""

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id)
        self.task_id = task_id


@dataclass
class NewTask:
    task_id: str
    cmd_type: str
    params: dict[str, Any]
    submitted: float
    retry_of: str | None = None
    idempotency_key: str | None = None
    body_hash: str | None = None


@dataclass(slots=True)
class _PendingInsert:
    task: NewTask
    on_created: Callable[[str], None] | None = None
    # Set and read only under the write lock, which orders them: a flag is enough (an
    # Event, i.e. a Condition and a lock, per submit was pure cost: nobody waits on it).
    done: bool = False
    task_id: str | None = None  # the task that answers this submit (an earlier one on replay)
    created: bool = False
    error: Exception | None = None


class TaskStore:
    """All reads and writes of task state. Thread-safe."""

    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._write_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: list[_PendingInsert] = []
        # A deque, not a queue.Queue: append/pop are atomic in CPython, so taking a
        # read connection costs no lock (profiling showed the Queue's Condition on
        # every GET).
        self._readers: collections.deque[sqlite3.Connection] = collections.deque()
        self._writer: sqlite3.Connection | None = None
        # The last write's failure (None after a write succeeded): /health reports it.
        self.write_error: str | None = None

    # -- life cycle ------------------------------------------------------------------
    def open(self) -> None:
        """Open or create the database; raise StoreError with one clear line."""
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create directory: {exc.strerror}") from None
        if os.path.exists(self.path) and not os.access(self.path, os.R_OK):
            raise StoreError(f"{self.path}: cannot read the file (permission denied)")
        try:
            conn = self._connect()
            self._check_and_migrate(conn)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable task database ({exc})") from None
        try:
            # Proof by a real write transaction (which also runs WAL recovery): a file
            # that only reads would otherwise pass start-up and refuse every submit.
            self._prove_writable(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"{self.path}: the task database cannot be written "
                             f"({exc}{self._write_hint()})") from None
        self._writer = conn

    @staticmethod
    def _prove_writable(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_ADDITIVE)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('opened', ?)",
                         (f"{time.time():.3f}",))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _write_hint(self) -> str:
        """Why writing may fail, in words an operator can act on."""
        directory = os.path.dirname(os.path.abspath(self.path))
        if on_read_only_fs(directory):
            return f"; {directory} is on a read-only file system"
        for name in (self.path, self.path + "-wal", self.path + "-shm"):
            if os.path.exists(name) and not os.access(name, os.W_OK):
                return f"; no write permission on {name}"
        if not os.access(directory, os.W_OK):
            return f"; no write permission on {directory}"
        return ""

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

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so nothing is
        # left in an implicit transaction that is not yet durable.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self.busy_timeout)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        return conn

    def _check_and_migrate(self, conn: sqlite3.Connection) -> None:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        if app_id != APPLICATION_ID and tables:
            raise StoreError(f"{self.path}: not a robot task database (it holds other tables)")
        if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise StoreError(f"{self.path}: cannot switch the database to WAL mode")
        conn.execute("PRAGMA synchronous = FULL")
        if app_id != APPLICATION_ID:
            # One script, one transaction: a crash mid-way leaves no half schema.
            conn.executescript(
                f"BEGIN IMMEDIATE;{_SCHEMA}"
                f"PRAGMA application_id = {APPLICATION_ID};"
                f"INSERT OR REPLACE INTO meta(key, value) "
                f"VALUES ('schema_version', '{SCHEMA_VERSION}');COMMIT;")
            return
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: written by a newer version (schema {version}, "
                             f"this server knows {SCHEMA_VERSION})")
        # Migrations from older schema versions go here, one step at a time.

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._readers.pop()
        except IndexError:
            conn = self._connect()
        try:
            yield conn
        finally:
            self._readers.append(conn)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One durable write transaction; failures become StoreWriteError."""
        with self._write_lock:
            conn = self._writer
            if conn is None:
                raise StoreWriteError("the task database is closed")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._write_failed(exc) from exc
            self.write_error = None

    def _write_failed(self, exc: sqlite3.Error) -> StoreWriteError:
        log.error("task database write failed: %s", exc)
        self.write_error = f"{exc}{self._write_hint()}"
        return StoreWriteError(f"the task database cannot be written ({exc})")

    def probe_write(self) -> str | None:
        """Write one small row now; the reason it failed, or None. For /health."""
        try:
            self.set_meta({"probe": f"{time.time():.3f}"})
        except StoreWriteError:
            return self.write_error or "the task database cannot be written"
        return None

    # -- submit (group commit) ---------------------------------------------------
    def insert(self, task: NewTask,
               on_created: Callable[[str], None] | None = None) -> tuple[str, bool]:
        """Commit a new task; return (task_id, created).

        With an idempotency key seen before and the same body hash, returns the
        original task_id and created=False. Raises IdempotencyConflict or
        StoreWriteError. `on_created(task_id)` runs after the commit, still under
        the write lock and in commit order, so whoever queues the ids queues them
        in submission (seq) order; it must not take locks that are held while
        waiting for this store.
        """
        item = _PendingInsert(task, on_created)
        with self._pending_lock:
            self._pending.append(item)
        with self._write_lock:
            if not item.done:  # else another caller's batch committed it
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._commit_batch(batch)
        if item.error is not None:
            raise item.error
        assert item.task_id is not None
        return item.task_id, item.created

    def _commit_batch(self, batch: list[_PendingInsert]) -> None:
        # Called with the write lock held.
        conn = self._writer
        try:
            if conn is None:
                raise sqlite3.OperationalError("the task database is closed")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for item in batch:
                    self._insert_one(conn, item)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            error = self._write_failed(exc)
            for item in batch:
                if item.error is None:
                    item.error = error
                    item.created = False
        else:
            self.write_error = None
            for item in batch:
                if item.created and item.on_created is not None:
                    try:
                        item.on_created(item.task.task_id)
                    except Exception:  # one caller's callback must not strand the others
                        log.exception("on_created callback failed for %s", item.task.task_id)
        finally:
            for item in batch:
                item.done = True

    @staticmethod
    def _insert_one(conn: sqlite3.Connection, item: _PendingInsert) -> None:
        task = item.task
        if task.idempotency_key is not None:
            row = conn.execute("SELECT body_hash, task_id FROM idempotency WHERE key = ?",
                               (task.idempotency_key,)).fetchone()
            if row is not None:
                if row[0] != task.body_hash:
                    item.error = IdempotencyConflict(row[1])
                else:
                    item.task_id = row[1]
                return
            conn.execute("INSERT INTO idempotency(key, body_hash, task_id, created) "
                         "VALUES (?, ?, ?, ?)",
                         (task.idempotency_key, task.body_hash, task.task_id, task.submitted))
        conn.execute("INSERT INTO tasks(task_id, cmd_type, params, status, submitted, retry_of) "
                     "VALUES (?, ?, ?, 'pending', ?, ?)",
                     (task.task_id, task.cmd_type, dumps(task.params), task.submitted,
                      task.retry_of))
        item.task_id = task.task_id
        item.created = True

    # -- state transitions -------------------------------------------------------------
    def mark_running(self, task_id: str, started: float) -> dict[str, Any] | None:
        """Commit pending -> running; the task as now stored, or None if not pending."""
        with self._transaction() as conn:
            # RETURNING: the worker gets the row from the same statement (one query
            # fewer between one task's result and the next task's command).
            row = conn.execute(f"UPDATE tasks SET status = 'running', started = ? "
                               f"WHERE task_id = ? AND status = 'pending' RETURNING {COLUMNS}",
                               (started, task_id)).fetchone()
        return row_to_dict(row) if row else None

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

    def finish(self, task_id: str, status: str, ended: float, result: dict[str, Any],
               transcript: list[dict[str, Any]] | None = None,
               only_if: tuple[str, ...] = ("pending", "running")) -> bool:
        """Record a final state; False if the task was not in one of `only_if`."""
        assert status in _FINAL
        with self._transaction() as conn:
            marks = ",".join("?" * len(only_if))
            cur = conn.execute(
                f"UPDATE tasks SET status = ?, ended = ?, result = ? "
                f"WHERE task_id = ? AND status IN ({marks})",
                (status, ended, dumps(result), task_id, *only_if))
            if cur.rowcount == 1 and transcript:
                conn.execute("INSERT OR REPLACE INTO transcripts(task_id, lines) VALUES (?, ?)",
                             (task_id, dumps(transcript)))
            return cur.rowcount == 1

    # -- reads -------------------------------------------------------------------------
    def get(self, task_id: str) -> dict[str, Any] | None:
        with self._reader() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM tasks WHERE task_id = ?",
                               (task_id,)).fetchone()
            return with_items(conn, [row_to_dict(row)])[0] if row else None

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

    def list(self, *, status: str | None = None, cmd_type: str | None = None, limit: int = 50,
             before_seq: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        """Newest first. `before_seq` is a cursor (the last seq of the previous page)."""
        where, args = filters(status=status, cmd_type=cmd_type, before_seq=before_seq)
        sql = f"SELECT {COLUMNS} FROM tasks {where} ORDER BY seq DESC LIMIT ? OFFSET ?"
        with self._reader() as conn:
            rows = conn.execute(sql, (*args, limit, offset)).fetchall()
            return with_items(conn, [row_to_dict(r) for r in rows])

    def recent(self, limit: int) -> list[tuple[str, str, str, float, float | None,
                                               float | None]]:
        """(task_id, status, cmd_type, submitted, started, ended) of the newest tasks."""
        if limit <= 0:
            return []
        with self._reader() as conn:
            return conn.execute("SELECT task_id, status, cmd_type, submitted, started, ended "
                                "FROM tasks ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()

    def count(self, *, status: str | None = None, cmd_type: str | None = None) -> int:
        where, args = filters(status=status, cmd_type=cmd_type)
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

    def unfinished(self) -> list[dict[str, Any]]:
        """Pending and running tasks in submission order (for start-up recovery)."""
        with self._reader() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM tasks WHERE status IN ('pending', 'running') "
                "ORDER BY seq").fetchall()
            return with_items(conn, [row_to_dict(r) for r in rows])

    def recent_durations(self, limit: int = 20) -> dict[str, list[float]]:
        """The last `limit` completed durations per cmd_type, oldest first."""
        out: dict[str, list[float]] = {}
        with self._reader() as conn:
            types = [r[0] for r in conn.execute("SELECT DISTINCT cmd_type FROM tasks")]
            for cmd_type in types:
                rows = conn.execute(
                    "SELECT ended - started FROM tasks WHERE cmd_type = ? AND status = "
                    "'completed' AND started IS NOT NULL ORDER BY seq DESC LIMIT ?",
                    (cmd_type, limit)).fetchall()
                out[cmd_type] = [r[0] for r in reversed(rows)]
        return out

    # -- queue state and housekeeping ------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._reader() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, values: dict[str, str | None]) -> None:
        with self._transaction() as conn:
            for key, value in values.items():
                if value is None:
                    conn.execute("DELETE FROM meta WHERE key = ?", (key,))
                else:
                    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                 (key, value))

    def prune(self, older_than: float, now: float | None = None) -> int:
        """Delete finished tasks that ended before `older_than`; never unfinished ones."""
        now = time.time() if now is None else now
        with self._transaction() as conn:
            gone = conn.execute("SELECT status, count(*) FROM tasks WHERE ended < ? AND status "
                                "IN ('completed', 'failed', 'cancelled') GROUP BY status",
                                (older_than,)).fetchall()
            for status, n in gone:
                conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO "
                             "UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
                             (f"pruned:{status}", n))
            for table in ("transcripts", "progress_items"):
                conn.execute(f"DELETE FROM {table} WHERE task_id IN (SELECT task_id FROM tasks "
                             "WHERE ended < ? AND status IN ('completed', 'failed', "
                             "'cancelled'))", (older_than,))
            cur = conn.execute("DELETE FROM tasks WHERE ended < ? AND status IN "
                               "('completed', 'failed', 'cancelled')", (older_than,))
            conn.execute("DELETE FROM idempotency WHERE created < ?",
                         (min(older_than, now - IDEMPOTENCY_KEEP_S),))
            return cur.rowcount
