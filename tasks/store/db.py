"""The task database file: its schema, its connections, opening it (check, migrate,
prove writable) and the one write-transaction primitive every write goes through."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator

from tasks.errors import StoreError

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
# each, so a progress line costs one INSERT however many came before it. Columns added
# the same way are in _ADDED_COLUMNS (an older server reads its columns by name).
_ADDITIVE = """
CREATE TABLE IF NOT EXISTS progress_items (
    task_id TEXT NOT NULL,
    n       INTEGER NOT NULL,
    item    TEXT NOT NULL,
    PRIMARY KEY (task_id, n)
) WITHOUT ROWID;
"""


# tasks.run_s: the seconds a task ran, on the monotonic clock of the process that ran
# it (a wall-clock step during the run does not change it); NULL when unknown.
# tasks.sequence_id, tasks.step: a sequence's task and its step (NULL step: a fix-it).
# tasks.submitted_by, tasks.cancelled_by and the sequences' like columns: who did so
# (docs/security.md); NULL in rows older than them.
_ADDED_COLUMNS = (("tasks", "run_s", "REAL"), ("tasks", "sequence_id", "TEXT"),
                  ("tasks", "step", "INTEGER"), ("tasks", "submitted_by", "TEXT"),
                  ("tasks", "cancelled_by", "TEXT"), ("tasks", "external_id", "TEXT"),
                  ("tasks", "rank", "INTEGER"), ("tasks", "not_before", "REAL"))
# tasks.rank: the task's place in the queue once an operator moved it (NULL: its seq);
# the queue's order is COALESCE(rank, seq). tasks.not_before, sequences.not_before: it
# does not start before this time (docs/queue.md).
_SEQUENCE_COLUMNS = (("sequences", "submitted_by", "TEXT"),
                     ("sequences", "cancelled_by", "TEXT"),
                     ("sequences", "recovered_by", "TEXT"), ("sequences", "resumed_by", "TEXT"),
                     ("sequences", "not_before", "REAL"))
# Sequences (tasks/sequences/, docs/sequences.md): one row each, one row per step; the
# steps' attempts are tasks (tasks.sequence_id, tasks.step). Additive like the above.
_SEQUENCES = """
CREATE TABLE IF NOT EXISTS sequences (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    sequence_id  TEXT NOT NULL UNIQUE,
    name         TEXT,
    external_id  TEXT,
    on_error     TEXT NOT NULL,
    status       TEXT NOT NULL,
    submitted    REAL NOT NULL,
    started      REAL,
    ended        REAL,
    current_step INTEGER,
    hold_code    TEXT,
    hold_params  TEXT
);
CREATE INDEX IF NOT EXISTS sequences_status ON sequences(status, seq);
CREATE TABLE IF NOT EXISTS sequence_steps (
    sequence_id TEXT NOT NULL,
    step        INTEGER NOT NULL,
    label       TEXT,
    cmd_type    TEXT NOT NULL,
    params      TEXT NOT NULL,
    on_error    TEXT,
    retry       INTEGER NOT NULL,
    task_id     TEXT NOT NULL,
    skipped     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sequence_id, step)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_sequence ON tasks(sequence_id, seq);
"""


# Principals (tasks/store/principals.py) and the audit trail (tasks/store/audit.py,
# docs/security.md): additive like the above. The trail is append-only: its triggers
# refuse UPDATE and DELETE (someone with the file can drop them; the hash chain then
# shows the change).
_SECURITY = (
    """CREATE TABLE IF NOT EXISTS principals (
    name       TEXT PRIMARY KEY,
    role       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    token_hash TEXT,
    created    REAL NOT NULL,
    created_by TEXT,
    revoked    REAL
)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS principals_token ON principals(token_hash)",
    """CREATE TABLE IF NOT EXISTS audit (
    seq        INTEGER PRIMARY KEY,
    time       TEXT NOT NULL,
    principal  TEXT NOT NULL,
    role       TEXT NOT NULL,
    address    TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT,
    before     TEXT,
    after      TEXT,
    reason     TEXT,
    request_id TEXT,
    status     INTEGER,
    hash       TEXT NOT NULL
)""",
    # No index beyond seq: each would cost every submit's commit more pages (measured:
    # 10.1 WAL pages per lone submit with two, 8.1 without), and the audit page's
    # filters walk seq downwards, which a page of newest rows ends early.
    """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END""",
)


# Webhooks (tasks/store/outbox.py, tasks/store/webhooks.py, docs/webhooks.md): additive.
# The outbox holds one row per event, written in the transaction of the change that
# causes it: for a task's or a sequence's final state by these triggers, so no code path
# can end a task without its event (nor write one for a change rolled back). Its `data`
# is NULL for those: the subject's row says everything, read when it is fanned out.
_NOW = "(julianday('now') - 2440587.5) * 86400.0"
_FINAL_SQL = "('completed', 'failed', 'cancelled')"
_WEBHOOKS = (
    "CREATE INDEX IF NOT EXISTS tasks_external ON tasks(external_id) "
    "WHERE external_id IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS outbox (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    type    TEXT NOT NULL,
    subject TEXT,
    time    REAL NOT NULL,
    data    TEXT
)""",
    f"""CREATE TRIGGER IF NOT EXISTS outbox_task_final AFTER UPDATE OF status ON tasks
WHEN new.status IN {_FINAL_SQL} AND old.status NOT IN {_FINAL_SQL}
BEGIN INSERT INTO outbox(type, subject, time)
      VALUES ('task.' || new.status, new.task_id, coalesce(new.ended, {_NOW})); END""",
    f"""CREATE TRIGGER IF NOT EXISTS outbox_task_born_final AFTER INSERT ON tasks
WHEN new.status IN {_FINAL_SQL}
BEGIN INSERT INTO outbox(type, subject, time)
      VALUES ('task.' || new.status, new.task_id, coalesce(new.ended, {_NOW})); END""",
    f"""CREATE TRIGGER IF NOT EXISTS outbox_sequence AFTER UPDATE OF status ON sequences
WHEN new.status IN ('completed', 'failed', 'cancelled', 'held')
     AND new.status IS NOT old.status
BEGIN INSERT INTO outbox(type, subject, time)
      VALUES ('sequence.' || new.status, new.sequence_id, coalesce(new.ended, {_NOW})); END""",
    """CREATE TABLE IF NOT EXISTS webhooks (
    id              TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    events          TEXT NOT NULL,
    description     TEXT,
    secret          TEXT NOT NULL,
    enabled         INTEGER NOT NULL,
    disabled_reason TEXT,
    created         REAL NOT NULL,
    created_by      TEXT,
    from_seq        INTEGER NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS deliveries (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id TEXT NOT NULL,
    event_seq  INTEGER,
    msg_id     TEXT NOT NULL,
    type       TEXT NOT NULL,
    body       TEXT NOT NULL,
    status     TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_try   REAL,
    replay_of  INTEGER,
    created    REAL NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(webhook_id, status, id)",
    """CREATE TABLE IF NOT EXISTS delivery_attempts (
    delivery_id INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    time        REAL NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms INTEGER,
    PRIMARY KEY (delivery_id, n)
) WITHOUT ROWID""",
)


# Maintenance windows (tasks/queue/modes.py, docs/queue.md): one row from a drain or
# maintenance request until the queue is opened again; additive.
_MAINTENANCE = (
    """CREATE TABLE IF NOT EXISTS maintenance (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    how            TEXT NOT NULL,
    reason         TEXT NOT NULL,
    opened         REAL NOT NULL,
    opened_by      TEXT,
    maintenance_at REAL,
    closed         REAL,
    closed_by      TEXT,
    close_reason   TEXT
)""",
)


def _add_columns(conn: sqlite3.Connection) -> None:
    for table, column, kind in _ADDED_COLUMNS:
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    for statement in _SEQUENCES.split(";"):
        if statement.strip():
            conn.execute(statement)
    for table, column, kind in _SEQUENCE_COLUMNS:
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    for statement in _SECURITY + _WEBHOOKS + _MAINTENANCE:
        conn.execute(statement)


def on_read_only_fs(directory: str) -> bool:
    """True if ``directory`` is on a file system mounted read-only (False where the OS
    cannot say: no statvfs on Windows)."""
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so nothing is
    # left in an implicit transaction that is not yet durable.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=busy_timeout)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    return conn


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back if anything in it raises. The caller
    decides what a failure means (a refused start-up, a refused request)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def open_database(path: str, busy_timeout: float) -> sqlite3.Connection:
    """Open or create the database, proven writable: the write connection. Raises
    StoreError with one clear line."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise StoreError("db_cannot_create_directory", path=path, reason=exc) from None
    if os.path.exists(path) and not os.access(path, os.R_OK):
        raise StoreError("db_unreadable", path=path)
    try:
        conn = connect(path, busy_timeout)
        _check_and_migrate(path, conn)
    except sqlite3.DatabaseError as exc:
        raise StoreError("db_unusable", path=path, reason=exc) from None
    try:
        # Proof by a real write transaction (which also runs WAL recovery): a file
        # that only reads would otherwise pass start-up and refuse every submit.
        with immediate(conn):
            conn.execute(_ADDITIVE)
            _add_columns(conn)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('opened', ?)",
                         (f"{time.time():.3f}",))
    except sqlite3.Error as exc:
        conn.close()
        obstacle = write_obstacle(path)
        if obstacle is None:
            raise StoreError("db_not_writable", path=path, reason=exc) from None
        code, where = obstacle
        raise StoreError(code, path=path, reason=exc, where=where) from None
    return conn


def write_obstacle(path: str) -> tuple[str, str] | None:
    """Why writing may fail, as something an operator can act on: the error code
    (``db_not_writable_read_only`` or ``db_not_writable_no_permission``) and the
    directory or file it is about; None when nothing shows."""
    directory = os.path.dirname(os.path.abspath(path))
    if on_read_only_fs(directory):
        return "db_not_writable_read_only", directory
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name) and not os.access(name, os.W_OK):
            return "db_not_writable_no_permission", name
    if not os.access(directory, os.W_OK):
        return "db_not_writable_no_permission", directory
    return None


def write_hint(path: str) -> str:
    """Why writing may fail, in English words appended to SQLite's (/health, logs)."""
    obstacle = write_obstacle(path)
    if obstacle is None:
        return ""
    code, where = obstacle
    if code == "db_not_writable_read_only":
        return f"; {where} is on a read-only file system"
    return f"; no write permission on {where}"


def _check_and_migrate(path: str, conn: sqlite3.Connection) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
    if app_id != APPLICATION_ID and tables:
        raise StoreError("db_foreign", path=path)
    if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
        raise StoreError("db_no_wal", path=path)
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
        raise StoreError("db_newer_schema", path=path, version=version, known=SCHEMA_VERSION)
    # Migrations from older schema versions go here, one step at a time.
