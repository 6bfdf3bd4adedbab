"""No sample mix-up, ever (issue 27): a text-protocol robot out of step with the server
never completes a task with another rack's bottles.

The robots are tests/text_robots.py's, on real ptys, driven through pyserial by the real
server (in-process, or as a subprocess killed with SIGKILL). Bottle codes name their
rack, so a bottle on the wrong task shows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import Client, wait_until
from tests.proc import ServerProcess, scan
from tests.text_robots import FIRMWARE, TextRobot, code, task_codes

OWN3 = [1, 2, 3]


@pytest.fixture
def robots() -> Iterator[list[TextRobot]]:
    made: list[TextRobot] = []
    yield made
    for robot in made:
        robot.stop()


def _robot(robots: list[TextRobot], **kw: object) -> TextRobot:
    robot = TextRobot(**kw).start()  # type: ignore[arg-type]
    robots.append(robot)
    return robot


def _own(rack: str, positions: list[int] = OWN3) -> list[str]:
    return [code(rack, p) for p in positions]


@pytest.mark.parametrize("kind", ["stop_aborts", "ignores_stop", "queues_commands"])
def test_kill9_then_resume_at_once_never_mixes_racks(tmp_path, robots, kind: str) -> None:
    """The soak's cascade: the server dies mid-scan, restarts, the operator resumes at
    once while the robot still streams the old scan. The next six scans each get exactly
    their own bottles, and nothing is sent to the robot while it is busy."""
    robot = _robot(robots, per_bottle=0.12, stop_aborts=kind == "stop_aborts",
                   queue_commands=kind == "queues_commands")
    db = str(tmp_path / "tasks.db")
    flags = ("--robot-protocol", "text", "--robot-settle", "0.4")
    first = ServerProcess(db, robot.path, *flags)
    try:
        first.wait_ready()
        k0 = first.post("/", scan("K0", list(range(1, 11)))).json()["task_id"]
        robot.wait_bottles("K0", 3)
        first.kill9()
    finally:
        first.stop()
    assert robot.busy, "the robot is still scanning K0 when the server comes back"
    second = ServerProcess(db, robot.path, *flags)
    try:
        second.wait_ready()
        assert second.task(k0)["status"] == "failed"  # interrupted, never re-run
        assert second.post("/queue/resume").status_code == 200  # at once
        ids = [second.post("/", scan(f"K{i}")).json()["task_id"] for i in range(1, 7)]
        docs = [second.wait_final(task_id, 60) for task_id in ids]
        for i, doc in enumerate(docs, start=1):
            assert doc["status"] == "completed", doc
            assert task_codes(doc) == _own(f"K{i}"), (i, doc["result"])
        assert robot.sent_while_busy == [], robot.sent_while_busy
        if kind == "stop_aborts":
            assert "STOP" in robot.received, "the interrupted scan was stopped first"
        assert robot.scans().count("SCAN K0 1,2,3,4,5,6,7,8,9,10") == 1, "K0 never re-run"
    finally:
        second.stop()


@pytest.mark.parametrize("line,why", [
    ("OK SCAN 3", "scanned_count 3, but 5"),
    ("OK HOME", "OK HOME does not answer SCAN"),
    ("BOTTLE 9 K9-09", "position 9 was not asked for"),
    ("BOTTLE 1 K1-01", "position 1 reported twice"),
    ("PONG 0000abcd testbot", "PONG does not answer SCAN"),
])
def test_a_stray_line_mid_scan_fails_the_task_out_of_step_and_holds(
        make_server, robots, line: str, why: str) -> None:
    robot = _robot(robots, per_bottle=0.1)
    server = make_server(robot=robot.path, robot_protocol="text")
    client = Client(server)
    task_id = client.submit(scan("K1", [1, 2, 3, 4, 5]))
    robot.wait_bottles("K1", 2)
    robot.inject(line)
    doc = client.wait_final(task_id)
    result = doc["result"]
    assert doc["status"] == "failed" and result["code"] == "robot_out_of_step", doc
    assert why in result["message"], result["message"]
    assert "scanned_bottles" not in result and "scanned_count" not in result, result
    assert not (doc.get("progress") or {}).get("items"), "no bottle of it is kept"
    status = client.status()
    assert status["paused"] is True and status["pause_code"] == "hold_out_of_step", status
    lines = client.get(f"/task/{task_id}/transcript").json()["transcript"]
    marked = [e for e in lines if e.get("out_of_step")]
    assert [e["line"] for e in marked] == [line], lines
    wait_until(lambda: "STOP" in robot.received, 5, message="STOP after the stray line")
    assert client.post("/queue/resume").status_code == 200
    for rack in ("K2", "K3"):
        after = client.wait_final(client.submit(scan(rack)))
        assert after["status"] == "completed" and task_codes(after) == _own(rack), after
    assert robot.sent_while_busy == []


def test_a_late_pong_cannot_pass_for_the_handshake(make_server, robots) -> None:
    """A PONG naming an earlier handshake's nonce is skipped; the link waits for its own."""
    robot = _robot(robots)
    robot.stale_pong_first = True
    server = make_server(robot=robot.path, robot_protocol="text")
    client = Client(server)
    info = client.get("/robot").json()
    assert info["ready"] and info["firmware"] == FIRMWARE, info
    assert info["skipped_lines"] >= 1, info
    doc = client.wait_final(client.submit(scan("K1")))
    assert doc["status"] == "completed" and task_codes(doc) == _own("K1"), doc


def test_a_firmware_that_does_not_echo_the_nonce_still_works(make_server, robots) -> None:
    robot = _robot(robots, echo_nonce=False)
    server = make_server(robot=robot.path, robot_protocol="text")
    client = Client(server)
    assert client.get("/robot").json()["firmware"] == FIRMWARE
    doc = client.wait_final(client.submit(scan("K1")))
    assert doc["status"] == "completed" and task_codes(doc) == _own("K1"), doc


def test_work_with_no_command_in_flight_is_waited_out(make_server, robots) -> None:
    """BUSY and BOTTLE lines while nothing is in flight: the robot is still working. The
    link says it is settling, and the next command goes out only once it is quiet."""
    robot = _robot(robots)
    server = make_server(robot=robot.path, robot_protocol="text", robot_settle=0.3)
    client = Client(server)
    assert client.get("/robot").json()["ready"]
    done = threading.Event()
    last: list[float] = []

    def working() -> None:
        robot.inject("BOTTLE 4 K0-04")
        for _ in range(30):
            # Taken before the write: the server cannot have read the line earlier.
            last[:] = [time.monotonic()]
            robot.inject("BUSY")
            if done.wait(0.05):
                return

    thread = threading.Thread(target=working, daemon=True)
    thread.start()
    try:
        wait_until(lambda: client.get("/robot").json()["settling"], 5,
                   message="GET /robot says the link waits for the robot to settle")
        task_id = client.submit(scan("K1"))
        thread.join(10)
        doc = client.wait_final(task_id)
    finally:
        done.set()
    assert doc["status"] == "completed" and task_codes(doc) == _own("K1"), doc
    sent_at = [t for t, line in robot.log if line.startswith("SCAN ")]
    assert sent_at and sent_at[0] >= last[0] + 0.3, "SCAN went out before the robot was quiet"
    info = client.get("/robot").json()
    assert info["unsolicited_lines"] >= 2 and not info["settling"], info
