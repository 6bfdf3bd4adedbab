"""The events other than a single task's: a sequence's steps and its end, its hold, the
queue held by it, a robot's disconnection; and what the outbox keeps over time."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator

import pytest
import requests

from tasks.store import TaskStore
from tasks.store.audit import AuditEntry
from tasks.store.webhooks import Attempt, WebhookStore
from tests.conftest import Client, wait_until
from tests.webhook_receiver import Receiver

HOME = {"cmd_type": "HOME", "params": {}}
PICK = {"cmd_type": "PICK", "params": {"position": 3}}


@pytest.fixture
def rx() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def subscribe(url: str, target: str, events: list[str]) -> str:
    r = requests.post(url + "/webhooks", json={"url": target, "events": events}, timeout=10)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_a_sequence_tells_of_its_steps_its_hold_and_its_end(make_server, rx):
    server = make_server()
    client = Client(server)
    subscribe(server.url, rx.url, ["*"])
    body = {"name": "prep", "external_id": "BATCH-9", "steps": [HOME, PICK]}
    ok = client.post("/sequences", body).json()["sequence_id"]
    got = rx.wait_for(lambda g: any(r.type == "sequence.completed" for r in g))
    kinds = [r.type for r in got]
    assert kinds == ["task.completed", "task.completed", "sequence.completed"], kinds
    steps = [r.json["data"] for r in got[:2]]
    assert [s["step"] for s in steps] == [1, 2] and {s["sequence_id"] for s in steps} == {ok}
    assert {s["external_id"] for s in steps} == {"BATCH-9"}  # the batch each step is of
    done = got[2].json["data"]
    assert done["sequence_id"] == ok and done["external_id"] == "BATCH-9"
    assert done["result_summary"] == {"steps": 2, "completed": 2}
    assert done["url"] == f"{server.url}/sequences/{ok}"
    # A failing step holds the sequence, which holds the queue: both are told.
    server.simulator.fault_next("PICK")
    held = client.post("/sequences", {"steps": [HOME, PICK]}).json()["sequence_id"]
    got = rx.wait_for(lambda g: any(r.type == "sequence.held" for r in g))
    event = next(r.json["data"] for r in got if r.type == "sequence.held")
    assert event["sequence_id"] == held and event["current_step"] == 2
    assert event["hold"]["code"] == "step_failed"
    got = rx.wait_for(lambda g: any(r.type == "queue.paused" for r in g))
    paused = next(r.json["data"] for r in got if r.type == "queue.paused")
    assert paused["code"] == "sequence_held"
    assert "task.failed" in [r.type for r in got]


def test_a_robot_disconnection_is_told(make_server, rx):
    server = make_server()
    subscribe(server.url, rx.url, ["robot.disconnected"])
    wait_until(lambda: requests.get(server.url + "/webhooks", timeout=5).json()["webhooks"])
    server.simulator.unplug()
    (got,) = rx.wait_count(1)
    assert got.type == "robot.disconnected" and got.json["data"]["event"] == "disconnected"


def test_draining_maintenance_and_opening_again_are_told(make_server, rx):
    server = make_server()
    client = Client(server)
    subscribe(server.url, rx.url, ["queue.draining", "queue.maintenance", "queue.opened"])
    client.post("/queue/pause")
    task_id = client.submit({"cmd_type": "PING"})
    client.post("/queue/drain", {"reason": "月度校准"})
    (drained,) = rx.wait_count(1)
    assert drained.type == "queue.draining"
    assert drained.json["data"] == {"queue_mode": "draining", "reason": "月度校准",
                                    "by": "anonymous", "window": 1}
    client.post("/queue/resume")  # the last task runs; then maintenance, by itself
    assert client.wait_final(task_id)["status"] == "completed"
    got = rx.wait_count(2)
    assert got[1].type == "queue.maintenance"
    assert got[1].json["data"] == {"queue_mode": "maintenance", "reason": "月度校准",
                                   "by": None, "window": 1}
    client.post("/queue/open", headers={"X-Reason": "done"})
    got = rx.wait_count(3)
    assert got[2].type == "queue.opened"
    assert got[2].json["data"] == {"queue_mode": "open", "reason": "done", "by": "anonymous",
                                   "window": 1}
    # Maintenance asked while draining: the same window; a second ask tells nothing.
    client.post("/queue/pause")
    client.submit({"cmd_type": "PING"})
    client.post("/queue/drain", {"reason": "gripper"})
    assert client.post("/queue/maintenance", {"reason": "now"}).json()["changed"] is True
    assert client.post("/queue/maintenance", {"reason": "again"}).json()["changed"] is False
    client.post("/queue/open")
    got = rx.wait_count(6)
    assert [g.type for g in got[3:]] == ["queue.draining", "queue.maintenance", "queue.opened"]
    assert {g.json["data"]["window"] for g in got[3:]} == {2}
    assert got[4].json["data"]["reason"] == "gripper"  # the window's reason
    assert got[4].json["data"]["by"] == "anonymous"


def test_old_events_and_deliveries_are_pruned_pending_ones_kept(tmp_path):
    store = TaskStore(str(tmp_path / "t.db"))
    store.open()
    try:
        hooks = WebhookStore(store)
        hook = hooks.add("http://127.0.0.1:9/", ["*"], None, "whsec_AAAA",
                         audit=AuditEntry("test", "admin", "local", "webhook.add"))
        store.set_meta({"paused": "1"})  # no event: the manager writes the queue's
        with sqlite3.connect(store.path) as conn:
            for _ in range(3):
                conn.execute("INSERT INTO outbox(type, subject, time) "
                             "VALUES ('task.completed', 't', 1000.0)")
        assert hooks.fan_out("http://x") == 3
        old = hooks.next_due(hook.id)
        assert old is not None
        hooks.record(old, Attempt(1000.0, 200, None, 3), "delivered", None)
        second = hooks.next_due(hook.id)
        assert second is not None and second.id != old.id
        hooks.record(second, Attempt(time.time(), 500, "HTTP 500", 3), "pending", 1e12)
        with sqlite3.connect(store.path) as conn:
            conn.execute("UPDATE deliveries SET created = 1000.0")
        hooks.prune(older_than=2000.0)
        with sqlite3.connect(store.path) as conn:
            assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
            left = conn.execute("SELECT status FROM deliveries ORDER BY id").fetchall()
            attempts = conn.execute("SELECT count(*) FROM delivery_attempts").fetchone()[0]
        assert left == [("pending",), ("pending",)] and attempts == 1
    finally:
        store.close()
