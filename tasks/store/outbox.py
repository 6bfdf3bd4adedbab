"""The outbox: one row per event another system may hear of (docs/webhooks.md).

A row is written in the transaction of the change that causes it, so a crash can
neither lose an event nor invent one: a task's or a sequence's final state by the
schema's triggers (tasks/store/db.py), a pause or resume by the manager's statement
(`event_statement`, committed with the hold), a robot's event by the sender's thread
(`TaskStore.commit`, nothing to be consistent with). What an event says of a task or a
sequence is read from its row when it is fanned out (`render`): a final row no longer
changes, so every delivery of it carries the same body.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks.store.audit import utc_iso
from tasks.store.rows import Statement, dumps

TASK_EVENTS = ("task.completed", "task.failed", "task.cancelled")
SEQUENCE_EVENTS = ("sequence.completed", "sequence.failed", "sequence.held",
                   "sequence.cancelled")
QUEUE_EVENTS = ("queue.paused", "queue.resumed")
# The robot taken out of service and back (docs/queue.md): drain, maintenance, open.
MODE_EVENTS = ("queue.draining", "queue.maintenance", "queue.opened")
ROBOT_EVENTS = ("robot.disconnected", "robot.fault")
EVENT_TYPES = TASK_EVENTS + SEQUENCE_EVENTS + QUEUE_EVENTS + MODE_EVENTS + ROBOT_EVENTS
PING = "ping"
TEXT_MAX = 300  # a message in an event: the full result is at its url
BODY_MAX = 20_000


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    type: str
    subject: str | None
    time: float
    data: str | None


def event_statement(kind: str, data: dict[str, Any],
                    wall: Callable[[], float] = time.time) -> Statement:
    """An event whose data is known now, as a statement committed with its change."""
    assert kind in EVENT_TYPES, kind
    return ("INSERT INTO outbox(type, subject, time, data) VALUES (?, NULL, ?, ?)",
            (kind, wall(), dumps(data)))


def deferred_event(kind: str, data: Callable[[], dict[str, Any]],
                   wall: Callable[[], float] = time.time) -> Statement:
    """An event whose data is complete only inside its transaction (a row made by an
    earlier statement of it, such as a maintenance window's id)."""
    assert kind in EVENT_TYPES, kind
    return lambda conn: conn.execute(
        "INSERT INTO outbox(type, subject, time, data) VALUES (?, NULL, ?, ?)",
        (kind, wall(), dumps(data())))


def last_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(seq) FROM outbox").fetchone()
    return int(row[0] or 0)


def after(conn: sqlite3.Connection, seq: int, limit: int) -> list[OutboxRow]:
    rows = conn.execute("SELECT seq, type, subject, time, data FROM outbox WHERE seq > ? "
                        "ORDER BY seq LIMIT ?", (seq, limit)).fetchall()
    return [OutboxRow(*r) for r in rows]


def payload(kind: str, when: float, data: dict[str, Any]) -> str:
    """The body of a delivery: compact JSON, as signed."""
    return json.dumps({"type": kind, "timestamp": utc_iso(when), "data": data},
                      ensure_ascii=False, separators=(",", ":"))


def render(conn: sqlite3.Connection, event: OutboxRow, base_url: str) -> str:
    """The event's body, read from its subject's row (a task's, a sequence's) or from
    the data written with it; always under BODY_MAX."""
    if event.data is not None:
        data = _loads(event.data)
    elif event.type.startswith("task."):
        data = _task(conn, event, base_url)
    else:
        data = _sequence(conn, event, base_url)
    body = payload(event.type, event.time, data)
    if len(body.encode("utf-8")) > BODY_MAX:  # only a pathological row: keep the ids
        keep = ("task_id", "sequence_id", "status", "cmd_type", "external_id", "url")
        body = payload(event.type, event.time, {k: data.get(k) for k in keep if k in data})
    return body


def _loads(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _short(value: Any) -> Any:
    return value[:TEXT_MAX] if isinstance(value, str) else value


def summary(result: Any) -> dict[str, Any]:
    """What a result says in a few fields: success, code, message, error, its counts
    (``scanned_count``) and the number of items of each of its lists (the bottles)."""
    if not isinstance(result, dict):
        return {}
    out = {k: _short(result[k]) for k in ("success", "code", "message", "error")
           if k in result and isinstance(result[k], (str, bool, int, float, type(None)))}
    counts: dict[str, int] = {}
    for source in (result, result.get("data")):
        if isinstance(source, dict):
            for key, value in source.items():
                if isinstance(value, list):
                    counts[key] = len(value)
                elif key.endswith("_count") and type(value) is int:
                    out[key] = value
    if counts:
        out["counts"] = counts
    return out


def _task(conn: sqlite3.Connection, event: OutboxRow, base_url: str) -> dict[str, Any]:
    row = conn.execute("SELECT status, cmd_type, external_id, submitted_by, sequence_id, "
                       "step, result FROM tasks WHERE task_id = ?",
                       (event.subject,)).fetchone()
    data: dict[str, Any] = {"task_id": event.subject, "status": event.type.split(".", 1)[1]}
    if row is None:  # pruned before it was fanned out: the ids are all there is
        return data
    status, cmd_type, external_id, submitted_by, sequence_id, step, result = row
    if external_id is None and sequence_id is not None:  # a step: its sequence's id
        found = conn.execute("SELECT external_id FROM sequences WHERE sequence_id = ?",
                             (sequence_id,)).fetchone()
        external_id = found[0] if found else None
    data.update(status=status, cmd_type=cmd_type, external_id=external_id)
    if submitted_by is not None:
        data["submitted_by"] = submitted_by
    if sequence_id is not None:
        data["sequence_id"], data["step"] = sequence_id, step
    data["result_summary"] = summary(_loads(result) if result else None)
    data["url"] = f"{base_url}/task/{event.subject}"
    return data


def _sequence(conn: sqlite3.Connection, event: OutboxRow, base_url: str) -> dict[str, Any]:
    row = conn.execute("SELECT name, external_id, submitted_by, current_step, hold_code, "
                       "hold_params FROM sequences WHERE sequence_id = ?",
                       (event.subject,)).fetchone()
    data: dict[str, Any] = {"sequence_id": event.subject,
                            "status": event.type.split(".", 1)[1]}
    if row is None:
        return data
    name, external_id, submitted_by, current_step, hold_code, hold_params = row
    data.update(name=name, external_id=external_id)
    if submitted_by is not None:
        data["submitted_by"] = submitted_by
    if event.type == "sequence.held":
        data["current_step"] = current_step
        data["hold"] = {"code": hold_code, "params": _loads(hold_params or "{}")}
    steps = conn.execute(
        "SELECT count(*), sum(t.status = 'completed') FROM sequence_steps s "
        "LEFT JOIN tasks t ON t.task_id = s.task_id WHERE s.sequence_id = ?",
        (event.subject,)).fetchone()
    data["result_summary"] = {"steps": steps[0] or 0, "completed": steps[1] or 0}
    data["url"] = f"{base_url}/sequences/{event.subject}"
    return data
