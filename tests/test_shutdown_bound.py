"""Shutdown has a bound: after the grace, STOP's confirmation is waited for at most the
link's handshake timeout (5 s), and a second signal does not wait at all.

The servers are real `main.py serve` subprocesses; the robot is the built-in simulator
in this process on a real pty, switched after the handshake to "hang_after_ack" (it
takes a command, then says nothing more, not even to STOP). The held queue's banner
then names the address the server listens on.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from console.banner import lan_ip, resume_base
from robot import RobotSimulator
from tasks.queue.events import EventBus
from tasks.queue.manager import TaskManager
from tasks.store import TaskStore
from tasks.worker import Worker
from tests.conftest import wait_until
from tests.proc import ServerProcess, scan
from tests.test_worker_unit import FakeOutcome, FakePort

GRACE = 1.0
CONFIRM = 5.0  # RobotLink.handshake_timeout's default: how long STOP's answer is awaited


@pytest.fixture
def robot(tmp_path: Any) -> Iterator[RobotSimulator]:
    sim = RobotSimulator(50.0, link_path=str(tmp_path / "robot-port"), heartbeat_s=0.5)
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def _hung_task(servers: list[ServerProcess], tmp_path: Any, robot: RobotSimulator,
               *extra: str) -> tuple[ServerProcess, str]:
    """A server whose running SCAN the robot took and will never answer, STOP included.
    --robot-timeout 60: only the shutdown's own bound can end the wait early."""
    server = ServerProcess(str(tmp_path / "tasks.db"), robot.path, "--robot-timeout", "60",
                           "--shutdown-grace", str(GRACE), *extra)
    servers.append(server)
    server.wait_ready()
    wait_until(lambda: server.get("/health").json()["robot"]["connected"], 15,
               message="robot connected")
    robot.set_fault("hang_after_ack")
    task_id = server.post("/", scan("H", list(range(1, 9)))).json()["task_id"]
    assert robot.wait_for_command(lambda c: c.get("cmd") == "SCAN_QRCODE", 15), "never sent"
    wait_until(lambda: server.task(task_id)["status"] == "running", 10, message="running")
    return server, task_id


def _stored(db: str, task_id: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    with sqlite3.connect(db) as conn:
        status, result = conn.execute("SELECT status, result FROM tasks WHERE task_id = ?",
                                      (task_id,)).fetchone()
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    return status, json.loads(result), meta


def _exit(server: ServerProcess, timeout: float) -> str:
    try:
        out, _ = server.proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        out, _ = server.proc.communicate()
        raise AssertionError(f"server still running after {timeout} s:\n{out}") from None
    assert server.proc.returncode == 0, out
    return out


def _assert_unconfirmed_and_held(db: str, task_id: str) -> dict[str, Any]:
    status, result, meta = _stored(db, task_id)
    assert status == "failed" and result["code"] == "shutdown_aborted", result
    assert result["message"].startswith("aborted"), result
    assert result["note"].startswith("the robot did not confirm the abort"), result
    assert "no answer to STOP in time" in result["note"], result
    assert meta["paused"] == "1" and meta["pause_code"] == "hold_shutdown_abort", meta
    return result


def test_sigterm_waits_for_stop_at_most_the_handshake_timeout(
        servers, tmp_path, robot) -> None:
    server, task_id = _hung_task(servers, tmp_path, robot)
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    out = _exit(server, GRACE + 20)
    took = time.monotonic() - t0
    # Grace, then STOP and up to 5 s for its answer: not the scan's 60 s silence limit.
    assert GRACE + CONFIRM - 0.5 <= took < GRACE + CONFIRM + 1.0, (took, out)
    assert any(c.get("cmd") == "STOP" for c in robot.commands())
    assert "Server stopped." in out
    _assert_unconfirmed_and_held(str(tmp_path / "tasks.db"), task_id)


@pytest.mark.parametrize("when", ["after STOP", "during the grace"])
def test_a_second_sigterm_does_not_wait_for_the_robot(servers, tmp_path, robot,
                                                      when: str) -> None:
    grace = ("--shutdown-grace", "30") if when == "during the grace" else ()
    server, task_id = _hung_task(servers, tmp_path, robot, *grace)
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    if when == "after STOP":
        assert robot.wait_for_command(lambda c: c.get("cmd") == "STOP", GRACE + 5), "no STOP"
    else:
        # The first signal was handled once HTTP is closed; STOP has not been sent yet.
        wait_until(lambda: _refused(server.url), 10, message="HTTP closed by the first signal")
        assert not any(c.get("cmd") == "STOP" for c in robot.commands())
    t1 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    out = _exit(server, 20)
    assert time.monotonic() - t1 < 2.0, out  # well inside the 5 s confirm window
    if not grace:
        assert time.monotonic() - t0 < GRACE + CONFIRM, out
    assert "Second signal: sending STOP" in out
    assert f"Not waiting for the robot to confirm STOP: task {task_id}" in out
    assert any(c.get("cmd") == "STOP" for c in robot.commands())
    _assert_unconfirmed_and_held(str(tmp_path / "tasks.db"), task_id)


def _refused(url: str) -> bool:
    try:
        requests.get(url + "/health", timeout=1)
        return False
    except requests.ConnectionError:
        return True


def test_the_held_queues_resume_hint_uses_the_listening_address(
        servers, tmp_path, robot) -> None:
    first, task_id = _hung_task(servers, tmp_path, robot)
    first.proc.send_signal(signal.SIGTERM)
    _exit(first, GRACE + 20)
    # Restarted on loopback only (the built-in simulator: the hung one is still busy).
    second = ServerProcess(str(tmp_path / "tasks.db"), "sim", "--sim-speed", "200")
    servers.append(second)
    second.wait_ready()
    doc = second.task(task_id)
    assert doc["status"] == "failed" and "note" in doc["result"]
    assert doc["duration_s"] >= 0 and "_duration_s" not in doc["result"]
    status = second.get("/queue/status").json()
    assert status["paused"] is True and status["pause_code"] == "hold_shutdown_abort"
    url = f"http://127.0.0.1:{second.port}"
    # The hint works as printed: the queue resumes.
    assert requests.post(url + "/queue/resume", timeout=10).status_code == 200
    code, out = second.terminate()
    assert code == 0, out
    assert f"Resume with: curl -X POST {url}/queue/resume" in out, out


@pytest.mark.parametrize(("host", "shown"), [
    ("127.0.0.1", "http://127.0.0.1:8090"),
    ("172.16.11.130", "http://172.16.11.130:8090"),
    ("::1", "http://[::1]:8090"),
    ("fe80::1%eth0", "http://[fe80::1%25eth0]:8090"),
    ("0.0.0.0", "http://LAN:8090"),
    ("::", "http://LAN:8090"),
])
def test_resume_base(host: str, shown: str) -> None:
    assert resume_base(host, 8090, "LAN") == shown


def test_a_wildcard_listener_keeps_the_lan_address() -> None:
    assert resume_base("0.0.0.0", 8090, lan_ip()) == f"http://{lan_ip()}:8090"


# -- the worker's part, one step at a time (tests/test_worker_unit.py's fake port) --------
@pytest.fixture
def rig(tmp_path: Any) -> Iterator[tuple[TaskManager, FakePort, Worker]]:
    store = TaskStore(str(tmp_path / "tasks.db"))
    store.open()
    manager = TaskManager(store, EventBus())
    manager.recover()
    port = FakePort()
    yield manager, port, Worker(manager, port, poll_interval=0.01)
    store.close()


def _shutdown_during(rig: tuple[TaskManager, FakePort, Worker], outcome: FakeOutcome, *,
                     wait: bool) -> tuple[dict[str, Any], bool]:
    manager, port, worker = rig
    task_id = manager.submit("HOME", {}).task["task_id"]
    gave_up: list[bool] = []

    def stopped_at_shutdown(cmd: str, params: dict[str, Any]) -> FakeOutcome:
        gave_up.append(worker.abort_for_shutdown(wait=wait))
        return outcome

    port.script = stopped_at_shutdown
    assert worker.run_once() is True
    doc = manager.get(task_id)
    assert doc is not None and doc["status"] == "failed"
    assert doc["result"]["code"] == "shutdown_aborted"
    assert manager.pause_code == "hold_shutdown_abort"
    # STOP went out with the link's handshake timeout as its confirm window.
    assert port.confirm_windows == [port.handshake_timeout]
    return doc, gave_up[0]


def test_an_unconfirmed_shutdown_stop_is_noted(rig) -> None:
    unconfirmed = FakeOutcome(False, "abort not confirmed: ...", fault="timeout",
                              code="abort_not_confirmed")
    doc, gave_up = _shutdown_during(rig, unconfirmed, wait=True)
    assert doc["result"]["note"] == ("the robot did not confirm the abort (no answer to STOP "
                                     "in time; the robot's state is unknown)")
    assert gave_up is False and rig[1].gave_up == 0


def test_a_confirmed_shutdown_stop_has_no_note(rig) -> None:
    confirmed = FakeOutcome(False, "aborted", aborted=True, code="robot_error",
                            params={"error": "aborted"})
    doc, _ = _shutdown_during(rig, confirmed, wait=True)
    assert "note" not in doc["result"]


def test_a_second_signal_gives_up_the_wait(rig) -> None:
    unconfirmed = FakeOutcome(False, "abort not confirmed: ...", fault="timeout",
                              code="abort_not_confirmed")
    doc, gave_up = _shutdown_during(rig, unconfirmed, wait=False)
    assert gave_up is True and rig[1].gave_up == 1
    assert "note" in doc["result"]
