"""The audit trail (issue 31, docs/security.md) on a real server over loopback: every
state-changing action through HTTP leaves exactly one row, checked against a written
list (who, role, target, before/after, reason, the reply's X-Request-ID); refusals leave
one `auth.refused` row each; reads, dry runs and replays none. Attribution in the task,
sequence and queue documents; GET /audit's filters and paging, the CSV export, verify;
the rows outlive a prune of the tasks they name."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
import requests

from server.runtime import STATIC_DIR, RobotServer
from tasks.store.audit import FIELDS
from tasks.store.housekeeping import Pruner
from tests.conftest import SCAN, add_principal, suite_settings, wait_until

ADMIN_TOKEN = "admin-token-for-the-audit-tests"
HOME = {"cmd_type": "HOME"}
PICK = {"cmd_type": "PICK", "params": {"position": 3}}
GATE = {"cmd_type": "CONFIRM", "params": {"message": "Load rack B, then confirm"}}
WRONG_RACK = "样品架错误"  # sent %-escaped in X-Reason
NEW_RACK = "换了新的样品架"  # sent as a JSON body's `reason`
ANY: Any = object()  # a field this row may have any value in
DAY = 86400.0


@dataclass
class Lab:
    server: RobotServer
    url: str
    tokens: dict[str, str] = field(default_factory=dict)
    seen: int = 0  # the last audit seq already checked
    checked: list[dict[str, Any]] = field(default_factory=list)  # every row checked

    def call(self, method: str, path: str, who: str | None = None, *, body: Any = None,
             query: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> requests.Response:
        token = None if who is None else self.tokens.get(who, who)
        auth = {} if token is None else {"Authorization": f"Bearer {token}"}
        return requests.request(method, self.url + path, params=query, json=body,
                                headers={**auth, **(headers or {})}, timeout=20)

    def audit(self, **query: str) -> list[dict[str, Any]]:
        """Every row matching ``query`` through GET /audit, newest first."""
        r = self.call("GET", "/audit", "admin", query={"limit": "1000", **query})
        assert r.status_code == 200, r.text
        return list(r.json()["entries"])

    def new_rows(self) -> list[dict[str, Any]]:
        return [e for e in reversed(self.audit()) if e["seq"] > self.seen]

    def expect(self, reply: requests.Response, action: str, principal: str, role: str,
               target: Any, before: Any, after: Any, reason: Any = None,
               status: int | None = None) -> dict[str, Any]:
        """``reply`` left exactly one row, this one."""
        rows = wait_until(self.new_rows, 5, 0.02, f"the audit row of {action}")
        assert len(rows) == 1, (action, rows)
        row = rows[0]
        wanted = {"action": action, "principal": principal, "role": role, "target": target,
                  "before": before, "after": after, "reason": reason, "status": status,
                  "address": "127.0.0.1", "request_id": reply.headers["X-Request-ID"]}
        got = {k: row[k] for k in wanted}
        assert got == {k: (got[k] if v is ANY else v) for k, v in wanted.items()}, row
        assert row["time"].endswith("Z") and len(row["hash"]) == 64
        self.seen = row["seq"]
        self.checked.append(row)
        return row

    def expect_none(self, what: str) -> None:
        assert self.new_rows() == [], what

    def doc(self, path: str) -> dict[str, Any]:
        r = self.call("GET", path, "admin")
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    db = str(tmp_path_factory.mktemp("audit") / "tasks.db")
    server = RobotServer(suite_settings(db, api_token=ADMIN_TOKEN), static_dir=STATIC_DIR)
    server.start()
    try:
        yield Lab(server, server.url, {"admin": ADMIN_TOKEN})
    finally:
        server.stop()


def _submitted(r: requests.Response) -> str:
    assert r.status_code == 202, r.text
    return str(r.json().get("task_id") or r.json()["sequence_id"])


def _wait_task(lab: Lab, task_id: str, *statuses: str) -> dict[str, Any]:
    return wait_until(lambda: (d := lab.doc(f"/task/{task_id}"))["status"] in statuses and d,
                      10, 0.02, f"task {task_id} {statuses}")


def _wait_seq(lab: Lab, sequence_id: str, *statuses: str) -> dict[str, Any]:
    return wait_until(lambda: (d := lab.doc(f"/sequences/{sequence_id}"))["status"]
                      in statuses and d, 10, 0.02, f"sequence {sequence_id} {statuses}")


# -- a row per action ---------------------------------------------------------------------------
def test_every_action_leaves_exactly_one_row(lab: Lab) -> None:
    sim = lab.server.simulator
    assert sim is not None
    zh = {"X-Reason": quote(WRONG_RACK)}
    expect = lab.expect

    # The principals.
    for name, role in (("alice", "operator"), ("bob", "operator"), ("vera", "viewer")):
        r = lab.call("POST", "/admin/users", "admin", body={"name": name, "role": role})
        assert r.status_code == 201, r.text
        lab.tokens[name] = r.json()["token"]
        expect(r, "user.add", "admin", "admin", name, None, role)

    # task.submit, with a reason in X-Reason and the client's own request id.
    r = lab.call("POST", "/", "alice", body=SCAN, headers={**zh, "X-Request-ID": "lab-42"})
    assert r.headers["X-Request-ID"] == "lab-42"
    done = _submitted(r)
    expect(r, "task.submit", "alice", "operator", done, None, "pending", WRONG_RACK)
    assert _wait_task(lab, done, "completed")["submitted_by"] == "alice"

    # queue.pause with a JSON reason; paused_by in the reply and /queue/status.
    r = lab.call("POST", "/queue/pause", "alice", body={"reason": NEW_RACK})
    assert r.status_code == 200 and r.json()["paused_by"] == "alice", r.text
    expect(r, "queue.pause", "alice", "operator", "queue", "running", "paused", NEW_RACK)
    assert lab.doc("/queue/status")["paused_by"] == "alice"

    # task.cancel of a pending task (JSON reason), task.retry, an admin's cancel of hers.
    pending = _submitted(r := lab.call("POST", "/", "alice", body=SCAN))
    expect(r, "task.submit", "alice", "operator", pending, None, "pending")
    r = lab.call("POST", f"/task/{pending}/cancel", "alice", body={"reason": NEW_RACK})
    assert r.status_code == 200, r.text
    expect(r, "task.cancel", "alice", "operator", pending, "pending", "cancelled", NEW_RACK)
    doc = lab.doc(f"/task/{pending}")
    assert (doc["submitted_by"], doc["cancelled_by"]) == ("alice", "alice")
    retried = _submitted(r := lab.call("POST", f"/task/{pending}/retry", "alice"))
    expect(r, "task.retry", "alice", "operator", retried, None, "pending")
    r = lab.call("DELETE", f"/task/{retried}", "admin", headers=zh)
    assert r.status_code == 200, r.text
    expect(r, "task.cancel", "admin", "admin", retried, "pending", "cancelled", WRONG_RACK)
    doc = lab.doc(f"/task/{retried}")
    assert (doc["submitted_by"], doc["cancelled_by"]) == ("alice", "admin")
    assert "cancelled_by" not in lab.doc(f"/task/{done}")

    # queue.resume; paused_by goes.
    r = lab.call("POST", "/queue/resume", "bob")
    assert r.status_code == 200, r.text
    expect(r, "queue.resume", "bob", "operator", "queue", "paused", "running")
    assert lab.doc("/queue/status")["paused_by"] is None

    # task.cancel of a running task (a scan kept running by heartbeats).
    sim.set_fault("heartbeat_only")
    try:
        running = _submitted(r := lab.call("POST", "/", "bob", body=SCAN))
        expect(r, "task.submit", "bob", "operator", running, None, "pending")
        _wait_task(lab, running, "running")
        r = lab.call("POST", f"/task/{running}/cancel", "bob", headers=zh)
        assert r.status_code in (200, 202), r.text
        # The row records the request: the task ends cancelled once the robot confirmed
        # the STOP (the worker's commit, docs/security.md).
        expect(r, "task.cancel", "bob", "operator", running, "running", "cancelling", WRONG_RACK)
    finally:
        sim.set_fault(None)
    doc = _wait_task(lab, running, "cancelled")
    assert (doc["submitted_by"], doc.get("cancelled_by")) == ("bob", "bob"), doc
    listed = [t for t in lab.doc("/tasks")["tasks"] if t["task_id"] == running]
    assert listed and listed[0].get("cancelled_by") == "bob", listed

    # robot.stop by a viewer: the queue is paused by it, not by a person's pause.
    r = lab.call("POST", "/robot/stop", "vera")
    assert r.status_code == 200, r.text
    expect(r, "robot.stop", "vera", "viewer", "robot", "running", "paused")
    r = lab.call("POST", "/queue/resume", "admin", headers=zh)
    expect(r, "queue.resume", "admin", "admin", "queue", "paused", "running", WRONG_RACK)

    # sequence.submit and sequence.confirm (resumed_by).
    gated = _submitted(r := lab.call("POST", "/sequences", "alice",
                                     body={"name": "gate", "steps": [HOME, GATE, HOME]}))
    expect(r, "sequence.submit", "alice", "operator", gated, None, "pending")
    wait_until(lambda: lab.doc(f"/sequences/{gated}")["confirm"], 10, 0.02, "the CONFIRM")
    r = lab.call("POST", f"/sequences/{gated}/confirm", "bob", headers=zh)
    assert r.status_code == 200, r.text
    expect(r, "sequence.confirm", "bob", "operator", gated, "running", ANY, WRONG_RACK)
    doc = _wait_seq(lab, gated, "completed")
    assert (doc["submitted_by"], doc["resumed_by"]) == ("alice", "bob")
    assert "cancelled_by" not in doc and "recovered_by" not in doc

    # A held sequence: sequence.fixit, then sequence.recover (recovered_by).
    sim.fault_next("HOME")
    held = _submitted(r := lab.call("POST", "/sequences", "alice",
                                    body={"name": "held", "steps": [HOME, PICK]}))
    expect(r, "sequence.submit", "alice", "operator", held, None, "pending")
    _wait_seq(lab, held, "held")
    fixit = _submitted(r := lab.call("POST", f"/sequences/{held}/fixit", "bob", body=HOME))
    expect(r, "sequence.fixit", "bob", "operator", fixit, None, "pending")
    assert _wait_task(lab, fixit, "completed")["submitted_by"] == "bob"
    r = lab.call("POST", f"/sequences/{held}/recover", "bob",
                 body={"action": "retry", "reason": NEW_RACK})
    assert r.status_code == 200, r.text
    expect(r, "sequence.recover", "bob", "operator", held, "held", ANY, NEW_RACK)
    doc = _wait_seq(lab, held, "completed")
    assert (doc["submitted_by"], doc["recovered_by"]) == ("alice", "bob")

    # sequence.cancel of a pending sequence (the queue paused meanwhile).
    r = lab.call("POST", "/queue/pause", "bob")
    expect(r, "queue.pause", "bob", "operator", "queue", "running", "paused")
    waiting = _submitted(r := lab.call("POST", "/sequences", "bob",
                                       body={"steps": [HOME, PICK]}))
    expect(r, "sequence.submit", "bob", "operator", waiting, None, "pending")
    r = lab.call("POST", f"/sequences/{waiting}/cancel", "admin", headers=zh)
    assert r.status_code == 200, r.text
    expect(r, "sequence.cancel", "admin", "admin", waiting, "pending", "cancelled", WRONG_RACK)
    doc = lab.doc(f"/sequences/{waiting}")
    assert (doc["status"], doc["submitted_by"], doc["cancelled_by"]) == (
        "cancelled", "bob", "admin")
    summary = [s for s in lab.doc("/sequences")["sequences"] if s["sequence_id"] == waiting]
    assert summary and summary[0]["cancelled_by"] == "admin"

    # Refusals: one auth.refused row each.
    r = lab.call("POST", "/", None, body=SCAN)
    assert r.status_code == 401
    expect(r, "auth.refused", "unknown", ANY, "POST /", None, None, status=401)
    r = lab.call("POST", "/queue/resume", "vera")
    assert r.status_code == 403
    expect(r, "auth.refused", "vera", "viewer", "POST /queue/resume", None, None, "queue", 403)
    theirs = _submitted(r := lab.call("POST", "/", "bob", body=SCAN))
    expect(r, "task.submit", "bob", "operator", theirs, None, "pending")
    r = lab.call("POST", f"/task/{theirs}/cancel", "alice")
    assert r.status_code == 403 and r.json()["permission"] == "others", r.text
    expect(r, "auth.refused", "alice", "operator", f"POST /task/{theirs}/cancel", None, None,
           "others", 403)
    assert lab.doc(f"/task/{theirs}")["status"] == "pending"

    # Reads, dry runs and an idempotent replay: no row.
    for path in ("/tasks", f"/task/{theirs}", "/queue/status", "/sequences",
                 f"/sequences/{held}", "/robot", "/me", "/admin/users", "/audit/verify",
                 "/audit.csv", "/commands", "/metrics", "/openapi.json", "/health"):
        assert lab.call("GET", path, "alice" if "audit" not in path and "admin" not in path
                        else "admin").status_code == 200, path
    assert lab.call("POST", "/", "alice", body=SCAN, query={"dry_run": "true"}).status_code == 200
    assert lab.call("POST", "/validate", "alice", body=SCAN).status_code == 200
    assert lab.call("POST", "/sequences", "alice", body={"steps": [HOME]},
                    query={"dry_run": "true"}).status_code == 200
    lab.expect_none("reads and dry runs")
    key = {"Idempotency-Key": "audit-once"}
    once = _submitted(r := lab.call("POST", "/", "alice", body=SCAN, headers=key))
    expect(r, "task.submit", "alice", "operator", once, None, "pending")
    r = lab.call("POST", "/", "alice", body=SCAN, headers=key)
    assert r.headers.get("Idempotent-Replayed") == "true" and r.json()["task_id"] == once
    seq_key = {"Idempotency-Key": "audit-seq-once"}
    seq_once = _submitted(r := lab.call("POST", "/sequences", "alice", body={"steps": [HOME]},
                                        headers=seq_key))
    expect(r, "sequence.submit", "alice", "operator", seq_once, None, "pending")
    r = lab.call("POST", "/sequences", "alice", body={"steps": [HOME]}, headers=seq_key)
    assert r.headers.get("Idempotent-Replayed") == "true", r.text
    lab.expect_none("idempotent replays")
    r = lab.call("POST", "/queue/resume", "alice")
    expect(r, "queue.resume", "alice", "operator", "queue", "paused", "running")

    # user.token (the old token stops working) and user.revoke.
    old = lab.tokens["bob"]
    r = lab.call("POST", "/admin/users/bob/token", "admin")
    assert r.status_code == 200 and r.json()["token"] != old, r.text
    expect(r, "user.token", "admin", "admin", "bob", "operator", "operator")
    lab.tokens["bob"] = r.json()["token"]
    r = lab.call("GET", "/me", old)
    assert r.status_code == 401
    expect(r, "auth.refused", "unknown", ANY, "GET /me", None, None, status=401)
    assert lab.call("GET", "/me", "bob").json()["name"] == "bob"
    r = lab.call("DELETE", "/admin/users/vera", "admin", body={"reason": NEW_RACK})
    assert r.status_code == 200, r.text
    expect(r, "user.revoke", "admin", "admin", "vera", "viewer", "revoked", NEW_RACK)
    r = lab.call("POST", "/robot/stop", "vera")
    assert r.status_code == 401
    expect(r, "auth.refused", "unknown", ANY, "POST /robot/stop", None, None, status=401)

    # Nothing more than what was checked, and the chain holds.
    _wait_task(lab, once, "completed")
    _wait_seq(lab, seq_once, "completed")
    rows = list(reversed(lab.audit()))
    assert [e["seq"] for e in rows] == list(range(1, len(rows) + 1))
    assert rows == lab.checked
    r = lab.call("GET", "/audit/verify", "admin")
    assert r.json() == {"ok": True, "rows": len(rows)}, r.text


# -- reading the trail -----------------------------------------------------------------------------
def _rows_of_the_lab(lab: Lab) -> list[dict[str, Any]]:
    """A few rows of known principals, whatever ran before."""
    if "alice" not in lab.tokens:
        lab.tokens["alice"] = add_principal(lab.url, "alice", "operator", ADMIN_TOKEN)
    for _ in range(3):
        r = lab.call("POST", "/", "alice", body=SCAN, headers={"X-Reason": quote(WRONG_RACK)})
        _submitted(r)
    assert lab.call("POST", "/queue/pause", "alice",
                    body={"reason": NEW_RACK}).status_code == 200
    assert lab.call("POST", "/queue/resume", "admin").status_code == 200
    return lab.audit()


def test_filters_and_paging(lab: Lab) -> None:
    every = _rows_of_the_lab(lab)
    assert [e["seq"] for e in every] == sorted((e["seq"] for e in every), reverse=True)
    for key, value in (("principal", "alice"), ("action", "task.submit"),
                       ("action", "queue.resume"), ("target", every[-1]["target"]),
                       ("principal", "nobody")):
        got = lab.audit(**{key: value})
        assert got == [e for e in every if e[key] == value], (key, value)
    assert lab.audit(principal="alice", action="queue.pause")[0]["reason"] == NEW_RACK
    middle = every[len(every) // 2]
    since = lab.audit(since=middle["time"])
    assert since == [e for e in every if e["time"] >= middle["time"]] and middle in since
    day = middle["time"][:10]  # a date: from its start
    assert lab.audit(since=day) == [e for e in every if e["time"] >= day]
    assert lab.audit(since="2999-01-01") == []
    r = lab.call("GET", "/audit", "admin", query={"since": "yesterday"})
    assert r.status_code == 400, r.text

    pages, cursor = [], None
    while True:
        query = {"limit": "4"} if cursor is None else {"limit": "4", "cursor": cursor}
        r = lab.call("GET", "/audit", "admin", query=query)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["entries"]) <= 4
        pages.append(body["entries"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert cursor == str(body["entries"][-1]["seq"])
    assert [e for page in pages for e in page] == every
    assert len(pages) >= (len(every) + 3) // 4
    for bad in ({"limit": "0"}, {"limit": "1001"}, {"cursor": "x"}):
        assert lab.call("GET", "/audit", "admin", query=bad).status_code == 400, bad
    assert lab.call("GET", "/audit/verify", "admin").json() == {"ok": True, "rows": len(every)}


def test_csv_export_has_a_bom_and_the_same_rows(lab: Lab) -> None:
    every = _rows_of_the_lab(lab)
    r = lab.call("GET", "/audit.csv", "admin")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert r.headers["Content-Disposition"] == 'attachment; filename="audit.csv"'
    assert r.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"), newline="")))
    header = [*FIELDS, "hash"]
    assert rows[0] == header
    as_text = [["" if e[k] is None else str(e[k]) for k in header] for e in every]
    assert rows[1:] == as_text
    reasons = {row[header.index("reason")] for row in rows[1:]}
    assert {WRONG_RACK, NEW_RACK} <= reasons
    r = lab.call("GET", "/audit.csv", "admin", query={"action": "queue.pause"})
    filtered = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"), newline="")))
    assert filtered[1:] == [row for row in as_text if row[header.index("action")] ==
                            "queue.pause"]


def test_rows_outlive_a_prune_of_their_tasks(lab: Lab) -> None:
    assert lab.server.store is not None
    before = _rows_of_the_lab(lab)
    finished = [e["target"] for e in before if e["action"] == "task.submit"]
    for task_id in finished:
        _wait_task(lab, task_id, "completed", "failed", "cancelled")
    # Two days from now, keeping one: every finished task goes.
    ahead = 2 * DAY
    pruner = Pruner(lab.server.store, 1.0, wall=lambda: time.time() + ahead,
                    mono=lambda: time.monotonic() + ahead)
    assert pruner.run_once() >= len(set(finished))
    assert all(lab.server.store.get(task_id) is None for task_id in finished)
    assert lab.audit() == before
    assert lab.call("GET", "/audit/verify", "admin").json() == {"ok": True, "rows": len(before)}
