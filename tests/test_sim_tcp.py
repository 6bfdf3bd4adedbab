"""The simulator over loopback TCP (socket://): what a Windows lab PC, with no pty, runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import serial

import robot.sim.channels as sim_channels
from robot import RobotSimulator, resolve_transport
from tests.conftest import ROOT, SCAN, Client, wait_until
from tests.proc import ServerProcess, free_port, scan


def _running(client: Client, task_id: str) -> dict:
    return wait_until(lambda: (d := client.task(task_id))["status"] == "running" and d, 15,
                      message=f"{task_id} running")


def test_guide_flow_over_tcp(make_server) -> None:
    server = make_server(sim_transport="tcp")
    client = Client(server)
    robot = client.get("/robot").json()
    assert robot["port"].startswith("socket://127.0.0.1:") and robot["ready"] is True
    assert server.simulator.pty_path is None
    r = client.post("/", SCAN)
    assert r.status_code == 202 and r.json()["message"] == "任务已加入队列"
    doc = client.wait_final(r.json()["task_id"])
    assert doc["status"] == "completed"
    assert doc["result"]["scanned_count"] == 3 and len(doc["result"]["scanned_bottles"]) == 3


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="curl, jq needed")
def test_guide_curl_loop_over_tcp(make_server, tmp_path) -> None:
    server = make_server(sim_transport="tcp")
    shutil.copy(os.path.join(ROOT, "SCAN_QR_CODE_command.json"), tmp_path)
    with open(os.path.join(ROOT, "examples", "guide_test.sh"), encoding="utf-8") as fh:
        script = fh.read()
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=50, env={**os.environ, "SERVER": server.url})
    assert out.returncode == 0, out.stderr
    assert "Status: completed" in out.stdout.splitlines()


def test_cancel_and_emergency_stop_over_tcp(make_server) -> None:
    server = make_server(sim_transport="tcp", sim_speed=20.0)  # one bottle per second
    client = Client(server)
    task_id = client.submit({"cmd_type": "SCAN_QRCODE",
                             "params": {"rack": "T", "positions": list(range(1, 11))}})
    wait_until(lambda: (client.task(task_id).get("progress") or {}).get("done", 0) >= 1, 15,
               message="one bottle scanned")
    assert client.post(f"/task/{task_id}/cancel").status_code == 202
    assert server.simulator.wait_for_command(lambda c: c.get("cmd") == "STOP", 5)
    doc = client.wait_final(task_id)
    assert doc["status"] == "cancelled" and 1 <= doc["result"]["scanned_count"] < 10

    second = client.submit()
    waiting = client.submit({"cmd_type": "HOME"})
    _running(client, second)
    stops = len([c for c in server.simulator.commands() if c.get("cmd") == "STOP"])
    r = client.post("/robot/stop")
    assert r.status_code == 200 and r.json()["stop_sent"] is True
    wait_until(lambda: len([c for c in server.simulator.commands()
                            if c.get("cmd") == "STOP"]) > stops, 5, message="second STOP")
    assert client.wait_final(second)["status"] == "cancelled"
    assert client.task(waiting)["status"] == "pending"  # the queue is held


def test_simulator_restart_is_a_reconnect(make_server) -> None:
    server = make_server(sim_transport="tcp")
    client = Client(server)
    url = client.get("/robot").json()["port"]
    server.simulator.unplug()
    wait_until(lambda: client.get("/robot").json()["connected"] is False, 10,
               message="link down after the simulator stopped")
    assert server.simulator.replug() == url  # same port: the driver's URL still holds
    wait_until(lambda: client.get("/robot").json()["ready"] is True, 10,
               message="link back after the simulator restarted")
    assert client.get("/robot").json()["reconnects"] >= 1
    assert client.wait_final(client.submit())["status"] == "completed"


def _standalone(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "robot.sim", "--speed", "200",
                             "--tcp", f"127.0.0.1:{port}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == f"socket://127.0.0.1:{port}"
    return proc


def test_standalone_tcp_simulator_killed_and_restarted(tmp_path) -> None:
    port = free_port()
    sim = _standalone(port)
    server = ServerProcess(str(tmp_path / "t.db"), f"socket://127.0.0.1:{port}")
    try:
        server.wait_ready()
        assert server.wait_final(server.post("/", scan("A")).json()["task_id"])["status"] \
            == "completed"
        sim.kill()
        sim.wait(10)
        wait_until(lambda: server.get("/robot").json()["connected"] is False, 10,
                   message="link down")
        sim = _standalone(port)
        wait_until(lambda: server.get("/robot").json()["ready"] is True, 15,
                   message="link back after the restart")
        doc = server.wait_final(server.post("/", scan("B")).json()["task_id"])
        assert doc["status"] == "completed" and doc["result"]["scanned_count"] == 3
    finally:
        server.stop()
        sim.kill()
        sim.wait(10)


def test_newest_connection_wins() -> None:
    """Like one program on a port: a driver reconnecting after its old connection died
    must not find the robot 'in use' by that dead connection."""
    sim = RobotSimulator(200.0, transport="tcp", heartbeat_s=60)
    url = sim.start()
    first = serial.serial_for_url(url, timeout=2)
    second = None
    try:
        first.write(b'{"id": 1, "cmd": "PING"}\n')
        assert b'"type":"ack"' in first.readline()
        second = serial.serial_for_url(url, timeout=2)
        second.write(b'{"id": 2, "cmd": "PING"}\n')
        assert b'"id":2' in second.readline()
        with pytest.raises(serial.SerialException):
            while True:  # the replaced connection reaches EOF
                first.read(1000)
    finally:
        first.close()
        if second is not None:
            second.close()
        sim.stop()


def test_auto_picks_tcp_where_there_is_no_pty(make_server, monkeypatch) -> None:
    monkeypatch.setattr(sim_channels, "pty_available", lambda: False)  # as on Windows
    assert resolve_transport("auto") == "tcp"
    with pytest.raises(ValueError, match="no pseudo-terminals"):
        resolve_transport("pty")
    server = make_server(sim_transport="auto")
    client = Client(server)
    assert client.get("/robot").json()["port"].startswith("socket://127.0.0.1:")
    assert client.wait_final(client.submit())["status"] == "completed"


def test_auto_picks_pty_where_there_is_one() -> None:
    assert resolve_transport("auto") == ("pty" if os.name == "posix" else "tcp")
    with pytest.raises(ValueError, match="unknown simulator transport"):
        resolve_transport("usb")
