"""The robot behind a serial device server: socat exposes the simulator's pty over TCP.

The server talks to ``socket://127.0.0.1:<port>`` (and ``rfc2217://`` through ser2net
when it is installed) exactly as to a local port: full task, disconnect detection when
the TCP peer goes away, reconnect by re-opening the same URL.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator

import pytest

from robot import RobotSimulator
from tests.conftest import Client, wait_until
from tests.proc import free_port

SOCAT = shutil.which("socat")
SER2NET = shutil.which("ser2net")


class Socat:
    """socat relaying TCP on loopback to a pty (one process group, ended by its id)."""

    def __init__(self, pty: str, port: int) -> None:
        self.pty, self.port = pty, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert SOCAT is not None
        self.proc = subprocess.Popen(
            [SOCAT, f"TCP-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork",
             f"FILE:{self.pty},raw,echo=0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # The listener and any forked per-connection child: our own process group.
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None


@pytest.fixture
def sim() -> Iterator[RobotSimulator]:
    simulator = RobotSimulator(200.0, heartbeat_s=0.05)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def needs_socat() -> None:
    if SOCAT is None:
        pytest.skip("socat is not installed (apt-get install -y socat)")


@pytest.fixture
def socat(needs_socat, sim) -> Iterator[Socat]:
    relay = Socat(sim.pty_path, free_port())
    relay.start()
    yield relay
    relay.kill()


def test_scan_through_socket_url(socat, sim, make_server) -> None:
    url = f"socket://127.0.0.1:{socat.port}"
    # The driver retries until socat listens: no probe connection that could steal bytes.
    server = make_server(robot=url)
    client = Client(server)
    wait_until(lambda: client.get("/robot").json()["ready"], 10, message="link over TCP")
    body = client.get("/health").json()
    assert body["robot"]["connected"] is True and body["robot"]["port"] == url
    assert body["robot"]["firmware"] == "robot-sim 1.0"
    # exclusive (flock) is for device files only; a socket URL must not get it.
    assert server.link._state.conn.ser.exclusive is None
    task_id = client.submit()
    doc = client.wait_final(task_id)
    assert doc["status"] == "completed", doc
    assert doc["result"]["scanned_count"] == 3
    assert [b["position"] for b in doc["result"]["scanned_bottles"]] == [1, 2, 3]
    lines = client.get(f"/task/{task_id}/transcript").json()["transcript"]
    assert lines[0]["dir"] == "tx" and any(x["dir"] == "rx" for x in lines)


def test_tcp_peer_gone_is_a_disconnect_then_reconnects(needs_socat, make_server) -> None:
    # A slow scan (1 s per bottle) so the relay dies mid-task.
    slow = RobotSimulator(20.0, heartbeat_s=0.05)
    slow_pty = slow.start()  # /dev/pts/N
    relay = Socat(slow_pty, free_port())
    relay.start()
    try:
        url = f"socket://127.0.0.1:{relay.port}"
        server = make_server(robot=url)
        client = Client(server)
        wait_until(lambda: client.get("/robot").json()["ready"], 10, message="link over TCP")
        task_id = client.submit()
        assert slow.wait_for_command(lambda c: c.get("cmd") == "SCAN_QRCODE", 10)
        relay.kill()
        doc = client.wait_final(task_id)
        assert doc["status"] == "failed" and "disconnected" in doc["result"]["message"], doc
        st = client.status()
        assert st["paused"] and task_id in st["pause_reason"]
        wait_until(lambda: client.get("/health").json()["robot"]["connected"] is False, 5,
                   message="disconnect visible in /health")
        relay.start()  # the same URL comes back
        wait_until(lambda: client.get("/robot").json()["ready"], 15, message="reconnect")
        assert client.get("/robot").json()["reconnects"] >= 1
        assert client.post("/queue/resume").status_code == 200
        nxt = client.wait_final(client.submit({"cmd_type": "HOME", "params": {}}))
        assert nxt["status"] == "completed", nxt
    finally:
        relay.kill()
        slow.stop()


def test_open_options_per_url_kind(monkeypatch) -> None:
    """flock only for device files; no write_timeout for rfc2217 (pyserial refuses it)."""
    import serial

    from robot import RobotLink
    from robot.link.driver import RobotLinkError

    opened: list[tuple[str, dict, object]] = []
    real = serial.serial_for_url

    def spy(url: str, *args: object, **kw: object) -> serial.SerialBase:
        ser = real(url, *args, **kw)

        def fake_open() -> None:
            opened.append((url, kw, ser.exclusive))
            raise serial.SerialException("not really opening")

        ser.open = fake_open  # type: ignore[method-assign]
        return ser

    monkeypatch.setattr(serial, "serial_for_url", spy)
    for url in ("socket://127.0.0.1:9", "rfc2217://127.0.0.1:9", "/dev/ttyFAKE0"):
        with pytest.raises(RobotLinkError):
            RobotLink(url, write_timeout=2.0)._connection.open()
    by_url = {url: (kw["write_timeout"], exclusive) for url, kw, exclusive in opened}
    assert by_url["socket://127.0.0.1:9"] == (2.0, None)
    assert by_url["rfc2217://127.0.0.1:9"] == (None, None)
    assert by_url["/dev/ttyFAKE0"] == (2.0, True)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pyserial's rfc2217 thread setup
@pytest.mark.skipif(SER2NET is None, reason="ser2net is not installed (optional)")
def test_scan_through_rfc2217_url(sim, make_server, tmp_path) -> None:
    port = free_port()
    conf = tmp_path / "ser2net.yaml"
    conf.write_text(
        "connection: &robot\n"
        f"  accepter: telnet(rfc2217),tcp,127.0.0.1,{port}\n"
        f"  connector: serialdev,{sim.pty_path},115200n81,local\n"
        "  options:\n    kickolduser: true\n", encoding="utf-8")
    proc = subprocess.Popen([SER2NET, "-n", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # ser2net cannot set flow control on a pty and never answers that option.
        server = make_server(robot=f"rfc2217://127.0.0.1:{port}?ign_set_control")
        client = Client(server)
        wait_until(lambda: client.get("/robot").json()["ready"], 15, message="rfc2217 link")
        doc = client.wait_final(client.submit())
        assert doc["status"] == "completed", doc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
