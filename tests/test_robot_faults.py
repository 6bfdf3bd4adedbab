"""Robot faults through the real server: silence, disconnect, busy port, noisy line.

Every test runs the HTTP server with the simulator on a real pty (the built-in one,
or one the test owns with a symlink so it can be unplugged and replugged). No bare
sleeps: everything polls with a deadline or waits on a condition.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import serial

from robot import RobotLinkError, RobotSimulator
from tests.conftest import Client, wait_until

STOP_CMD = lambda c: c.get("cmd") == "STOP"  # noqa: E731


def scan_received(sim: RobotSimulator, after: int = 0) -> dict[str, Any] | None:
    """Wait for the (after+1)-th SCAN_QRCODE the simulator received."""
    return sim.wait_for_command(
        lambda c: c.get("cmd") == "SCAN_QRCODE"
        and sum(1 for x in sim.received if x.get("cmd") == "SCAN_QRCODE") > after, 10)


def health(client: Client) -> tuple[int, dict[str, Any]]:
    r = client.get("/health")
    return r.status_code, r.json()


def robot_connected(client: Client) -> bool:
    return bool(health(client)[1]["robot"]["connected"])


def robot_ready(client: Client) -> bool:
    return bool(client.get("/robot").json()["ready"])


@pytest.fixture
def own_sim(tmp_path) -> Iterator[RobotSimulator]:
    """A simulator reachable through a symlink, like /dev/serial/by-id/..."""
    sim = RobotSimulator(200.0, link_path=str(tmp_path / "robot"), heartbeat_s=0.05)
    sim.start()
    yield sim
    sim.stop()


def assert_held_then_resume(client: Client, task_id: str, fault: str) -> None:
    st = client.status()
    assert st["paused"] is True, st
    assert task_id in st["pause_reason"] and fault in st["pause_reason"], st
    # Held: a new task stays pending even once the robot is ready again.
    wait_until(lambda: robot_ready(client), 10, message="link resynchronized")
    nxt = client.submit()
    assert client.task(nxt)["status"] == "pending"
    r = client.post("/queue/resume")
    assert r.status_code == 200 and r.json()["paused"] is False
    done = client.wait_final(nxt)
    assert done["status"] == "completed", done
    assert done["result"]["scanned_count"] == 3


# -- silence ---------------------------------------------------------------------------------
def test_hang_after_ack_times_out_sends_stop_and_holds(make_server) -> None:
    server = make_server(robot_timeout=0.5)
    client, sim = Client(server), server.simulator
    sim.set_fault("hang_after_ack")
    task_id = client.submit()
    assert scan_received(sim)
    sim.set_fault(None)  # the running job keeps its mode; the resync PING gets answered
    doc = client.wait_final(task_id)
    assert doc["status"] == "failed"
    assert "timeout" in doc["result"]["message"], doc
    assert sim.wait_for_command(STOP_CMD, 5), "STOP sent after the silence"
    # Re-synchronized: a PING went out after the STOP before anything else.
    wait_until(lambda: robot_ready(client), 10, message="resync")
    names = [c.get("cmd") for c in sim.commands()]
    stop_at = names.index("STOP")
    assert "PING" in names[stop_at:], names
    assert_held_then_resume(client, task_id, "timeout")


def test_no_ack_times_out(make_server) -> None:
    server = make_server(robot_timeout=0.5)
    client, sim = Client(server), server.simulator
    sim.set_fault("no_ack")
    task_id = client.submit()
    assert scan_received(sim)
    sim.set_fault(None)  # the SCAN itself was ignored; STOP and PING are answered
    doc = client.wait_final(task_id)
    assert doc["status"] == "failed" and "timeout" in doc["result"]["message"], doc
    assert sim.wait_for_command(STOP_CMD, 5)
    assert_held_then_resume(client, task_id, "timeout")


def test_auto_resume_skips_the_hold(make_server) -> None:
    server = make_server(robot_timeout=0.5, auto_resume=True)
    client, sim = Client(server), server.simulator
    sim.set_fault("hang_after_ack")
    task_id = client.submit()
    assert scan_received(sim)
    sim.set_fault(None)
    doc = client.wait_final(task_id)
    assert doc["status"] == "failed" and "timeout" in doc["result"]["message"]
    assert client.status()["paused"] is False
    nxt = client.wait_final(client.submit())
    assert nxt["status"] == "completed", nxt


def test_heartbeats_keep_a_long_quiet_command_alive(own_sim, make_server) -> None:
    # heartbeat_only: no progress, a result after 10 heartbeats (0.5 s) > robot_timeout.
    server = make_server(robot=own_sim.path, robot_timeout=0.25)
    client = Client(server)
    own_sim.set_fault("heartbeat_only")
    t0 = time.monotonic()
    doc = client.wait_final(client.submit())
    assert doc["status"] == "completed", doc
    assert time.monotonic() - t0 > 0.25 * 1.5, "the command must outlast robot_timeout"
    assert client.status()["paused"] is False


# -- robot-reported failure and a noisy line -------------------------------------------------
def test_robot_failure_does_not_hold(server) -> None:
    client, sim = Client(server), server.simulator
    sim.set_fault("fail")
    doc = client.wait_final(client.submit())
    assert doc["status"] == "failed" and doc["result"]["message"] == "simulated failure"
    assert client.status()["paused"] is False
    sim.set_fault(None)
    assert client.wait_final(client.submit())["status"] == "completed"


def test_garbage_line_still_completes_and_counts_skips(server) -> None:
    client, sim = Client(server), server.simulator
    before = client.get("/robot").json()["skipped_lines"]
    sim.set_fault("garbage")
    doc = client.wait_final(client.submit())
    assert doc["status"] == "completed", doc
    assert doc["result"]["scanned_count"] == 3
    info = client.get("/robot").json()
    assert info["skipped_lines"] > before
    assert info["lines_in"] > info["skipped_lines"] and info["lines_out"] >= 2
    assert client.status()["paused"] is False


# -- disconnect ----------------------------------------------------------------------------
def test_unplug_mid_task_fails_holds_and_recovers(make_server, tmp_path) -> None:
    sim = RobotSimulator(5.0, link_path=str(tmp_path / "robot"), heartbeat_s=0.05)
    sim.start()
    try:
        server = make_server(robot=sim.path)
        client = Client(server)
        status, body = health(client)
        assert status == 200 and body["robot"]["connected"] is True
        assert body["robot"]["port"] == sim.path and body["robot"]["firmware"]
        task_id = client.submit({"cmd_type": "SCAN_QRCODE",
                                 "params": {"rack": "B", "positions": [1, 2, 3, 4, 5]}})
        assert scan_received(sim)
        sim.unplug()
        doc = client.wait_final(task_id)
        assert doc["status"] == "failed"
        assert "disconnected" in doc["result"]["message"], doc
        status, body = health(client)
        assert status == 200 and body["robot"]["connected"] is False
        assert body["status"] == "degraded"
        st = client.status()
        assert st["paused"] and task_id in st["pause_reason"]
        assert "disconnected" in st["pause_reason"]
        sim.speed = 200.0  # slow only for the unplugged task; the next one is quick
        sim.replug()
        wait_until(lambda: robot_ready(client), 10, message="reconnect after replug")
        assert client.get("/robot").json()["reconnects"] >= 1
        assert_held_then_resume(client, task_id, "disconnected")
    finally:
        sim.stop()


def test_tasks_wait_pending_while_unplugged(own_sim, make_server) -> None:
    server = make_server(robot=own_sim.path)
    client = Client(server)
    own_sim.unplug()
    wait_until(lambda: not robot_connected(client), 10, message="disconnect seen")
    task_id = client.submit()
    # The link has tried (and failed) to reopen the vanished path at least once more.
    wait_until(lambda: "no such device" in (client.get("/robot").json()["error"] or ""), 10,
               message="reconnect attempt")
    assert client.task(task_id)["status"] == "pending"
    assert health(client)[1]["robot"]["connected"] is False
    own_sim.replug()
    doc = client.wait_final(task_id)
    assert doc["status"] == "completed", doc
    assert robot_connected(client)
    assert client.status()["paused"] is False


def test_no_thread_or_fd_leak_over_20_replugs(own_sim, make_server) -> None:
    server = make_server(robot=own_sim.path, reconnect_min=0.01, reconnect_max=0.05)
    client = Client(server)

    def cycle() -> None:
        own_sim.unplug()
        wait_until(lambda: not server.link.info()["connected"], 5, message="unplug seen")
        own_sim.replug()
        wait_until(lambda: server.link.ready, 5, message="replug seen")

    cycle()  # warm-up: lazily created threads and fds exist from here on
    assert client.wait_final(client.submit())["status"] == "completed"
    threads = threading.active_count()
    fds = len(os.listdir("/proc/self/fd"))
    reconnects = server.link.info()["reconnects"]
    for _ in range(20):
        cycle()
    assert server.link.info()["reconnects"] == reconnects + 20
    # Closing is synchronous in the driver, but give straggling daemon threads a moment.
    wait_until(lambda: threading.active_count() <= threads + 2, 5,
               message=f"threads back to {threads} (now {threading.active_count()})")
    wait_until(lambda: len(os.listdir("/proc/self/fd")) <= fds + 4, 5,
               message=f"fds back to {fds} (now {len(os.listdir('/proc/self/fd'))})")
    assert client.wait_final(client.submit())["status"] == "completed"


# -- exclusive port ------------------------------------------------------------------------
def test_busy_port_reported_then_connects_when_released(own_sim, make_server) -> None:
    holder = serial.Serial(own_sim.path, exclusive=True, timeout=0)
    try:
        with pytest.raises(RobotLinkError) as info:
            make_server(robot=own_sim.path, require_robot=True)
        text = str(info.value)
        assert "busy" in text and "\n" not in text
        server = make_server(robot=own_sim.path)
        client = Client(server)
        status, body = health(client)
        assert status == 200 and body["robot"]["connected"] is False
        assert "busy" in body["robot"]["error"]
        task_id = client.submit()
        wait_until(lambda: client.get("/robot").json()["error"], 5)
        assert client.task(task_id)["status"] == "pending"
    finally:
        holder.close()
    wait_until(lambda: robot_connected(client), 10, message="connect once the port is free")
    assert health(client)[1]["robot"]["error"] is None  # even before the PING is answered
    wait_until(lambda: robot_ready(client), 10, message="handshake")
    assert client.wait_final(task_id)["status"] == "completed"


# -- health, robot info, transcript ----------------------------------------------------------
def test_health_and_robot_blocks(server) -> None:
    client = Client(server)
    status, body = health(client)
    assert status == 200
    assert body["status"] == "ok" and body["mode"] == "queue" and body["worker_alive"] is True
    robot = body["robot"]
    assert {"connected", "port", "last_seen", "firmware"} <= set(robot)
    assert robot["connected"] is True and robot["firmware"] == "robot-sim 1.0"
    assert time.strptime(robot["last_seen"], "%Y-%m-%d %H:%M:%S")
    info = client.get("/robot").json()
    for key in ("connected", "port", "last_seen", "firmware"):
        assert info[key] == robot[key] or key == "last_seen"
    for key in ("lines_in", "lines_out", "skipped_lines", "reconnects"):
        assert isinstance(info[key], int)
    assert info["lines_in"] >= 2 and info["lines_out"] >= 1  # the handshake PING


def test_transcript_has_timestamped_tx_and_rx(server) -> None:
    client = Client(server)
    t0 = time.time()
    task_id = client.submit()
    assert client.wait_final(task_id)["status"] == "completed"
    r = client.get(f"/task/{task_id}/transcript")
    assert r.status_code == 200
    body = r.json()
    assert body["task_id"] == task_id and body["status"] == "completed"
    lines = body["transcript"]
    assert lines[0]["dir"] == "tx" and '"SCAN_QRCODE"' in lines[0]["line"]
    rx = [x["line"] for x in lines if x["dir"] == "rx"]
    assert any('"ack"' in x for x in rx) and any('"progress"' in x for x in rx)
    assert '"result"' in rx[-1]
    stamps = [x["t"] for x in lines]
    assert stamps == sorted(stamps) and t0 - 1 <= stamps[0] <= time.time() + 1
    assert client.get("/task/nope/transcript").status_code == 404


def test_dead_worker_makes_health_503(server) -> None:
    client = Client(server)
    assert health(client)[0] == 200
    server.worker.stop()
    status, body = health(client)
    assert status == 503
    assert body["worker_alive"] is False and body["status"] == "down"
    assert body["robot"]["connected"] is True


def test_simulator_unplug_stops_a_job_started_during_the_unplug(tmp_path) -> None:
    """A command read just before unplug() must not leave a job running (-> "busy")."""
    sim = RobotSimulator(1.0, link_path=str(tmp_path / "robot"), heartbeat_s=0.05)
    sim.start()
    real_send = sim._send
    unplugging = threading.Event()

    def slow_ack(obj: dict[str, Any], **kw: Any) -> None:
        if obj.get("type") == "ack":
            # Hold the reader between "command received" and "job created" until the
            # unplug is under way.
            wait_until(lambda: sim._session is None, 5, message="unplug started")
        real_send(obj, **kw)

    sim._send = slow_ack  # type: ignore[method-assign]
    port = serial.Serial(sim.path, timeout=0.2)
    try:
        port.write(b'{"id": 7, "cmd": "HOME"}\n')
        assert sim.wait_for_command(lambda c: c.get("id") == 7, 5)
        t = threading.Thread(target=lambda: (unplugging.set(), sim.unplug()))
        t.start()
        t.join(10)
        assert unplugging.is_set() and not t.is_alive()
        assert sim._job is None, "a job survived the unplug"
    finally:
        port.close()
        sim.stop()


class _UnplugOnFirstStart:
    """The server's real RobotLink, with one trigger: the robot's cable is pulled right
    after the worker's last readiness check, before the command is written (the worker
    reads `stop_epoch` just then). Everything else goes to the real link."""

    def __init__(self, link: Any, sim: RobotSimulator) -> None:
        self._link, self._sim = link, sim
        self.fired = threading.Event()

    @property
    def stop_epoch(self) -> int:
        if not self.fired.is_set():
            self._sim.unplug()
            wait_until(lambda: not self._link.info()["connected"], 10, message="link down")
            self.fired.set()
        return self._link.stop_epoch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._link, name)


def test_a_command_the_link_dropped_before_sending_goes_back_to_the_queue(
        make_server, own_sim: RobotSimulator) -> None:
    server = make_server(robot=own_sim.link_path)
    client = Client(server)
    wait_until(lambda: robot_ready(client), 10, message="robot ready")
    trigger = _UnplugOnFirstStart(server.link, own_sim)
    server.worker.link = trigger
    task_id = client.submit({"cmd_type": "HOME"})
    # The link went down before the HOME was written; once the worker has dealt with it,
    # the task is not failed and the queue not held: it is pending again.
    wait_until(lambda: trigger.fired.is_set() and not server.worker.busy,
               10, message="the worker to handle the dropped link")
    assert client.task(task_id)["status"] == "pending"
    assert client.status()["paused"] is False
    own_sim.replug()
    done = client.wait_final(task_id)
    assert done["status"] == "completed", done
    assert [c["cmd"] for c in own_sim.received if c.get("cmd") == "HOME"] == ["HOME"]
