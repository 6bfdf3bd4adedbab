"""RobotLink against the simulator on a real pty, opened through pyserial."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import serial

from robot import CommandOutcome, Fault, RobotLink, RobotLinkError, RobotSimulator, list_ports
from robot.link.outcome import Transcript
from robot.sim.simulator import qr_code
from tests.conftest import wait_until

SPEED = 200.0


class Background:
    """Run link.execute in a thread; join() returns the outcome."""

    def __init__(self, fn: Callable[[], CommandOutcome]) -> None:
        self.outcome: CommandOutcome | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], CommandOutcome]) -> None:
        self.outcome = fn()

    def join(self, timeout: float = 10.0) -> CommandOutcome:
        self._thread.join(timeout)
        assert self.outcome is not None, "execute did not return"
        return self.outcome


@pytest.fixture
def events() -> list[tuple[str, dict[str, Any]]]:
    return []


@pytest.fixture
def sim(tmp_path) -> Iterator[RobotSimulator]:
    simulator = RobotSimulator(SPEED, link_path=str(tmp_path / "robot-link"), heartbeat_s=0.05)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def make_link(events) -> Iterator[Callable[..., RobotLink]]:
    links: list[RobotLink] = []

    def factory(path: str, **kw: Any) -> RobotLink:
        kw.setdefault("robot_timeout", 2.0)
        kw.setdefault("reconnect_min", 0.05)
        kw.setdefault("reconnect_max", 0.2)
        kw.setdefault("handshake_timeout", 0.5)
        kw.setdefault("on_link_event", lambda kind, info: events.append((kind, info)))
        link = RobotLink(path, **kw)
        links.append(link)
        return link

    yield factory
    for link in links:
        link.stop()


@pytest.fixture
def link(sim, make_link) -> RobotLink:
    lk = make_link(sim.path)
    lk.start()
    return lk


def cmds(sim: RobotSimulator, name: str) -> list[dict[str, Any]]:
    return [c for c in sim.commands() if c.get("cmd") == name]


# -- normal operation ----------------------------------------------------------------------
def test_start_handshake_sets_firmware(link: RobotLink, sim: RobotSimulator, events) -> None:
    info = link.info()
    assert link.ready and info["ready"] and info["connected"]
    assert info["firmware"] == "robot-sim 1.0"
    assert info["port"] == sim.path
    assert info["error"] is None
    assert time.strptime(info["last_seen"], "%Y-%m-%d %H:%M:%S")
    assert cmds(sim, "PING"), "handshake PING on the wire"
    assert [k for k, _ in events] == ["connected"]


def test_ping_home_and_status(link: RobotLink) -> None:
    out = link.execute("PING")
    assert out.success and out.fault is None and out.data["firmware"] == "robot-sim 1.0"
    out = link.execute("HOME")
    assert (out.success, out.message, out.fault, out.aborted) == (True, "HOME完成", None, False)
    assert out.sent
    out = link.execute("MOVE_TO", {"x": 1, "y": 2.5, "z": 3})
    assert out.success
    out = link.execute("GET_STATUS")
    assert out.data["position"] == {"x": 1.0, "y": 2.5, "z": 3.0}
    assert out.data["holding"] is None


def test_scan_result_items_and_progress_order(link: RobotLink) -> None:
    seen: list[dict[str, Any]] = []
    out = link.execute("SCAN_QRCODE", {"rack": "A", "positions": [3, 1, 2]},
                       on_progress=seen.append)
    expected = [{"position": p, "code": qr_code("A", p), "rack": "A"} for p in (3, 1, 2)]
    assert out.success and out.message == "SCAN_QRCODE完成"
    assert out.data == {"scanned_count": 3, "scanned_bottles": expected}
    assert out.items == expected
    # Progress comes in batches (at most every progress_interval): each event has the
    # items new since the previous one, so together they are every item, once, in order.
    assert [item for e in seen for item in e["items"]] == expected
    assert [e["first"] for e in seen] == [sum(len(p["items"]) for p in seen[:i])
                                          for i in range(len(seen))]
    assert seen[-1]["done"] == 3 and all(e["total"] == 3 for e in seen)
    dirs = [e["dir"] for e in out.transcript]
    assert dirs[0] == "tx" and dirs.count("tx") == 1 and "rx" in dirs
    assert json.loads(out.transcript[-1]["line"])["type"] == "result"
    assert all(isinstance(e["t"], float) for e in out.transcript)


def test_progress_callback_errors_do_not_break_the_command(link: RobotLink) -> None:
    def boom(event: dict[str, Any]) -> None:
        raise RuntimeError("observer bug")

    out = link.execute("SCAN_QRCODE", {"rack": "B", "positions": [1, 2]}, on_progress=boom)
    assert out.success and len(out.items) == 2


def test_robot_failure_is_not_a_fault(link: RobotLink, sim: RobotSimulator) -> None:
    out = link.execute("PICK", {"position": "one"})
    assert not out.success and "bad params" in out.message and out.fault is None
    out = link.execute("PICK", {"position": 4})
    assert out.success and link.execute("GET_STATUS").data["holding"] == 4
    sim.set_fault("fail")
    out = link.execute("HOME")
    assert (out.success, out.message, out.fault) == (False, "simulated failure", None)
    assert link.ready


def test_unknown_command_answered_with_failure(link: RobotLink) -> None:
    out = link.execute("DANCE")
    assert not out.success and "unknown command" in out.message and out.fault is None


# -- abort ---------------------------------------------------------------------------------
def test_abort_mid_scan(link: RobotLink, sim: RobotSimulator) -> None:
    first = threading.Event()
    job = Background(lambda: link.execute(
        "SCAN_QRCODE", {"rack": "A", "positions": list(range(1, 41))},
        on_progress=lambda e: first.set()))
    assert first.wait(5)
    assert link.abort() is True
    stop = sim.wait_for_command(lambda c: c.get("cmd") == "STOP", 2)
    assert stop is not None
    out = job.join()
    assert out.aborted and not out.success and out.message == "aborted" and out.fault is None
    assert 1 <= len(out.items) < 40
    assert out.data["scanned_count"] == len(out.items)
    assert any(e["dir"] == "tx" and '"STOP"' in e["line"] for e in out.transcript)
    # STOP's own reply is expected, not a stray line; the link stays usable.
    wait_until(lambda: link.info()["lines_in"] and cmds(sim, "STOP"))
    assert link.ready and link.execute("PING").success
    assert link.info()["skipped_lines"] == 0


def test_abort_latency_from_another_thread(link: RobotLink, sim: RobotSimulator) -> None:
    latencies = []
    for _ in range(5):
        started = threading.Event()
        job = Background(lambda ev=started: link.execute(
            "SCAN_QRCODE", {"rack": "A", "positions": list(range(1, 41))},
            on_progress=lambda e: ev.set()))
        assert started.wait(5)
        t0 = time.perf_counter()
        assert link.abort()
        latencies.append(time.perf_counter() - t0)
        assert job.join().aborted
    # abort() returns once the bytes are written: normally far below 1 ms.
    assert statistics.median(latencies) < 0.005, latencies


def test_abort_when_idle_and_when_disconnected(link: RobotLink, sim: RobotSimulator) -> None:
    assert link.abort() is True
    assert sim.wait_for_command(lambda c: c.get("cmd") == "STOP", 2)
    sim.unplug()
    assert wait_until(lambda: not link.info()["connected"])
    assert link.abort() is False


# -- silence and faults --------------------------------------------------------------------
def test_timeout_hang_after_ack_sends_stop_then_resyncs(link: RobotLink,
                                                       sim: RobotSimulator, events) -> None:
    sim.set_fault("hang_after_ack")
    job = Background(lambda: link.execute("HOME", timeout=0.5))
    home = sim.wait_for_command(lambda c: c.get("cmd") == "HOME", 2)
    assert home is not None
    sim.set_fault(None)  # the hung HOME stays hung; later commands are answered
    t0 = time.monotonic()
    out = job.join()
    assert out.fault == "timeout" and not out.success and not out.aborted
    assert "timeout" in out.message and "STOP sent" in out.message
    assert time.monotonic() - t0 < 2
    stop = sim.wait_for_command(lambda c: c.get("cmd") == "STOP", 2)
    assert stop is not None and stop["id"] > home["id"]
    assert "fault" in [k for k, _ in events]
    assert link.wait_ready(5)
    pings = cmds(sim, "PING")
    assert len(pings) >= 2 and pings[-1]["id"] > stop["id"], "resync PING after the fault"
    assert link.execute("HOME").success
    assert len(cmds(sim, "HOME")) == 2, "the timed-out command was never re-sent"


def test_heartbeats_keep_a_silent_command_alive(link: RobotLink, sim: RobotSimulator) -> None:
    sim.set_fault("heartbeat_only")
    out = link.execute("HOME", timeout=0.3)  # the command takes ~0.5 s
    assert out.success and out.fault is None
    beats = [e for e in out.transcript if e["dir"] == "rx" and "heartbeat" in e["line"]]
    assert len(beats) >= 3


def test_no_ack_times_out_then_recovers(link: RobotLink, sim: RobotSimulator) -> None:
    sim.set_fault("no_ack")
    out = link.execute("PING", timeout=0.3)
    assert out.fault == "timeout" and "timeout" in out.message
    assert sim.wait_for_command(lambda c: c.get("cmd") == "STOP", 2)
    sim.set_fault(None)
    assert link.wait_ready(5)
    assert link.execute("PING").success


def test_not_ready_returns_at_once_without_writing(link: RobotLink, sim: RobotSimulator) -> None:
    sim.unplug()
    wait_until(lambda: not link.info()["connected"])
    before = len(sim.commands())
    t0 = time.monotonic()
    out = link.execute("HOME")
    assert time.monotonic() - t0 < 0.1
    assert out.fault == "disconnected" and out.message == "disconnected: robot link not connected"
    assert len(sim.commands()) == before
    # Not sent: the worker puts such a task back at the head of the queue.
    assert out.sent is False and out.fault is Fault.DISCONNECTED
    # A str Enum, shown as its value wherever a fault is formatted or encoded.
    assert (f"{out.fault}", str(out.fault), json.dumps(out.fault)) == (
        "disconnected", "disconnected", '"disconnected"')


def test_garbage_is_skipped_and_counted(link: RobotLink, sim: RobotSimulator) -> None:
    sim.set_fault("garbage")
    out = link.execute("SCAN_QRCODE", {"rack": "C", "positions": [1, 2, 3]})
    assert out.success and out.data["scanned_count"] == 3
    assert [i["code"] for i in out.items] == [qr_code("C", p) for p in (1, 2, 3)]
    info = link.info()
    assert info["skipped_lines"] >= 5
    assert link.ready and link.execute("PING").success


def test_overlong_line_is_skipped(link: RobotLink, sim: RobotSimulator) -> None:
    before = link.info()["skipped_lines"]
    sim._write(b'{"type":"log","message":"' + b"x" * 70000 + b'"}\n')  # noqa: SLF001
    wait_until(lambda: link.info()["skipped_lines"] == before + 1)
    assert link.execute("PING").success


# -- unplug / replug -----------------------------------------------------------------------
def test_unplug_during_command_then_replug(link: RobotLink, sim: RobotSimulator,
                                           events) -> None:
    first = threading.Event()
    job = Background(lambda: link.execute(
        "SCAN_QRCODE", {"rack": "A", "positions": list(range(1, 41))},
        on_progress=lambda e: first.set()))
    assert first.wait(5)
    old = sim.pty_path
    sim.unplug()
    out = job.join()
    assert out.fault == "disconnected" and "disconnected" in out.message and not out.success
    assert len(out.items) >= 1
    assert out.sent  # it reached the robot: failed and held, never re-run
    assert not link.ready
    assert sim.replug() == sim.path
    assert sim.pty_path != old or os.path.realpath(sim.path) == sim.pty_path
    assert link.wait_ready(5)
    info = link.info()
    assert info["reconnects"] >= 1 and info["port"] == sim.path
    assert link.execute("PING").success
    kinds = [k for k, _ in events]
    assert "disconnected" in kinds and kinds[-1] == "connected"
    assert len(cmds(sim, "SCAN_QRCODE")) == 1, "never re-sent after the reconnect"


def test_background_connect_when_robot_appears_later(tmp_path, make_link) -> None:
    path = str(tmp_path / "later")
    lk = make_link(path)
    lk.start(require_connection=False)
    assert not lk.ready and "no such device" in lk.info()["error"]
    simulator = RobotSimulator(SPEED, link_path=path)
    simulator.start()
    try:
        assert lk.wait_ready(5)
        assert lk.execute("PING").success
    finally:
        lk.stop()
        simulator.stop()


# -- start-up errors -----------------------------------------------------------------------
def test_second_link_on_same_port_is_busy(link: RobotLink, sim: RobotSimulator,
                                          make_link) -> None:
    other = make_link(sim.path)
    with pytest.raises(RobotLinkError, match="busy"):
        other.start()
    assert link.execute("PING").success


def test_missing_device(make_link) -> None:
    lk = make_link("/dev/does-not-exist-robot")
    with pytest.raises(RobotLinkError) as err:
        lk.start()
    assert str(err.value) == "cannot open /dev/does-not-exist-robot: no such device"


def test_mute_robot_fails_start(sim: RobotSimulator, make_link) -> None:
    sim.set_fault("no_ack")
    lk = make_link(sim.path)
    with pytest.raises(RobotLinkError, match="did not answer PING within 0.5 s"):
        lk.start()
    assert not lk.info()["connected"]
    # The port was released: another link can take it once the robot answers.
    sim.set_fault(None)
    again = make_link(sim.path)
    again.start()
    assert again.ready


def test_stop_is_idempotent_and_ends_execute(link: RobotLink) -> None:
    job = Background(lambda: link.execute(
        "SCAN_QRCODE", {"rack": "A", "positions": list(range(1, 100))}))
    wait_until(lambda: link.info()["lines_in"] >= 3)
    link.stop()
    out = job.join()
    assert out.fault == "disconnected"
    link.stop()
    assert not link.ready and not link.wait_ready(0.01)


# -- the simulator on its own --------------------------------------------------------------
def test_simulator_busy_and_idle_stop(sim: RobotSimulator) -> None:
    with serial.Serial(sim.path, timeout=0.1) as port:
        buf = b""

        def replies(n: int) -> list[dict[str, Any]]:
            nonlocal buf

            def enough() -> bool:
                nonlocal buf
                buf += port.read(port.in_waiting or 1)
                return buf.count(b"\n") >= n
            wait_until(enough)
            lines, buf = buf.split(b"\n")[:n], b"\n".join(buf.split(b"\n")[n:])
            return [json.loads(x) for x in lines]

        port.write(b'{"id":1,"cmd":"STOP"}\n')
        assert replies(2)[1]["message"] == "nothing to stop"
        port.write(b'{"id":2,"cmd":"SCAN_QRCODE","params":{"rack":"A","positions":[1,2,3]}}\n')
        port.write(b'{"id":3,"cmd":"HOME"}\n')
        got = replies(3)
        busy = [m for m in got if m.get("id") == 3 and m["type"] == "result"]
        assert busy and busy[0]["message"] == "busy" and busy[0]["success"] is False


def test_transcript_is_bounded() -> None:
    t = Transcript(limit=10)
    for i in range(25):
        t.add("rx", str(i))
    out = t.export()
    assert [e["line"] for e in out[:5]] == ["0", "1", "2", "3", "4"]
    assert out[5]["dir"] == "note" and "15 lines omitted" in out[5]["line"]
    assert [e["line"] for e in out[6:]] == ["20", "21", "22", "23", "24"]


def test_list_ports_shape() -> None:
    for port in list_ports():
        assert set(port) == {"device", "description", "hwid"}


def test_a_stop_before_the_command_keeps_it_off_the_wire(link: RobotLink,
                                                          sim: RobotSimulator) -> None:
    # The worker reads the epoch before committing `running`; an emergency stop in
    # between must win: the command is refused, not sent after the STOP.
    epoch = link.stop_epoch
    assert link.abort()
    out = link.execute("HOME", stop_epoch=epoch)
    assert out.aborted and not out.success and out.fault is None
    assert out.message.startswith("aborted")
    assert not [c for c in sim.commands() if c.get("cmd") == "HOME"]
    assert out.sent is False
    assert link.execute("HOME", stop_epoch=link.stop_epoch).success
