"""kill -9 at several points, restart on the same database file (real processes)."""

from __future__ import annotations

import signal
import time

import pytest
import requests

from tests.conftest import wait_until
from tests.proc import ServerProcess, SimulatorProcess, scan

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sim(tmp_path):
    sim = SimulatorProcess(tmp_path, speed=10.0)  # ~2 s per bottle: time to kill mid-task
    yield sim
    sim.stop()


@pytest.fixture
def servers():
    started: list[ServerProcess] = []
    yield started
    for s in started:
        s.stop()


def _start(servers, tmp_path, sim, *extra: str) -> ServerProcess:
    server = ServerProcess(str(tmp_path / "tasks.db"), sim.link, "--robot-timeout", "10", *extra)
    servers.append(server)
    server.wait_ready()
    return server


def _scans_sent(sim: SimulatorProcess) -> list[str]:
    return [c["params"]["rack"] for c in sim.received() if c.get("cmd") == "SCAN_QRCODE"]


def test_kill_mid_task_fails_it_holds_queue_and_never_resends(servers, tmp_path, sim) -> None:
    first = _start(servers, tmp_path, sim)
    ids = [first.post("/", scan(f"R{n}", [1, 2, 3] if n == 1 else [1])).json()["task_id"]
           for n in range(1, 4)]
    wait_until(lambda: first.task(ids[0])["status"] == "running", 15, message="first running")
    wait_until(lambda: _scans_sent(sim) == ["R1"], 10, message="R1 on the wire")
    first.kill9()

    second = _start(servers, tmp_path, sim)
    docs = [second.task(t) for t in ids]
    assert docs[0]["status"] == "failed"
    assert "interrupted" in docs[0]["result"]["message"]
    assert [d["status"] for d in docs[1:]] == ["pending", "pending"]
    status = second.get("/queue/status").json()
    assert status["paused"] is True
    assert ids[0] in status["pause_reason"] and "interrupted" in status["pause_reason"]
    assert status["total_tasks"] == 3 and status["failed_tasks"] == 1
    assert _scans_sent(sim) == ["R1"]  # held: nothing more went to the robot

    assert second.post("/queue/resume").status_code == 200
    for task_id in ids[1:]:
        assert second.wait_final(task_id)["status"] == "completed"
    # The interrupted task was never sent again; the rest ran in submission order.
    assert _scans_sent(sim) == ["R1", "R2", "R3"]


def test_kill_right_after_202_every_acknowledged_task_answers(servers, tmp_path, sim) -> None:
    first = _start(servers, tmp_path, sim)
    r = first.post("/", scan("R9", [1]))
    assert r.status_code == 202
    task_id = r.json()["task_id"]
    first.kill9()  # at once: the worker may or may not have taken it

    second = _start(servers, tmp_path, sim)
    doc = second.task(task_id)
    if doc["status"] == "failed":  # the kill landed after `running` was committed
        assert "interrupted" in doc["result"]["message"]
        assert second.get("/queue/status").json()["paused"] is True
        second.post("/queue/resume")
    else:
        assert doc["status"] in ("pending", "running", "completed")
        doc = second.wait_final(task_id)
        assert doc["status"] == "completed"
    assert _scans_sent(sim).count("R9") <= 1  # never sent twice


def test_kill_between_tasks_paused_queue_stays_paused(servers, tmp_path, sim) -> None:
    first = _start(servers, tmp_path, sim)
    done = first.post("/", scan("R1", [1])).json()["task_id"]
    assert first.wait_final(done)["status"] == "completed"
    first.post("/queue/pause", {"reason": "refilling rack B"})
    later = first.post("/", scan("R2", [1])).json()["task_id"]
    first.kill9()

    second = _start(servers, tmp_path, sim)
    assert second.task(done)["status"] == "completed"
    assert second.task(later)["status"] == "pending"
    status = second.get("/queue/status").json()
    assert status["paused"] is True and status["pause_reason"] == "refilling rack B"
    assert status["completed_tasks"] == 1 and status["total_tasks"] == 2
    second.post("/queue/resume")
    assert second.wait_final(later)["status"] == "completed"
    assert _scans_sent(sim) == ["R1", "R2"]


def test_sigterm_records_the_running_task_truthfully(servers, tmp_path, sim) -> None:
    first = _start(servers, tmp_path, sim, "--shutdown-grace", "0.2")
    task_id = first.post("/", scan("R5")).json()["task_id"]
    wait_until(lambda: first.task(task_id)["status"] == "running", 15, message="running")
    code, out = first.terminate()
    assert code == 0, out
    assert any(c.get("cmd") == "STOP" for c in sim.received())

    second = _start(servers, tmp_path, sim)
    doc = second.task(task_id)
    assert doc["status"] == "failed"
    assert doc["result"]["message"].startswith("aborted")
    assert second.get("/queue/status").json()["paused"] is True


def test_bad_database_stops_startup_with_one_line(tmp_path) -> None:
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"this is not a database" * 100)
    server = ServerProcess(str(bad), "sim")
    try:
        out, _ = server.proc.communicate(timeout=30)
    finally:
        server.stop()
    assert server.proc.returncode != 0
    assert "Traceback" not in out
    assert str(bad) in out


def test_second_signal_stops_the_running_task_at_once(servers, tmp_path, sim) -> None:
    first = _start(servers, tmp_path, sim, "--shutdown-grace", "60")
    task_id = first.post("/", scan("R6")).json()["task_id"]
    wait_until(lambda: first.task(task_id)["status"] == "running", 15, message="running")
    first.proc.send_signal(signal.SIGTERM)

    def http_closed() -> bool:
        try:
            requests.get(first.url + "/health", timeout=1)
            return False
        except requests.ConnectionError:
            return True

    wait_until(http_closed, 10, message="the first signal to close HTTP")
    t0 = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)  # do not wait the 60 s grace
    out, _ = first.proc.communicate(timeout=30)
    assert first.proc.returncode == 0, out
    assert time.monotonic() - t0 < 20
    assert "Second signal: sending STOP" in out
    assert any(c.get("cmd") == "STOP" for c in sim.received())

    second = _start(servers, tmp_path, sim)
    doc = second.task(task_id)
    assert doc["status"] == "failed" and doc["result"]["message"].startswith("aborted")
