"""Every read and write of sequences (docs/sequences.md): the sequence rows, their
steps, and the tasks that are the steps' attempts and the fix-it commands.

The transitions are `Statement`s: a sequence's next state is committed in the same
transaction as the task change that causes it (TaskStore.finish's ``extra``), so a
crash never leaves a step ended with its sequence not yet moved on, or the reverse.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.store.audit import AuditEntry, write
from tasks.store.commit import claim_key
from tasks.store.rows import Statement, dumps, loads, run_statements, status_value, where
from tasks.store.taskstore import TaskStore

_SEQ_COLUMNS = ("seq, sequence_id, name, external_id, on_error, status, submitted, started, "
                "ended, current_step, hold_code, hold_params, submitted_by, cancelled_by, "
                "recovered_by, resumed_by, not_before")
# Who did what to a sequence (docs/security.md), as its document names them.
BY_KEYS = ("submitted_by", "cancelled_by", "recovered_by", "resumed_by")
UNFINISHED = ("pending", "running", "held")


@dataclass
class NewStep:
    step: int
    cmd_type: str
    params: dict[str, Any]
    task_id: str
    label: str | None = None
    on_error: str | None = None
    retry: int = 0


@dataclass
class NewSequence:
    sequence_id: str
    on_error: str
    submitted: float
    steps: list[NewStep]
    name: str | None = None
    external_id: str | None = None
    idempotency_key: str | None = None
    body_hash: str | None = None
    audit: AuditEntry | None = None  # its row (and submitted_by), committed with it
    not_before: float | None = None


@dataclass
class SequenceRow:
    seq: int
    sequence_id: str
    name: str | None
    external_id: str | None
    on_error: str
    status: str
    submitted: float
    started: float | None
    ended: float | None
    current_step: int | None
    hold_code: str | None
    hold_params: dict[str, Any] | None
    by: dict[str, str] = field(default_factory=dict)  # BY_KEYS that are set
    not_before: float | None = None  # it does not start before this time


@dataclass
class Attempt:
    task_id: str
    status: str
    started: float | None
    result: Any
    seq: int


@dataclass
class StepRow:
    step: int
    label: str | None
    cmd_type: str
    params: dict[str, Any]
    on_error: str | None
    retry: int
    task_id: str  # the latest attempt's
    skipped: bool
    attempts: list[Attempt] = field(default_factory=list)  # oldest first

    @property
    def status(self) -> str:
        """The latest attempt's status, or "skipped"."""
        if self.skipped:
            return "skipped"
        return self.attempts[-1].status if self.attempts else "pending"

    @property
    def started(self) -> int:
        """How many attempts ran (a retried step's first task exists from the submit)."""
        return sum(1 for a in self.attempts if a.started is not None)


@dataclass
class Fixit:
    task_id: str
    cmd_type: str
    params: Any
    status: str
    seq: int
    submitted: float


def _sequence(row: tuple) -> SequenceRow:
    (seq, sequence_id, name, external_id, on_error, status, submitted, started, ended,
     current_step, hold_code, hold_params, *by, not_before) = row
    params = loads(hold_params, sequence_id, "hold_params") if hold_params else None
    return SequenceRow(seq, sequence_id, name, external_id, on_error, status, submitted,
                       started, ended, current_step, hold_code,
                       params if isinstance(params, dict) else None,
                       {k: v for k, v in zip(BY_KEYS, by, strict=True) if v is not None},
                       float(not_before) if isinstance(not_before, (int, float)) else None)


# -- transitions, committed with a task's change ---------------------------------------
def running(sequence_id: str, step: int, now: float) -> Statement:
    return ("UPDATE sequences SET status = 'running', current_step = ?, "
            "started = COALESCE(started, ?), hold_code = NULL, hold_params = NULL "
            "WHERE sequence_id = ?", (step, now, sequence_id))


def at_step(sequence_id: str, step: int) -> Statement:
    """Moved on to ``step`` (not yet started), still holding the robot."""
    return ("UPDATE sequences SET status = 'running', current_step = ?, hold_code = NULL, "
            "hold_params = NULL WHERE sequence_id = ?", (step, sequence_id))


def held(sequence_id: str, step: int | None, code: str, params: dict[str, Any]) -> Statement:
    return ("UPDATE sequences SET status = 'held', current_step = ?, hold_code = ?, "
            "hold_params = ? WHERE sequence_id = ?", (step, code, dumps(params), sequence_id))


def ended(sequence_id: str, status: str, now: float) -> Statement:
    return ("UPDATE sequences SET status = ?, ended = ?, current_step = NULL, "
            "hold_code = NULL, hold_params = NULL WHERE sequence_id = ?",
            (status, now, sequence_id))


def cancel_rest(sequence_id: str, now: float, result: dict[str, Any]) -> Statement:
    """Every task of the sequence still pending becomes cancelled with ``result``."""
    return ("UPDATE tasks SET status = 'cancelled', ended = ?, result = ? "
            "WHERE sequence_id = ? AND status = 'pending'", (now, dumps(result), sequence_id))


def cancel_task(task_id: str, now: float, result: dict[str, Any]) -> Statement:
    """One pending task cancelled (a skipped step that never ran)."""
    return ("UPDATE tasks SET status = 'cancelled', ended = ?, result = ? "
            "WHERE task_id = ? AND status = 'pending'", (now, dumps(result), task_id))


def skip(sequence_id: str, step: int) -> Statement:
    return ("UPDATE sequence_steps SET skipped = 1 WHERE sequence_id = ? AND step = ?",
            (sequence_id, step))


class SequenceStore:
    """Sequences over the task store's connections and write lock. Thread-safe."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store

    def insert(self, new: NewSequence) -> tuple[str, bool, list[int]]:
        """Commit a sequence and a pending task per step, in one transaction: (the
        sequence id, created, the steps' task seqs). An Idempotency-Key seen before
        with the same body answers the first sequence (created False, no seqs).
        Raises IdempotencyConflict or StoreWriteError."""
        with self.store._transaction() as conn:
            if new.idempotency_key is not None:
                first = claim_key(conn, new.idempotency_key, new.body_hash, new.sequence_id,
                                  new.submitted)
                if first is not None:
                    return first, False, []
            by = None if new.audit is None else new.audit.principal
            conn.execute(
                "INSERT INTO sequences(sequence_id, name, external_id, on_error, status, "
                "submitted, submitted_by, not_before) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)",
                (new.sequence_id, new.name, new.external_id, new.on_error, new.submitted, by,
                 new.not_before))
            seqs = []
            for step in new.steps:
                seqs.append(self._insert_task(conn, new.sequence_id, step.step, step.task_id,
                                              step.cmd_type, step.params, new.submitted, by))
                conn.execute(
                    "INSERT INTO sequence_steps(sequence_id, step, label, cmd_type, params, "
                    "on_error, retry, task_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (new.sequence_id, step.step, step.label, step.cmd_type, dumps(step.params),
                     step.on_error, step.retry, step.task_id))
            if new.audit is not None:
                new.audit.target, new.audit.target_kind = new.sequence_id, "sequence"
                write(conn, new.audit)
        return new.sequence_id, True, seqs

    @staticmethod
    def _insert_task(conn: sqlite3.Connection, sequence_id: str, step: int | None,
                     task_id: str, cmd_type: str, params: dict[str, Any],
                     submitted: float, by: str | None = None) -> int:
        cur = conn.execute(
            "INSERT INTO tasks(task_id, cmd_type, params, status, submitted, sequence_id, step, "
            "submitted_by) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)",
            (task_id, cmd_type, dumps(params), submitted, sequence_id, step, by))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def add_task(self, sequence_id: str, step: int | None, task_id: str, cmd_type: str,
                 params: dict[str, Any], submitted: float,
                 extra: Sequence[Statement] = (), by: str | None = None) -> int:
        """A new attempt of ``step`` (it becomes the step's latest), or with ``step``
        None a fix-it command; its seq. ``extra`` is committed with it."""
        with self.store._transaction() as conn:
            seq = self._insert_task(conn, sequence_id, step, task_id, cmd_type, params,
                                    submitted, by)
            if step is not None:
                conn.execute("UPDATE sequence_steps SET task_id = ? WHERE sequence_id = ? "
                             "AND step = ?", (task_id, sequence_id, step))
            run_statements(conn, extra)
        return seq

    def commit(self, statements: Sequence[Statement]) -> None:
        """Transitions with no task change of their own (a skip, a hold, a cancel)."""
        with self.store._transaction() as conn:
            run_statements(conn, statements)

    # -- reads -----------------------------------------------------------------------
    def get(self, sequence_id: str) -> SequenceRow | None:
        with self.store._reader() as conn:
            row = conn.execute(f"SELECT {_SEQ_COLUMNS} FROM sequences WHERE sequence_id = ?",
                               (sequence_id,)).fetchone()
        return _sequence(row) if row else None

    def details(self, sequence_id: str) -> tuple[list[StepRow], list[Fixit]]:
        """The sequence's steps with every attempt, and its fix-it commands."""
        with self.store._reader() as conn:
            steps = [StepRow(step, label, cmd_type, _params(params, sequence_id), on_error,
                             retry, task_id, bool(skipped))
                     for step, label, cmd_type, params, on_error, retry, task_id, skipped
                     in conn.execute("SELECT step, label, cmd_type, params, on_error, retry, "
                                     "task_id, skipped FROM sequence_steps WHERE "
                                     "sequence_id = ? ORDER BY step", (sequence_id,))]
            tasks = conn.execute("SELECT seq, task_id, step, status, started, result, "
                                 "cmd_type, params, submitted FROM tasks WHERE sequence_id = ? "
                                 "ORDER BY seq", (sequence_id,)).fetchall()
        by_step = {s.step: s for s in steps}
        fixits = []
        for seq, task_id, step, status, started, result, cmd_type, params, submitted in tasks:
            if step is None:
                fixits.append(Fixit(task_id, cmd_type, _params(params, task_id),
                                    status_value(status), seq, submitted))
            elif step in by_step:
                decoded = loads(result, task_id, "result") if result is not None else None
                by_step[step].attempts.append(Attempt(task_id, status, started, decoded, seq))
        return steps, fixits

    def page(self, *, status: str | None = None, limit: int = 50,
             before_seq: int | None = None) -> list[SequenceRow]:
        """Newest first; ``before_seq`` is the cursor (the last seq of the page before)."""
        clause, args = where((("status = ?", status), ("seq < ?", before_seq)))
        with self.store._reader() as conn:
            rows = conn.execute(f"SELECT {_SEQ_COLUMNS} FROM sequences {clause} "
                                "ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [_sequence(r) for r in rows]

    def unfinished(self) -> list[SequenceRow]:
        """Pending, running and held sequences, oldest first (start-up)."""
        with self.store._reader() as conn:
            rows = conn.execute(f"SELECT {_SEQ_COLUMNS} FROM sequences WHERE status IN "
                                "('pending', 'running', 'held') ORDER BY seq").fetchall()
        return [_sequence(r) for r in rows]

    def pending_tasks(self, sequence_id: str) -> list[tuple[str, int, int | None]]:
        """(task id, its key in the queue's order, step) of the sequence's pending tasks,
        in that order (the key is COALESCE(rank, seq): an operator's moves kept)."""
        with self.store._reader() as conn:
            return conn.execute("SELECT task_id, COALESCE(rank, seq) AS k, step FROM tasks "
                                "WHERE sequence_id = ? AND status = 'pending' ORDER BY k",
                                (sequence_id,)).fetchall()


def _params(text: str, owner: str) -> dict[str, Any]:
    value = loads(text, owner, "params")
    return value if isinstance(value, dict) else {}
