"""The operator's controls on sequences (docs/sequences.md) end to end: cancel, pause at a
step boundary, emergency stop, the CONFIRM gate, fix-it commands while held, and the
`sequence` events on /events; asserted over HTTP and on the simulated robot's side."""

from __future__ import annotations

from typing import Any

from tests.conftest import Client, wait_until
from tests.sse import SSEReader

HOME = {"cmd_type": "HOME"}
# A single task the robot can be told apart by: it must wait for the sequence.
SINGLE = {"cmd_type": "MOVE_TO", "params": {"x": 7, "y": 8, "z": 9}}
GATE_TEXT = "Load rack B, then confirm"


def slow_scan(n: int = 40) -> dict[str, Any]:
    """A scan of ``n`` bottles: 0.1 s each at the fixture's sim speed of 200."""
    positions = [p for p in range(1, 97) if p % 10][:n]
    return {"cmd_type": "SCAN_QRCODE", "params": {"rack": "S", "positions": positions}}


def submit(client: Client, body: dict[str, Any]) -> tuple[str, list[str]]:
    r = client.post("/sequences", body)
    assert r.status_code == 202, r.text
    return r.json()["sequence_id"], r.json()["task_ids"]


def seq(client: Client, sid: str) -> dict[str, Any]:
    r = client.get(f"/sequences/{sid}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_seq(client: Client, sid: str, status: str, timeout: float = 15.0,
             **fields: Any) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        d = seq(client, sid)
        ok = d["status"] == status and all(d.get(k) == v for k, v in fields.items())
        return d if ok else None
    return wait_until(check, timeout, 0.02, f"sequence {sid} {status} {fields}")


def scanning(client: Client, task_id: str) -> None:
    """The step's scan has started on the robot (a bottle read)."""
    wait_until(lambda: (client.task(task_id).get("progress") or {}).get("done", 0) >= 1, 15,
               0.02, f"{task_id} scanning")


def still_pending(client: Client, task_id: str) -> bool:
    """A long-poll of 0.3 s sees the task still pending (nothing started it)."""
    return client.get(f"/task/{task_id}", params={"wait": 0.3}).json()["status"] == "pending"


def sent(server: Any, cmd: str, since: int = 0) -> list[dict[str, Any]]:
    return [c for c in server.simulator.commands()[since:] if c.get("cmd") == cmd]


def statuses(doc: dict[str, Any]) -> list[str]:
    return [s["status"] for s in doc["steps"]]


def body_doc(r: Any) -> dict[str, Any]:
    """A reply's sequence document (recover/confirm/cancel wrap it in ``sequence``)."""
    body = r.json()
    return body.get("sequence", body)


# -- cancel --------------------------------------------------------------------------------
def test_cancel_pending_sequence_sends_nothing_and_ended_is_409(server, client: Client) -> None:
    mark = len(server.simulator.commands())
    blocker = client.submit(slow_scan())
    sid, task_ids = submit(client, {"steps": [HOME, {"cmd_type": "PICK",
                                                     "params": {"position": 5}}]})
    assert seq(client, sid)["status"] == "pending"
    r = client.post(f"/sequences/{sid}/cancel")
    assert r.status_code == 200, r.text
    assert body_doc(r)["status"] == "cancelled"
    doc = seq(client, sid)
    assert doc["status"] == "cancelled" and statuses(doc) == ["cancelled", "cancelled"]
    assert doc["end_time"] and doc["current_step"] is None
    assert all(client.task(t)["status"] == "cancelled" for t in task_ids)
    assert client.post(f"/sequences/{sid}/cancel").status_code == 409
    client.post(f"/task/{blocker}/cancel")
    client.wait_final(blocker)
    after = client.submit({"cmd_type": "PING"})
    assert client.wait_final(after)["status"] == "completed"
    assert not sent(server, "HOME", mark) and not sent(server, "PICK", mark)


def test_cancel_running_sequence_stops_the_step_and_the_queue_goes_on(
        server, client: Client) -> None:
    sid, task_ids = submit(client, {"steps": [HOME, slow_scan(), HOME]})
    single = client.submit(SINGLE)
    scanning(client, task_ids[1])
    mark = len(server.simulator.commands())
    r = client.post(f"/sequences/{sid}/cancel")
    assert r.status_code in (200, 202), r.text
    assert server.simulator.wait_for_command(lambda c: c.get("cmd") == "STOP", 5)
    doc = wait_seq(client, sid, "cancelled")
    assert statuses(doc) == ["completed", "cancelled", "cancelled"]
    assert doc["steps"][1]["result"]["success"] is False
    assert client.wait_final(single)["status"] == "completed"
    assert len(sent(server, "HOME", mark)) == 0  # step 3 never reached the robot
    assert len(sent(server, "MOVE_TO", mark)) == 1
    assert client.status()["paused"] is False
    r = client.post(f"/sequences/{sid}/cancel")
    assert r.status_code == 409 and r.json()["success"] is False


# -- pause at a step boundary --------------------------------------------------------------
def test_pause_takes_effect_at_the_step_boundary(server, client: Client) -> None:
    sid, task_ids = submit(client, {"steps": [slow_scan(12), HOME, HOME]})
    scanning(client, task_ids[0])
    assert client.post("/queue/pause").status_code == 200
    single = client.submit(SINGLE)
    assert client.wait_final(task_ids[0])["status"] == "completed"
    assert still_pending(client, task_ids[1]) and still_pending(client, single)
    doc = seq(client, sid)
    assert doc["status"] == "running" and doc["current_step"] == 2
    assert statuses(doc) == ["completed", "pending", "pending"]
    active = client.status()["active_sequence"]
    assert active and active["sequence_id"] == sid
    r = client.post(f"/sequences/{sid}/confirm")
    assert r.status_code == 409 and r.json()["code"] == "not_waiting_confirm"
    assert not sent(server, "HOME") and not sent(server, "MOVE_TO")
    assert client.post("/queue/resume").status_code == 200
    doc = wait_seq(client, sid, "completed")
    assert statuses(doc) == ["completed"] * 3
    assert client.wait_final(single)["status"] == "completed"
    order = [c["cmd"] for c in server.simulator.commands() if c.get("cmd") in
             ("HOME", "MOVE_TO")]
    assert order == ["HOME", "HOME", "MOVE_TO"]
    assert client.status()["active_sequence"] is None


# -- emergency stop ------------------------------------------------------------------------
def test_emergency_stop_holds_the_sequence_and_retry_completes_it(
        server, client: Client) -> None:
    sid, task_ids = submit(client, {"steps": [HOME, slow_scan(), HOME]})
    single = client.submit(SINGLE)
    scanning(client, task_ids[1])
    r = client.post("/robot/stop")
    assert r.status_code == 200 and r.json()["stop_sent"] is True, r.text
    assert server.simulator.wait_for_command(lambda c: c.get("cmd") == "STOP", 5)
    doc = wait_seq(client, sid, "held", hold_code="emergency_stop")
    assert doc["hold_reason"] and doc["current_step"] == 2
    assert statuses(doc) == ["completed", "cancelled", "pending"]
    assert client.task(task_ids[1])["status"] == "cancelled"
    assert client.status()["paused"] is True
    assert still_pending(client, single)
    server.simulator.speed = 4000.0  # the retried scan need not be slow
    r = client.post(f"/sequences/{sid}/recover", {"action": "retry"})
    assert r.status_code == 200, r.text
    assert body_doc(r)["sequence_id"] == sid and body_doc(r)["status"] != "held"
    doc = wait_seq(client, sid, "completed")
    step = doc["steps"][1]
    assert step["attempts"] == 2 and len(step["task_ids"]) == 2
    assert step["task_ids"][0] == task_ids[1] and step["task_id"] == step["task_ids"][1]
    assert step["status"] == "completed" and statuses(doc) == ["completed"] * 3
    assert client.wait_final(single)["status"] == "completed"
    assert client.status()["paused"] is False


# -- CONFIRM -------------------------------------------------------------------------------
def test_confirm_gate_waits_and_holds_the_robot(server, client: Client) -> None:
    sid, task_ids = submit(client, {"steps": [
        HOME, {"cmd_type": "CONFIRM", "params": {"message": GATE_TEXT}}, HOME]})
    doc = wait_until(lambda: (d := seq(client, sid))["confirm"] and d, 10, 0.02, "confirm")
    assert doc["status"] == "running" and doc["current_step"] == 2
    assert doc["confirm"]["step"] == 2 and doc["confirm"]["message"] == GATE_TEXT
    assert doc["confirm"]["deadline"] is None
    assert client.task(task_ids[1])["status"] == "running"
    single = client.submit(SINGLE)
    assert still_pending(client, single) and still_pending(client, task_ids[2])
    assert len(sent(server, "HOME")) == 1 and not sent(server, "MOVE_TO")
    # Not held: no fix-it, no recover.
    r = client.post(f"/sequences/{sid}/fixit", HOME)
    assert r.status_code == 409 and r.json()["code"] == "sequence_not_held"
    r = client.post(f"/sequences/{sid}/recover", {"action": "skip"})
    assert r.status_code == 409 and r.json()["code"] == "sequence_not_held"
    r = client.post(f"/sequences/{sid}/confirm")
    assert r.status_code == 200, r.text
    assert body_doc(r)["sequence_id"] == sid
    doc = wait_seq(client, sid, "completed")
    assert statuses(doc) == ["completed"] * 3 and doc["confirm"] is None
    assert client.wait_final(single)["status"] == "completed"
    assert len(sent(server, "HOME")) == 2
    r = client.post(f"/sequences/{sid}/confirm")
    assert r.status_code == 409 and r.json()["success"] is False


def test_confirm_timeout_fails_the_step_by_its_rule(server, client: Client) -> None:
    gate = {"cmd_type": "CONFIRM", "params": {"message": GATE_TEXT, "timeout_s": 1}}
    aborting, abort_ids = submit(client, {"on_error": "abort", "steps": [gate, HOME]})
    holding, hold_ids = submit(client, {"steps": [gate, HOME]})
    doc = wait_until(lambda: (d := seq(client, aborting))["confirm"] and d, 10, 0.02,
                     "confirm")
    assert doc["confirm"]["deadline"]
    doc = wait_seq(client, aborting, "failed")
    assert statuses(doc) == ["failed", "cancelled"] and doc["failed_steps"] == [1]
    assert doc["steps"][0]["result"]["code"] == "confirm_timeout"
    assert client.task(abort_ids[0])["result"]["code"] == "confirm_timeout"
    doc = wait_seq(client, holding, "held", hold_code="step_failed")
    assert doc["current_step"] == 1 and statuses(doc) == ["failed", "pending"]
    assert doc["steps"][0]["result"]["code"] == "confirm_timeout"
    status = client.status()
    assert status["paused"] is True and status["pause_code"] == "sequence_held"
    assert not sent(server, "HOME")  # neither sequence went past its gate
    r = client.post(f"/sequences/{holding}/recover", {"action": "abort"})
    assert r.status_code == 200, r.text
    assert wait_seq(client, holding, "failed")["steps"][1]["status"] == "cancelled"
    assert client.task(hold_ids[1])["status"] == "cancelled"


# -- fix-it while held --------------------------------------------------------------------
def held_sequence(server: Any, client: Client) -> tuple[str, list[str]]:
    """A sequence [HOME, PICK] held at step 1: its HOME failed (the robot's error)."""
    server.simulator.set_fault("fail")
    sid, task_ids = submit(client, {"steps": [HOME, {"cmd_type": "PICK",
                                                     "params": {"position": 3}}]})
    doc = wait_seq(client, sid, "held", hold_code="step_failed")
    server.simulator.set_fault(None)
    assert statuses(doc) == ["failed", "pending"] and doc["current_step"] == 1
    return sid, task_ids


def fixit_home(client: Client, sid: str) -> str:
    r = client.post(f"/sequences/{sid}/fixit", HOME)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["code"] == "fixit_queued" and body["sequence_id"] == sid
    return body["task_id"]


def test_fixit_runs_at_once_while_the_sequence_stays_held(server, client: Client) -> None:
    sid, task_ids = held_sequence(server, client)
    single = client.submit(SINGLE)
    r = client.post(f"/sequences/{sid}/confirm")
    assert r.status_code == 409 and r.json()["code"] == "not_waiting_confirm"
    mark = len(server.simulator.commands())
    fix = fixit_home(client, sid)
    task = client.wait_final(fix, 10)
    assert task["status"] == "completed"
    assert task["sequence_id"] == sid and task["fixit"] is True
    assert len(sent(server, "HOME", mark)) == 1
    doc = seq(client, sid)
    assert doc["status"] == "held" and doc["hold_code"] == "step_failed"
    assert [(f["task_id"], f["cmd_type"], f["status"]) for f in doc["fixits"]] == \
        [(fix, "HOME", "completed")]
    assert still_pending(client, single) and still_pending(client, task_ids[1])
    assert not sent(server, "PICK") and not sent(server, "MOVE_TO")
    listed = client.get("/tasks", params={"sequence_id": sid}).json()["tasks"]
    assert fix in {t["task_id"] for t in listed}
    r = client.post(f"/sequences/{sid}/recover", {"action": "skip"})
    assert r.status_code == 200, r.text
    doc = wait_seq(client, sid, "completed")
    assert statuses(doc) == ["skipped", "completed"] and len(sent(server, "PICK")) == 1
    assert client.wait_final(single)["status"] == "completed"
    r = client.post(f"/sequences/{sid}/fixit", HOME)
    assert r.status_code == 409 and r.json()["success"] is False


def test_fixit_at_step_is_the_step_held_at(server, client: Client) -> None:
    sid, _ = held_sequence(server, client)
    fix = fixit_home(client, sid)
    assert client.wait_final(fix, 10)["status"] == "completed"
    assert [f["at_step"] for f in seq(client, sid)["fixits"]] == [1]


# -- SSE -----------------------------------------------------------------------------------
def test_events_carry_every_change_of_a_sequence(server, client: Client) -> None:
    reader = SSEReader(server.url)
    try:
        gate = {"cmd_type": "CONFIRM", "params": {"message": GATE_TEXT, "timeout_s": 1}}
        sid, _ = submit(client, {"name": "sse", "steps": [HOME, gate]})
        seen: list[dict[str, Any]] = []

        def ours(event: dict[str, Any]) -> bool:
            data = event["data"]
            if event.get("event") != "sequence" or data.get("sequence_id") != sid:
                return False
            seen.append(data)
            if data["status"] == "held":
                client.post(f"/sequences/{sid}/recover", {"action": "skip"})
            return data["status"] in ("completed", "failed", "cancelled")

        last = reader.wait_for(ours, 15)["data"]
    finally:
        reader.close()
    assert last["status"] == "completed" and last["end_time"] and last["name"] == "sse"
    states = [(d["status"], d["current_step"]) for d in seen]
    assert states[0] == ("pending", 1)
    assert ("running", 1) in states and ("running", 2) in states
    assert ("held", 2) in states
    assert any(d["confirm"] and d["confirm"]["message"] == GATE_TEXT for d in seen)
    held = next(d for d in seen if d["status"] == "held")
    assert held["hold_code"] == "step_failed" and held["hold_reason"]
    assert "steps" not in last and "fixits" not in last
