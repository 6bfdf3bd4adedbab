"""kill -9 and webhooks (issue 32): an event's outbox row is committed with the change
that causes it, its fan-out into deliveries is one transaction with the outbox cursor,
and an attempt is recorded after the request. So whatever a kill cuts, the event is
delivered after the restart under one `webhook-id` (possibly twice, never zero times),
and every final task has exactly one outbox row. The server is `main.py serve` as a real
process, the receivers real HTTP servers on loopback (tests/webhook_receiver.py); the
database is read afterwards with sqlite3."""

from __future__ import annotations

import base64
import hashlib
import hmac
import sqlite3
import threading
from typing import Any

import pytest
import requests

from tests.conftest import wait_until
from tests.proc import ServerProcess
from tests.webhook_receiver import Received, Receiver

pytestmark = pytest.mark.timeout(90)

FAST = ("--sim-speed", "20000", "--max-queue", "100000")  # a 3-bottle scan in ~8 ms
FINAL = ("completed", "failed", "cancelled")
BURST = 200
KILL_AFTER = 100  # final tasks before the kill; the rest are pending or running


def scan(n: int) -> dict[str, Any]:
    return {"cmd_type": "SCAN_QRCODE", "params": {"rack": f"R{n}", "positions": [1, 2, 3]}}


def _start(servers: list[ServerProcess], db: str, *extra: str) -> ServerProcess:
    server = ServerProcess(db, "sim", *FAST, *extra)
    servers.append(server)
    server.wait_ready()
    return server


def _subscribe(server: ServerProcess, url: str, events: list[str]) -> tuple[str, str]:
    r = server.post("/webhooks", {"url": url, "events": events})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["secret"]


def _deliveries(server: ServerProcess, hook_id: str) -> list[dict[str, Any]]:
    r = server.get(f"/webhooks/{hook_id}/deliveries")
    assert r.status_code == 200, r.text
    return list(r.json()["deliveries"])


def _wait_delivered(server: ServerProcess, hook_id: str) -> None:
    """The subscription's one delivery is delivered (the API says so)."""
    wait_until(lambda: [d["status"] for d in _deliveries(server, hook_id)] == ["delivered"],
               5, 0.02, f"{hook_id} delivered")


def _read(db: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _signed(secret: str, got: Received) -> bool:
    """The Standard Webhooks signature, recomputed here."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{got.headers['webhook-id']}.{got.headers['webhook-timestamp']}.".encode()
    mac = base64.b64encode(hmac.new(key, content + got.body, hashlib.sha256).digest()).decode()
    return any(part == f"v1,{mac}" for part in got.headers["webhook-signature"].split())


def _about(received: list[Received], task_id: str) -> list[Received]:
    return [g for g in received if g.json["data"].get("task_id") == task_id]


def _submit(server: ServerProcess, n: int = 1) -> str:
    r = server.post("/", scan(n))
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


def test_kill9_after_completion_redelivers_under_the_same_webhook_id(
        servers: list[ServerProcess], receivers: list[Receiver], tmp_path: Any) -> None:
    """Two subscriptions, killed at two points of one event's delivery: one attempt
    answered 500 and recorded (pending, its retry due in ~3 s), one in flight (the
    receiver holds the request: nothing recorded). After the restart both arrive again
    with the webhook-id and the body of the first copy."""
    db = str(tmp_path / "tasks.db")
    failing, hanging = Receiver([500]), Receiver(["hang"])
    receivers += [failing, hanging]
    # 3 s to the retry: the kill comes long before it, the restart well within it.
    first = _start(servers, db, "--webhook-retry", "3")
    hooks = {name: _subscribe(first, r.url, ["task.completed"])
             for name, r in (("failing", failing), ("hanging", hanging))}
    task_id = _submit(first)
    assert first.wait_final(task_id)["status"] == "completed"
    failing.wait_count(1)
    hanging.wait_count(1)
    wait_until(lambda: [len(d["attempts"]) for d in _deliveries(first, hooks["failing"][0])]
               == [1], 5, 0.02, "the 500 recorded")
    first.kill9()

    assert len(failing.received) == 1 and len(hanging.received) == 1  # no retry yet
    (seq,), = _read(db, "SELECT seq FROM outbox WHERE subject = ? AND type = 'task.completed'",
                    (task_id,))
    rows = {hook: (msg_id, status, attempts) for hook, msg_id, status, attempts in _read(
        db, "SELECT webhook_id, msg_id, status, attempts FROM deliveries WHERE event_seq = ?",
        (seq,))}
    ids = {name: hook for name, (hook, _) in hooks.items()}
    assert rows[ids["failing"]][1:] == ("pending", 1), rows
    assert rows[ids["hanging"]][1:] == ("pending", 0), rows  # in flight: not recorded
    assert len(rows) == 2, rows

    second = _start(servers, db, "--webhook-retry", "3")
    for name, receiver in (("failing", failing), ("hanging", hanging)):
        hook_id, secret = hooks[name]
        got = _about(receiver.wait_count(2, 10), task_id)
        assert len(got) == 2, (name, got)
        assert {g.headers["webhook-id"] for g in got} == {rows[hook_id][0]}, name
        assert got[0].body == got[1].body, name  # the stored body, sent again
        assert got[0].json["type"] == "task.completed"
        assert got[0].json["data"]["status"] == "completed"
        assert all(_signed(secret, g) for g in got), name
        _wait_delivered(second, hook_id)
    after = {hook: n for hook, n in _read(
        db, "SELECT webhook_id, count(*) FROM deliveries GROUP BY webhook_id")}
    assert after == {ids["failing"]: 1, ids["hanging"]: 1}, after


def test_kill9_before_the_fan_out_delivers_the_committed_event(
        servers: list[ServerProcess], receivers: list[Receiver], tmp_path: Any) -> None:
    """The task's final state and its outbox row are committed, its fan-out is not: the
    restarted server fans it out from the stored cursor and delivers it once.
    The first server may deliver nowhere (its allow-list refuses loopback at delivery),
    so the receiver hears of nothing before the kill; a kill cannot be timed between
    two commits microseconds apart, so the state a kill there leaves (the fan-out is one
    transaction: the deliveries and the cursor, or neither) is made from the one found."""
    db = str(tmp_path / "tasks.db")
    receiver = Receiver()
    receivers.append(receiver)
    setup = _start(servers, db)  # subscribed where loopback is allowed
    hook_id, secret = _subscribe(setup, receiver.url, ["task.completed"])
    setup.terminate()

    first = _start(servers, db, "--webhook-allow", "10.0.0.0/8", "--webhook-retry", "30")
    task_id = _submit(first)
    assert first.wait_final(task_id)["status"] == "completed"
    first.kill9()

    assert receiver.received == []
    (seq,), = _read(db, "SELECT seq FROM outbox WHERE subject = ?", (task_id,))
    assert _read(db, "SELECT type FROM outbox WHERE subject = ?", (task_id,)) == \
        [("task.completed",)]
    cursor = int((_read(db, "SELECT value FROM meta WHERE key = 'outbox_fanned'") or [(0,)])
                 [0][0])
    fanned = _read(db, "SELECT status FROM deliveries WHERE event_seq = ?", (seq,))
    assert fanned == ([("pending",)] if cursor >= seq else []), (cursor, seq, fanned)
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute("DELETE FROM delivery_attempts WHERE delivery_id IN "
                         "(SELECT id FROM deliveries WHERE event_seq >= ?)", (seq,))
            conn.execute("DELETE FROM deliveries WHERE event_seq >= ?", (seq,))
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES "
                         "('outbox_fanned', ?)", (str(seq - 1),))
    finally:
        conn.close()

    second = _start(servers, db)
    got = _about(receiver.wait_count(1, 10), task_id)
    _wait_delivered(second, hook_id)
    (msg_id,), = _read(db, "SELECT msg_id FROM deliveries WHERE event_seq = ?", (seq,))
    assert [g.headers["webhook-id"] for g in got] == [msg_id]
    assert got[0].json["data"]["task_id"] == task_id and _signed(secret, got[0])


def _burst_then_kill(server: ServerProcess) -> list[str]:
    """BURST tasks from 4 keep-alive sessions; the server is killed once KILL_AFTER are
    final. The ids of the 202s."""
    accepted: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        session = requests.Session()
        for n in range(k, BURST, 4):
            try:
                r = session.post(server.url + "/", json=scan(n), timeout=10)
            except requests.RequestException:
                return  # cut by the kill
            assert r.status_code == 202, r.text
            with lock:
                accepted.append(r.json()["task_id"])

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    session = requests.Session()

    def finals() -> bool:
        status = session.get(server.url + "/queue/status", timeout=5).json()
        return sum(status[f"{s}_tasks"] for s in FINAL) >= KILL_AFTER
    wait_until(finals, 20, 0.002, "half the burst final")
    server.kill9()
    for t in threads:
        t.join(15)
        assert not t.is_alive()
    return accepted


def _check_outbox(db: str) -> dict[str, str]:
    """Every final task has exactly one outbox row, of its status; no other task has
    one (read in one snapshot: a server may be running). The tasks' statuses."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")
        tasks = dict(conn.execute("SELECT task_id, status FROM tasks").fetchall())
        rows = conn.execute("SELECT subject, type FROM outbox WHERE type LIKE 'task.%'"
                            ).fetchall()
        conn.execute("COMMIT")
    finally:
        conn.close()
    per_task: dict[str, list[str]] = {}
    for subject, kind in rows:
        per_task.setdefault(subject, []).append(kind)
    final = {t: s for t, s in tasks.items() if s in FINAL}
    wrong = {t: per_task.get(t) for t, s in final.items() if per_task.get(t) != [f"task.{s}"]}
    assert wrong == {}, list(wrong.items())[:5]
    extra = {t: kinds for t, kinds in per_task.items() if t not in final}
    assert extra == {}, list(extra.items())[:5]
    return tasks


def test_kill9_in_a_burst_of_200_tasks_one_outbox_row_per_final_task(
        servers: list[ServerProcess], receivers: list[Receiver], tmp_path: Any) -> None:
    db = str(tmp_path / "tasks.db")
    receiver = Receiver()
    receivers.append(receiver)
    first = _start(servers, db)
    hook_id, _ = _subscribe(first, receiver.url, ["*"])
    accepted = _burst_then_kill(first)

    at_kill = _check_outbox(db)
    assert set(accepted) <= set(at_kill)
    assert sum(s in FINAL for s in at_kill.values()) >= KILL_AFTER

    second = _start(servers, db)  # recovery fails a task the kill interrupted
    interrupted = [t for t, s in _check_outbox(db).items() if s == "failed"]
    assert len(interrupted) <= 1, interrupted
    assert all(at_kill[t] == "running" for t in interrupted)
    if second.get("/queue/status").json()["paused"]:
        assert second.post("/queue/resume").status_code == 200
    wait_until(lambda: (q := second.get("/queue/status").json())["pending_tasks"] == 0
               and q["running_task"] is None, 20, 0.02, "the rest of the burst")
    tasks = _check_outbox(db)
    assert all(s in FINAL for s in tasks.values()), tasks

    # Every task's event arrives, and never under two webhook-ids (receivers dedupe by it).
    def all_heard(got: list[Received]) -> bool:
        return {g.json["data"]["task_id"] for g in got if g.type.startswith("task.")} \
            >= set(tasks)
    got = [g for g in receiver.wait_for(all_heard, 20) if g.type.startswith("task.")]
    ids: dict[str, set[str]] = {}
    for g in got:
        ids.setdefault(g.json["data"]["task_id"], set()).add(g.headers["webhook-id"])
        assert g.type == f"task.{tasks[g.json['data']['task_id']]}", g.body
    assert {t: m for t, m in ids.items() if len(m) != 1} == {}
    assert len({m for ms in ids.values() for m in ms}) == len(tasks)
    wait_until(lambda: second.get("/webhooks").json()["webhooks"][0]["pending"] == 0, 10,
               0.02, "nothing pending")
    second.terminate()
    (n,), = _read(db, "SELECT count(*) FROM deliveries WHERE webhook_id = ? AND type LIKE "
                  "'task.%'", (hook_id,))
    assert n == len(tasks)  # one delivery per task event, fanned out once
