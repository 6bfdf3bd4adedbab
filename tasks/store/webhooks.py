"""Webhook subscriptions, their deliveries and every attempt (docs/webhooks.md).

The sender (server/webhooks/sender.py) fans each new outbox row out into one delivery
per subscription that wants it, in one transaction with the outbox cursor, so an event
is fanned out once whatever crashes (and writes nothing while no subscription is
enabled); it then records each attempt in a transaction of its own, after the request:
a crash between the two sends the delivery again (at least once, with the same
webhook-id), never zero times.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks.errors import TaskError
from tasks.store.audit import AuditEntry, utc_iso
from tasks.store.outbox import EVENT_TYPES, after, last_seq, render
from tasks.store.rows import where
from tasks.store.taskstore import TaskStore

STATUSES = ("pending", "delivered", "failed")
DESCRIPTION_MAX = 200
_CURSOR = "outbox_fanned"  # meta: the last outbox seq fanned out
_W_COLUMNS = ("id, url, events, description, secret, enabled, disabled_reason, created, "
              "created_by, from_seq")
_D_COLUMNS = "id, webhook_id, event_seq, msg_id, type, body, status, attempts, next_try, " \
             "replay_of, created"


class WebhookError(TaskError):
    """webhook_not_found, delivery_not_found."""


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else utc_iso(seconds)


@dataclass(frozen=True)
class WebhookRow:
    id: str
    url: str
    events: tuple[str, ...]
    description: str | None
    secret: str  # never in to_dict(): shown once, when made
    enabled: bool
    disabled_reason: str | None
    created: float
    created_by: str | None
    from_seq: int

    def wants(self, kind: str) -> bool:
        return "*" in self.events or kind in self.events

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "events": list(self.events),
                "description": self.description, "enabled": self.enabled,
                "disabled_reason": self.disabled_reason, "created": utc_iso(self.created),
                "created_by": self.created_by}


def _webhook(row: tuple[Any, ...]) -> WebhookRow:
    (id_, url, events, description, secret, enabled, reason, created, created_by,
     from_seq) = row
    try:
        kinds = tuple(str(k) for k in json.loads(events))
    except (ValueError, TypeError):
        kinds = ()
    return WebhookRow(id_, url, kinds, description, secret, bool(enabled), reason, created,
                      created_by, from_seq)


@dataclass(frozen=True)
class Delivery:
    id: int
    webhook_id: str
    event_seq: int | None
    msg_id: str
    type: str
    body: str
    status: str
    attempts: int
    next_try: float | None
    replay_of: int | None
    created: float


@dataclass(frozen=True)
class Attempt:
    time: float
    status_code: int | None
    error: str | None
    duration_ms: int


def subscribed(events: Any) -> list[str] | None:
    """What a subscription may hear, each once in the order given (``*``: everything);
    None if ``events`` is not a non-empty list of known event types."""
    if (not isinstance(events, list) or not events
            or not all(isinstance(e, str) and (e == "*" or e in EVENT_TYPES) for e in events)):
        return None
    return list(dict.fromkeys(events))


def new_msg_id() -> str:
    return "msg_" + secrets.token_hex(12)


class WebhookStore:
    """Subscriptions' and deliveries' reads and writes over the task store's connections."""

    def __init__(self, store: TaskStore, *, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.wall = wall

    # -- subscriptions -----------------------------------------------------------------
    def add(self, url: str, events: list[str], description: str | None, secret: str, *,
            audit: AuditEntry) -> WebhookRow:
        """A new subscription; it hears of events after this commit only."""
        id_ = "wh_" + secrets.token_hex(8)
        audit.target, audit.after = id_, "enabled"
        with self.store._transaction() as conn:
            conn.execute(f"INSERT INTO webhooks({_W_COLUMNS}) VALUES (?, ?, ?, ?, ?, 1, NULL, "
                         "?, ?, ?)", (id_, url, json.dumps(events), description, secret,
                                      self.wall(), audit.principal, last_seq(conn)))
            audit.statement()(conn)
            return self._get(conn, id_)

    def change(self, id_: str, *, audit: AuditEntry | None, enabled: bool | None = None,
               events: list[str] | None = None, description: str | None = None,
               url: str | None = None, disabled_reason: str | None = None) -> WebhookRow:
        """Change what is given. Enabling clears the reason it was disabled."""
        with self.store._transaction() as conn:
            old = self._get(conn, id_)
            sets: list[tuple[str, Any]] = []
            if enabled is not None:
                sets += [("enabled = ?", int(enabled)),
                         ("disabled_reason = ?", None if enabled else disabled_reason)]
            if enabled and not old.enabled:  # like a new one: events after this commit
                sets.append(("from_seq = ?", max(old.from_seq, last_seq(conn))))
            if events is not None:
                sets.append(("events = ?", json.dumps(events)))
            if description is not None:
                sets.append(("description = ?", description))
            if url is not None:
                sets.append(("url = ?", url))
            if sets:
                conn.execute(f"UPDATE webhooks SET {', '.join(c for c, _ in sets)} WHERE id = ?",
                             (*[v for _, v in sets], id_))
            if audit is not None:
                audit.target = id_
                audit.before = "enabled" if old.enabled else "disabled"
                audit.after = "enabled" if (old.enabled if enabled is None else enabled) \
                    else "disabled"
                audit.statement()(conn)
            return self._get(conn, id_)

    def remove(self, id_: str, *, audit: AuditEntry) -> None:
        """The subscription, its deliveries and their attempts."""
        audit.target, audit.after = id_, "removed"
        with self.store._transaction() as conn:
            old = self._get(conn, id_)
            audit.before = "enabled" if old.enabled else "disabled"
            conn.execute("DELETE FROM delivery_attempts WHERE delivery_id IN "
                         "(SELECT id FROM deliveries WHERE webhook_id = ?)", (id_,))
            conn.execute("DELETE FROM deliveries WHERE webhook_id = ?", (id_,))
            conn.execute("DELETE FROM webhooks WHERE id = ?", (id_,))
            audit.statement()(conn)

    def _get(self, conn: sqlite3.Connection, id_: str) -> WebhookRow:
        row = conn.execute(f"SELECT {_W_COLUMNS} FROM webhooks WHERE id = ?",
                           (id_,)).fetchone()
        if row is None:
            raise WebhookError(code="webhook_not_found", id=str(id_)[:80])
        return _webhook(row)

    def get(self, id_: str) -> WebhookRow:
        with self.store._reader() as conn:
            return self._get(conn, id_)

    def all(self) -> list[WebhookRow]:
        with self.store._reader() as conn:
            rows = conn.execute(f"SELECT {_W_COLUMNS} FROM webhooks ORDER BY created").fetchall()
        return [_webhook(r) for r in rows]

    def overview(self, id_: str | None = None) -> list[dict[str, Any]]:
        """Every subscription (or ``id_``) as clients see it: pending deliveries and the
        last attempt."""
        out = []
        clause, args = where((("id = ?", id_),))
        with self.store._reader() as conn:
            rows = conn.execute(f"SELECT {_W_COLUMNS} FROM webhooks {clause} ORDER BY created",
                                args).fetchall()
            for row in rows:
                hook = _webhook(row)
                doc = hook.to_dict()
                doc["pending"] = conn.execute(
                    "SELECT count(*) FROM deliveries WHERE webhook_id = ? AND status = 'pending'",
                    (hook.id,)).fetchone()[0]
                last = conn.execute(
                    "SELECT a.time, a.status_code, a.error, a.delivery_id FROM deliveries d "
                    "JOIN delivery_attempts a ON a.delivery_id = d.id WHERE d.webhook_id = ? "
                    "ORDER BY a.time DESC LIMIT 1", (hook.id,)).fetchone()
                doc["last"] = None if last is None else {
                    "time": utc_iso(last[0]), "status_code": last[1], "error": last[2],
                    "delivery_id": last[3],
                    "ok": last[1] is not None and 200 <= last[1] < 300}
                out.append(doc)
        return out

    # -- fan-out and deliveries -------------------------------------------------------
    def fan_out(self, base_url: str, limit: int = 200) -> int:
        """Outbox rows not yet fanned out become deliveries of the enabled subscriptions
        that want them, with the cursor, in one transaction; the number of rows taken.
        With no subscription enabled nothing is written (no COMMIT, no fsync)."""
        now = self.wall()
        with self.store._reader() as conn:  # most wake-ups find nothing: no write lock
            if last_seq(conn) <= self._start(conn):
                return 0
        with self.store._transaction() as conn:
            events = after(conn, self._start(conn), limit)
            if not events:
                return 0
            hooks = [_webhook(r) for r in conn.execute(
                f"SELECT {_W_COLUMNS} FROM webhooks WHERE enabled = 1").fetchall()]
            for event in events:
                wanting = [h for h in hooks if h.wants(event.type) and event.seq > h.from_seq]
                if not wanting:
                    continue
                body = render(conn, event, base_url)
                for hook in wanting:
                    conn.execute(
                        "INSERT INTO deliveries(webhook_id, event_seq, msg_id, type, body, "
                        "status, attempts, next_try, created) "
                        "VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
                        (hook.id, event.seq, new_msg_id(), event.type, body, now, now))
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                         (_CURSOR, str(events[-1].seq)))
            return len(events)

    @staticmethod
    def _cursor(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (_CURSOR,)).fetchone()
        return int(row[0]) if row else 0

    @classmethod
    def _start(cls, conn: sqlite3.Connection) -> int:
        """The outbox seq after which fan-out has work: the cursor, or past it the oldest
        from_seq of the enabled subscriptions (none hears of events before its own, and
        one enabled again takes a new one), or the last seq when none is enabled. So the
        cursor moves only when something is fanned out, and a backlog from a time with
        no subscriber is skipped, not walked."""
        oldest, enabled = conn.execute(
            "SELECT min(from_seq), count(*) FROM webhooks WHERE enabled = 1").fetchone()
        if not enabled:
            return last_seq(conn)
        return max(cls._cursor(conn), int(oldest))

    def next_due(self, webhook_id: str) -> Delivery | None:
        """The subscription's oldest pending delivery (the later ones wait for it)."""
        with self.store._reader() as conn:
            row = conn.execute(f"SELECT {_D_COLUMNS} FROM deliveries WHERE webhook_id = ? "
                               "AND status = 'pending' AND event_seq IS NOT NULL "
                               "ORDER BY id LIMIT 1", (webhook_id,)).fetchone()
        return None if row is None else Delivery(*row)

    def delivery(self, delivery_id: int) -> Delivery:
        with self.store._reader() as conn:
            row = conn.execute(f"SELECT {_D_COLUMNS} FROM deliveries WHERE id = ?",
                               (delivery_id,)).fetchone()
        if row is None:
            raise WebhookError(code="delivery_not_found", id=str(delivery_id)[:80])
        return Delivery(*row)

    def new_delivery(self, webhook_id: str, kind: str, body: str, *, msg_id: str,
                     replay_of: int | None = None, audit: AuditEntry | None = None) -> Delivery:
        """A delivery sent at once by a request (a ping, a replay), outside the order."""
        now = self.wall()
        with self.store._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO deliveries(webhook_id, event_seq, msg_id, type, body, status, "
                "attempts, next_try, replay_of, created) VALUES (?, NULL, ?, ?, ?, 'pending', "
                "0, NULL, ?, ?)", (webhook_id, msg_id, kind, body, replay_of, now))
            if audit is not None:
                audit.target = webhook_id
                audit.statement()(conn)
            assert cur.lastrowid is not None
            row = conn.execute(f"SELECT {_D_COLUMNS} FROM deliveries WHERE id = ?",
                               (cur.lastrowid,)).fetchone()
        return Delivery(*row)

    def record(self, delivery: Delivery, attempt: Attempt, status: str,
               next_try: float | None) -> None:
        """One attempt and the delivery's state after it."""
        assert status in STATUSES
        with self.store._transaction() as conn:
            n = conn.execute("SELECT attempts FROM deliveries WHERE id = ?",
                             (delivery.id,)).fetchone()
            if n is None:  # removed meanwhile with its subscription
                return
            conn.execute("INSERT INTO delivery_attempts(delivery_id, n, time, status_code, "
                         "error, duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
                         (delivery.id, n[0] + 1, attempt.time, attempt.status_code,
                          attempt.error, attempt.duration_ms))
            conn.execute("UPDATE deliveries SET status = ?, attempts = ?, next_try = ? "
                         "WHERE id = ?", (status, n[0] + 1, next_try, delivery.id))

    def deliveries(self, webhook_id: str, *, status: str | None = None, limit: int = 50,
                   before: int | None = None,
                   delivery_id: int | None = None) -> list[dict[str, Any]]:
        """Newest first, each with its attempts and body (``delivery_id``: that one)."""
        clause, args = where((("webhook_id = ?", webhook_id), ("status = ?", status),
                              ("id < ?", before), ("id = ?", delivery_id)))
        with self.store._reader() as conn:
            rows = conn.execute(f"SELECT {_D_COLUMNS} FROM deliveries {clause} "
                                "ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
            out = []
            for row in rows:
                d = Delivery(*row)
                tries = conn.execute("SELECT n, time, status_code, error, duration_ms FROM "
                                     "delivery_attempts WHERE delivery_id = ? ORDER BY n",
                                     (d.id,)).fetchall()
                out.append(delivery_doc(d, tries))
        return out

    def prune(self, older_than: float) -> None:
        """Fanned-out events and finished deliveries older than ``older_than``."""
        with self.store._transaction() as conn:
            conn.execute("DELETE FROM outbox WHERE seq <= ? AND time < ?",
                         (self._start(conn), older_than))
            old = "status != 'pending' AND created < ?"
            conn.execute("DELETE FROM delivery_attempts WHERE delivery_id IN "
                         f"(SELECT id FROM deliveries WHERE {old})", (older_than,))
            conn.execute(f"DELETE FROM deliveries WHERE {old}", (older_than,))


def delivery_doc(d: Delivery, tries: list[tuple[Any, ...]]) -> dict[str, Any]:
    try:
        body = json.loads(d.body)
    except ValueError:
        body = None
    return {"id": d.id, "webhook_id": d.webhook_id, "msg_id": d.msg_id, "type": d.type,
            "status": d.status, "created": utc_iso(d.created), "next_try": _iso(d.next_try),
            "replay_of": d.replay_of,
            "attempts": [{"n": n, "time": utc_iso(t), "status_code": code, "error": error,
                          "duration_ms": ms} for n, t, code, error, ms in tries],
            "body": body}
