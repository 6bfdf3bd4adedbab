"""Sequences end to end (docs/sequences.md), how they run: a real server, the simulator
robot on a real pty. A sequence holds the robot between its steps; each step's
``on_error`` and ``retry``; the operator's recover. The API's rules (validation,
Idempotency-Key, steps as tasks, lists) are in tests/test_sequences_rules.py.

One step fails alone through the simulator's ``fault_next(cmd, mode, times)``: the steps
use different commands, and only the next runs of the named one answer ERR (or ALARM).
"""

from __future__ import annotations

import threading
from typing import Any

from robot.sim.engine import MOTION
from server.runtime import RobotServer
from tests.conftest import Client, wait_until

HOME = {"cmd_type": "HOME"}
PICK = {"cmd_type": "PICK", "params": {"position": 3}}
PLACE = {"cmd_type": "PLACE", "params": {"position": 4}}


def move(x: float) -> dict[str, Any]:
    return {"cmd_type": "MOVE_TO", "params": {"x": x, "y": 0.0, "z": 0.0}}


def submit(client: Client, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    r = client.post("/sequences", body, **kw)
    assert r.status_code == 202, r.text
    assert r.json()["sequence_id"].startswith("seq_")
    return r.json()


def sequence(client: Client, sequence_id: str) -> dict[str, Any]:
    r = client.get(f"/sequences/{sequence_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_seq(client: Client, sequence_id: str, *statuses: str,
             timeout: float = 15.0) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        doc = sequence(client, sequence_id)
        return doc if doc["status"] in statuses else None
    return wait_until(reached, timeout, 0.02, f"sequence {sequence_id} {statuses}")


def recover(client: Client, sequence_id: str, action: str) -> dict[str, Any]:
    """POST recover; the sequence document it answers (wrapped in ``sequence`` or not)."""
    r = client.post(f"/sequences/{sequence_id}/recover", {"action": action})
    assert r.status_code == 200, r.text
    body = r.json()
    return body.get("sequence", body)


def motions(server: RobotServer) -> list[str]:
    """The motion commands the robot received, in order (not the link's PING/STATUS)."""
    assert server.simulator is not None
    return [c["cmd"] for c in server.simulator.commands() if c.get("cmd") in MOTION]


def statuses(doc: dict[str, Any]) -> list[str]:
    return [s["status"] for s in doc["steps"]]


def stays_pending(client: Client, task_id: str, seconds: float = 0.5) -> bool:
    """The task is still pending after ``seconds`` (the server's own long poll waits)."""
    r = client.get(f"/task/{task_id}", params={"wait": seconds})
    return r.json()["status"] == "pending"


# -- 1. the sequence holds the robot --------------------------------------------------------------
def test_no_single_task_runs_between_the_steps_of_a_sequence(make_server) -> None:
    server = make_server(sim_speed=20.0)  # a MOVE_TO takes 0.1 s: time enough to cut in
    client, sim = Client(server), server.simulator
    assert sim is not None
    steps_x = (1.0, 2.0, 3.0)
    singles: list[tuple[float, int]] = []  # (x, sequence steps the robot had at submit)
    stop = threading.Event()

    def steps_seen() -> int:
        return sum(1 for c in sim.commands()
                   if c.get("cmd") == "MOVE_TO" and c["params"].get("x") in steps_x)

    def keep_submitting() -> None:  # another client, the whole time
        other = Client(server)
        while not stop.is_set() and len(singles) < 40:
            x, seen = 100.0 + len(singles), steps_seen()
            other.submit(move(x))
            singles.append((x, seen))
            stop.wait(0.03)  # pacing the load, not synchronisation

    thread = threading.Thread(target=keep_submitting, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(singles) >= 2, 5, message="single tasks ahead")
        sid = submit(client, {"steps": [move(x) for x in steps_x]})["sequence_id"]
        assert wait_seq(client, sid, *("completed", "failed"))["status"] == "completed"
    finally:
        stop.set()
        thread.join(10)
    wait_until(lambda: client.status()["queue_size"] == 0, 20, message="queue drained")

    order = [c["params"]["x"] for c in sim.commands() if c.get("cmd") == "MOVE_TO"]
    first = order.index(1.0)
    assert order[first:first + 3] == [1.0, 2.0, 3.0], order  # back to back
    assert sorted(order) == sorted([*steps_x, *(x for x, _ in singles)])  # each ran once
    mid_run = [x for x, seen in singles if seen in (1, 2)]
    assert mid_run, f"no single was submitted while the steps ran: {singles}"
    assert all(order.index(x) > first + 2 for x, seen in singles if seen >= 1)
    assert order[:first], "the sequence waited for the tasks queued before it"
    steps = client.get("/tasks", params={"sequence_id": sid}).json()["tasks"]
    assert sorted(t["step"] for t in steps) == [1, 2, 3]


# -- 2. on_error ---------------------------------------------------------------------------------
def test_hold_pauses_the_queue_nothing_runs_until_recover_abort(server, client) -> None:
    server.simulator.fault_next("PICK")
    sid = submit(client, {"name": "hold", "steps": [HOME, PICK, PLACE]})["sequence_id"]
    held = wait_seq(client, sid, "held", "completed", "failed")
    assert held["status"] == "held" and held["hold_code"] == "step_failed", held
    assert held["hold_reason"] and held["current_step"] == 2
    assert statuses(held) == ["completed", "failed", "pending"]
    status = client.status()
    assert status["paused"] is True and status["pause_code"] == "sequence_held"
    assert status["active_sequence"] == {"sequence_id": sid, "status": "held",
                                         "current_step": 2}
    single = client.submit(move(7.0))
    assert stays_pending(client, single), "a task ran while the sequence was held"
    assert motions(server) == ["HOME", "PICK"]

    done = recover(client, sid, "abort")
    assert done["status"] == "failed", done
    assert statuses(sequence(client, sid)) == ["completed", "failed", "cancelled"]
    assert client.wait_final(single)["status"] == "completed"  # the queue goes on
    assert motions(server) == ["HOME", "PICK", "MOVE_TO"]  # never the PLACE
    status = client.status()
    assert status["paused"] is False and status["active_sequence"] is None


def test_abort_cancels_the_remaining_steps_and_the_queue_goes_on(server, client) -> None:
    server.simulator.fault_next("PICK")
    sid = submit(client, {"on_error": "abort", "steps": [HOME, PICK, PLACE, move(5.0)]}
                 )["sequence_id"]
    after = client.submit(move(9.0))  # queued behind the sequence
    assert client.wait_final(after)["status"] == "completed"
    doc = wait_seq(client, sid, "failed", "completed", "held")
    assert doc["status"] == "failed" and doc["hold_code"] is None
    assert statuses(doc) == ["completed", "failed", "cancelled", "cancelled"]
    assert motions(server) == ["HOME", "PICK", "MOVE_TO"]
    assert client.status()["paused"] is False
    for step in doc["steps"][2:]:
        task = client.task(step["task_id"])
        assert task["status"] == "cancelled" and task["start_time"] is None
        assert "step 2" in task["result"]["message"], task["result"]  # "step k failed"


def test_continue_runs_the_next_step_and_ends_failed(server, client) -> None:
    server.simulator.fault_next("PICK")
    sid = submit(client, {"on_error": "continue", "steps": [PICK, PLACE, HOME]})["sequence_id"]
    doc = wait_seq(client, sid, "failed", "completed", "held")
    assert doc["status"] == "failed" and doc["failed_steps"] == [1], doc
    assert statuses(doc) == ["failed", "completed", "completed"]
    assert doc["progress"]["steps_done"] == 3
    assert motions(server) == ["PICK", "PLACE", "HOME"]


def test_a_steps_on_error_overrides_the_sequences(server, client) -> None:
    server.simulator.fault_next("PICK")
    server.simulator.fault_next("PLACE")
    body = {"on_error": "abort", "steps": [{**PICK, "on_error": "continue"},
                                           {**PLACE, "on_error": "hold"}, HOME]}
    sid = submit(client, body)["sequence_id"]
    held = wait_seq(client, sid, "held", "failed", "completed")
    assert held["status"] == "held" and held["current_step"] == 2, held  # not aborted
    assert statuses(held) == ["failed", "failed", "pending"]
    assert held["failed_steps"] == [1]
    # Skip: the step is skipped, the next runs; step 1's failure still fails the sequence.
    assert recover(client, sid, "skip")["sequence_id"] == sid
    doc = wait_seq(client, sid, "failed", "completed")
    assert statuses(doc) == ["failed", "skipped", "completed"]
    assert doc["status"] == "failed" and doc["failed_steps"] == [1]
    assert motions(server) == ["PICK", "PLACE", "HOME"]


# -- 3. retry --------------------------------------------------------------------------------------
def test_retry_reruns_a_robot_error_then_the_rule_applies(server, client) -> None:
    server.simulator.fault_next("PICK", times=3)
    body = {"steps": [{**PICK, "retry": 2, "on_error": "abort"}, HOME]}
    sid = submit(client, body)["sequence_id"]
    doc = wait_seq(client, sid, "failed", "completed", "held")
    assert doc["status"] == "failed", doc
    step = doc["steps"][0]
    assert step["attempts"] == 3 and len(set(step["task_ids"])) == 3
    assert step["task_id"] == step["task_ids"][-1] and step["status"] == "failed"
    assert all(client.task(t)["status"] == "failed" for t in step["task_ids"])
    assert all(client.task(t)["step"] == 1 for t in step["task_ids"])
    assert statuses(doc) == ["failed", "cancelled"]
    assert motions(server) == ["PICK", "PICK", "PICK"]


def test_retry_that_succeeds_on_attempt_two_completes(server, client) -> None:
    server.simulator.fault_next("PICK", times=1)
    sid = submit(client, {"steps": [HOME, {**PICK, "retry": 3}, PLACE]})["sequence_id"]
    doc = wait_seq(client, sid, "completed", "failed", "held")
    assert doc["status"] == "completed", doc
    step = doc["steps"][1]
    assert step["attempts"] == 2 and len(step["task_ids"]) == 2
    first, second = (client.task(t) for t in step["task_ids"])
    assert (first["status"], second["status"]) == ("failed", "completed")
    assert doc["failed_steps"] == []
    assert motions(server) == ["HOME", "PICK", "PICK", "PLACE"]


def test_retry_never_applies_to_an_alarm(server, client) -> None:
    server.simulator.fault_next("HOME", "alarm")
    body = {"on_error": "continue", "steps": [{**HOME, "retry": 3}, PLACE]}
    sid = submit(client, body)["sequence_id"]
    held = wait_seq(client, sid, "held", "failed", "completed")
    assert held["status"] == "held" and held["hold_code"] == "robot_fault", held
    assert held["steps"][0]["attempts"] == 1 and len(held["steps"][0]["task_ids"]) == 1
    assert statuses(held) == ["failed", "pending"]
    assert client.status()["paused"] is True
    assert motions(server) == ["HOME"]


# -- 4. hold, then recover ----------------------------------------------------------------------
def test_recover_retry_lifts_the_pause_and_completes(server, client) -> None:
    server.simulator.fault_next("HOME")
    sid = submit(client, {"steps": [HOME, PICK]})["sequence_id"]
    assert wait_seq(client, sid, "held", "completed")["status"] == "held"
    r = client.post(f"/sequences/{sid}/recover", {"action": "again"})
    assert r.status_code == 400 and r.json()["code"] == "recover_action_invalid"
    r = client.post(f"/sequences/{sid}/recover", {})
    assert r.status_code == 400 and r.json()["code"] == "recover_action_invalid"
    assert client.status()["pause_code"] == "sequence_held"

    recover(client, sid, "retry")
    doc = wait_seq(client, sid, "completed", "failed", "held")
    assert doc["status"] == "completed", doc
    assert doc["steps"][0]["attempts"] == 2 and len(doc["steps"][0]["task_ids"]) == 2
    assert statuses(doc) == ["completed", "completed"]
    status = client.status()
    assert status["paused"] is False and status["active_sequence"] is None
    assert motions(server) == ["HOME", "HOME", "PICK"]


def test_recover_skip_goes_on_and_completes(server, client) -> None:
    server.simulator.fault_next("PICK")
    sid = submit(client, {"steps": [PICK, PLACE]})["sequence_id"]
    assert wait_seq(client, sid, "held", "completed")["status"] == "held"
    recover(client, sid, "skip")
    doc = wait_seq(client, sid, "completed", "failed", "held")
    assert doc["status"] == "completed" and doc["failed_steps"] == [], doc
    assert statuses(doc) == ["skipped", "completed"]
    assert doc["progress"]["steps_done"] == 2
    assert client.status()["paused"] is False
    assert motions(server) == ["PICK", "PLACE"]


def test_recover_of_a_running_or_pending_sequence_is_409(server, client) -> None:
    gate = {"cmd_type": "CONFIRM", "params": {"message": "wait here"}}
    sid = submit(client, {"steps": [gate, HOME]})["sequence_id"]
    wait_until(lambda: sequence(client, sid)["confirm"], 10, message="CONFIRM waiting")
    behind = submit(client, {"steps": [PICK]})["sequence_id"]
    for target in (sid, behind):  # running (at its CONFIRM), pending
        r = client.post(f"/sequences/{target}/recover", {"action": "skip"})
        assert r.status_code == 409 and r.json()["code"] == "sequence_not_held", r.text
    r = client.post("/sequences/seq_nope/recover", {"action": "skip"})
    assert r.status_code == 404
    assert client.post(f"/sequences/{sid}/confirm").status_code == 200
    assert wait_seq(client, sid, "completed", "failed")["status"] == "completed"
    assert wait_seq(client, behind, "completed", "failed")["status"] == "completed"
    assert motions(server) == ["HOME", "PICK"]


def test_recover_of_an_ended_sequence_is_409_sequence_ended(server, client) -> None:
    sid = submit(client, {"steps": [HOME]})["sequence_id"]
    assert wait_seq(client, sid, "completed", "failed", "held")["status"] == "completed"
    r = client.post(f"/sequences/{sid}/recover", {"action": "retry"})
    assert r.status_code == 409
    assert r.json()["code"] == "sequence_ended", r.text
