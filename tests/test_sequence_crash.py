"""kill -9 during a sequence, restart on the same database (docs/sequences.md, "Crash or
power cut"), with real processes: the server is `main.py serve`, the robot is the
simulator in its own process, so it outlives the server and its --record file counts
what reached the robot on the robot's side."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.proc import ServerProcess, SimulatorProcess

pytestmark = pytest.mark.timeout(120)

# At speed 40: HOME 0.075 s, a scan 0.5 s per bottle, so step 2 runs 2 s: time to see it
# on the robot and kill the server in the middle of it.
SPEED = 40.0
SCAN_A = {"rack": "A", "positions": [1, 2, 3, 4]}
SCAN_C = {"rack": "C", "positions": [1]}
SCAN_S = {"rack": "S", "positions": [1]}
THREE_STEPS = {"name": "crash in step 2", "on_error": "hold",
               "steps": [{"cmd_type": "HOME", "label": "home"},
                         {"cmd_type": "SCAN_QRCODE", "params": SCAN_A, "label": "scan A"},
                         {"cmd_type": "SCAN_QRCODE", "params": SCAN_C, "label": "scan C"}]}
GATE = {"name": "crash at a CONFIRM",
        "steps": [{"cmd_type": "HOME"},
                  {"cmd_type": "CONFIRM", "params": {"message": "Load rack C, then confirm"}},
                  {"cmd_type": "SCAN_QRCODE", "params": SCAN_C}]}


@pytest.fixture
def sim(tmp_path: Any) -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(tmp_path, SPEED)
    yield sim
    sim.stop()


def _start(servers: list[ServerProcess], tmp_path: Any, sim: SimulatorProcess) -> ServerProcess:
    server = ServerProcess(str(tmp_path / "tasks.db"), sim.link, "--robot-timeout", "10")
    servers.append(server)
    server.wait_ready()
    return server


def _sent(sim: SimulatorProcess) -> list[tuple[str, str | None]]:
    """The motion commands the robot received, in order: (cmd, rack). STOP (sent after a
    restart with an interrupted task), PING and GET_STATUS are not counted."""
    return [(c["cmd"], (c.get("params") or {}).get("rack")) for c in sim.received()
            if c.get("cmd") not in ("STOP", "PING", "GET_STATUS")]


def _seq(server: ServerProcess, sequence_id: str) -> dict[str, Any]:
    r = server.get(f"/sequences/{sequence_id}")
    assert r.status_code == 200, r.text
    return r.json()


def _submit(server: ServerProcess, body: dict[str, Any]) -> tuple[str, list[str]]:
    r = server.post("/sequences", body)
    assert r.status_code == 202, r.text
    return r.json()["sequence_id"], r.json()["task_ids"]


def _wait_seq(server: ServerProcess, sequence_id: str, status: str,
              timeout: float = 20.0) -> dict[str, Any]:
    return wait_until(lambda: (d := _seq(server, sequence_id))["status"] == status and d,
                      timeout, 0.02, f"sequence {sequence_id} {status}")


def _assert_held_interrupted(server: ServerProcess, sequence_id: str, at: int) -> dict[str, Any]:
    doc = _seq(server, sequence_id)
    assert doc["status"] == "held", doc
    assert doc["hold_code"] == "interrupted", doc
    assert doc["hold_reason"], doc
    assert doc["current_step"] == at, doc
    step = doc["steps"][at - 1]
    assert step["status"] == "failed", step
    assert step["result"]["code"] == "interrupted", step
    assert step["attempts"] == 1 and len(step["task_ids"]) == 1, step
    status = server.get("/queue/status").json()
    assert status["paused"] is True, status
    active = status["active_sequence"]
    assert active is not None and active["sequence_id"] == sequence_id, status
    assert active["status"] == "held" and active["current_step"] == at, status
    return doc


def _single_task_stays_pending(server: ServerProcess) -> str:
    r = server.post("/", {"cmd_type": "SCAN_QRCODE", "params": SCAN_S})
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    # The server's own bounded wait: the task does not end (nor start) within 1 s.
    doc = server.get(f"/task/{task_id}", params={"wait": 1}).json()
    assert doc["status"] == "pending", doc
    return task_id


def test_kill_during_step_2_of_3_holds_and_retry_resends_only_step_2(
        servers: list[ServerProcess], tmp_path: Any, sim: SimulatorProcess) -> None:
    first = _start(servers, tmp_path, sim)
    sequence_id, task_ids = _submit(first, THREE_STEPS)
    assert len(task_ids) == 3

    def step_2_on_the_robot() -> bool:
        doc = _seq(first, sequence_id)
        return (doc["current_step"] == 2 and doc["steps"][1]["status"] == "running"
                and first.task(task_ids[1])["status"] == "running"
                and ("SCAN_QRCODE", "A") in _sent(sim))

    wait_until(step_2_on_the_robot, 15, 0.01, "step 2 running and on the robot")
    first.kill9()
    before = _sent(sim)
    assert before == [("HOME", None), ("SCAN_QRCODE", "A")], before

    second = _start(servers, tmp_path, sim)
    doc = _assert_held_interrupted(second, sequence_id, 2)
    one, two, three = doc["steps"]
    assert one["status"] == "completed" and one["attempts"] == 1, one
    assert one["task_ids"] == [task_ids[0]] and one["result"]["success"] is True, one
    assert two["task_ids"] == [task_ids[1]], two
    assert three["status"] == "pending" and three["attempts"] == 0, three
    assert second.task(task_ids[1])["status"] == "failed"
    assert second.task(task_ids[2])["status"] == "pending"
    # The robot may still be scanning A: the restart STOPs it before anything else.
    wait_until(lambda: any(c["cmd"] == "STOP" for c in sim.received()), 10, 0.02, "STOP")
    single = _single_task_stays_pending(second)
    # Held: nothing but the STOP of the restart reached the robot.
    assert _sent(sim) == before
    assert _seq(second, sequence_id)["status"] == "held"

    r = second.post(f"/sequences/{sequence_id}/recover", {"action": "retry"})
    assert r.status_code == 200, r.text
    done = _wait_seq(second, sequence_id, "completed", 20)
    one, two, three = done["steps"]
    assert one["status"] == "completed" and one["task_ids"] == [task_ids[0]], one
    assert two["status"] == "completed" and two["attempts"] == 2, two
    assert len(two["task_ids"]) == 2 and two["task_ids"][0] == task_ids[1], two
    assert two["task_id"] == two["task_ids"][1] != task_ids[1], two
    assert second.task(two["task_ids"][1])["status"] == "completed"
    assert second.task(task_ids[1])["status"] == "failed"  # the first attempt stays failed
    assert three["status"] == "completed" and three["attempts"] == 1, three
    assert done["hold_code"] is None and done["failed_steps"] == [], done
    assert done["progress"]["steps_done"] == 3, done

    assert second.wait_final(single)["status"] == "completed"
    sent = _sent(sim)
    assert sent.count(("HOME", None)) == 1, sent  # step 1 was not run again
    assert sent.count(("SCAN_QRCODE", "A")) == 2, sent  # before the crash and the retry
    assert sent.count(("SCAN_QRCODE", "C")) == 1, sent
    cmds = [c["cmd"] for c in sim.received()]
    assert cmds.count("STOP") == 1, cmds
    assert cmds.index("STOP") < len(cmds) - 3, cmds  # before the retry of step 2
    # The single task ran only after the sequence let go of the robot.
    assert sent == [("HOME", None), ("SCAN_QRCODE", "A"), ("SCAN_QRCODE", "A"),
                    ("SCAN_QRCODE", "C"), ("SCAN_QRCODE", "S")], sent
    assert second.get("/queue/status").json()["paused"] is False


def test_kill_at_a_confirm_step_holds_it_and_skip_goes_on(
        servers: list[ServerProcess], tmp_path: Any, sim: SimulatorProcess) -> None:
    first = _start(servers, tmp_path, sim)
    sequence_id, task_ids = _submit(first, GATE)

    def waiting_at_confirm() -> bool:
        doc = _seq(first, sequence_id)
        return (doc["current_step"] == 2 and doc["confirm"] is not None
                and doc["steps"][1]["status"] == "running")

    wait_until(waiting_at_confirm, 15, 0.01, "the CONFIRM step waiting")
    first.kill9()
    before = _sent(sim)
    assert before == [("HOME", None)], before  # a CONFIRM sends nothing to the robot

    second = _start(servers, tmp_path, sim)
    doc = _assert_held_interrupted(second, sequence_id, 2)
    assert doc["confirm"] is None, doc  # nobody is asked to confirm a held sequence
    assert doc["steps"][0]["status"] == "completed", doc
    assert doc["steps"][2]["status"] == "pending", doc
    r = second.post(f"/sequences/{sequence_id}/confirm")
    assert r.status_code == 409 and r.json()["code"] == "not_waiting_confirm", r.text
    assert _sent(sim) == before

    r = second.post(f"/sequences/{sequence_id}/recover", {"action": "skip"})
    assert r.status_code == 200, r.text
    done = _wait_seq(second, sequence_id, "completed", 20)
    assert [s["status"] for s in done["steps"]] == ["completed", "skipped", "completed"], done
    assert done["steps"][1]["attempts"] == 1, done  # skipped, not run again
    assert done["progress"]["steps_done"] == 3, done
    assert second.task(task_ids[2])["status"] == "completed"
    assert _sent(sim) == [("HOME", None), ("SCAN_QRCODE", "C")]
    assert second.get("/queue/status").json()["paused"] is False
