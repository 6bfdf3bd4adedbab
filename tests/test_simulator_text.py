"""The simulator's ``text`` protocol line by line over a real pty (and the "alarm" fault
in JSON): what a text firmware author and the text codec can rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import serial

from robot.sim.simulator import RobotSimulator, qr_code
from robot.sim.wire import TEXT_GARBAGE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEED = 200.0  # HOME 15 ms, a bottle 100 ms
TERMINAL = (b"OK", b"ERR", b"PONG", b"ALARM")
DISPENSE_BAD = "ERR bad params: DISPENSE needs an integer position and a number volume_ul > 0"


class Wire:
    """The host end of the pty: raw writes, reads of whole lines with a deadline."""

    def __init__(self, path: str, newline: bytes = b"\r\n") -> None:
        self.port = serial.serial_for_url(path, 115200, timeout=0.02)
        self.newline = newline
        self.buf = b""

    def send(self, line: str | bytes, end: bytes = b"\r\n") -> None:
        self.port.write((line.encode() if isinstance(line, str) else line) + end)

    def line(self, timeout: float = 5.0) -> bytes | None:
        """The next line without its terminator, None if none came within ``timeout``."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if time.monotonic() > deadline:
                return None
            self.buf += self.port.read(self.port.in_waiting or 1)
        line, self.buf = self.buf.split(b"\n", 1)
        assert (line + b"\n").endswith(self.newline), f"not ended by {self.newline!r}: {line!r}"
        return line.removesuffix(b"\r")

    def until(self, done: Callable[[bytes], bool], timeout: float = 5.0) -> list[bytes]:
        """Every line up to and including the first one ``done`` accepts."""
        lines: list[bytes] = []
        deadline = time.monotonic() + timeout
        while True:
            line = self.line(max(deadline - time.monotonic(), 0.0))
            assert line is not None, f"timed out; got {lines!r}"
            lines.append(line)
            if done(line):
                return lines

    def replies(self, last: str | None = None, timeout: float = 5.0) -> list[str]:
        """The lines other than BUSY up to ``last`` (default: the first ending one)."""
        def done(line: bytes) -> bool:
            return line == last.encode() if last else line.split(b" ")[0] in TERMINAL
        return [x.decode() for x in self.until(done, timeout) if x != b"BUSY"]

    def silent(self, seconds: float) -> bool:
        return self.line(seconds) is None


@pytest.fixture
def make_sim() -> Iterator[Callable[..., tuple[RobotSimulator, Wire]]]:
    started: list[tuple[RobotSimulator, Wire]] = []

    def factory(protocol: str = "text", speed: float = SPEED, fault: str | None = None
                ) -> tuple[RobotSimulator, Wire]:
        sim = RobotSimulator(speed, heartbeat_s=0.05, protocol=protocol)
        sim.start()
        sim.set_fault(fault)
        started.append((sim, Wire(sim.path, b"\r\n" if protocol == "text" else b"\n")))
        return started[-1]

    yield factory
    for sim, wire in started:
        wire.port.close()
        sim.stop()


def test_each_command_gets_its_reply_line(make_sim) -> None:
    sim, w = make_sim()
    w.send(b"\xff\xfe noise")  # not ASCII: dropped without a word
    w.send("PING")
    assert w.replies() == ["PONG robot-sim 1.0"]
    assert sim.commands()[-1] == {"id": None, "cmd": "PING", "params": {}, "line": "PING"}
    w.send("STATUS")
    assert w.replies() == ["OK STATUS homed=0 holding=- x=0 y=0 z=0"]
    for line, reply in [("HOME", "OK HOME"), ("MOVE 1.5 -2 3e1", "OK MOVE"),
                        ("PICK 7", "OK PICK"), ("PLACE 8", "OK PLACE"), ("PICK 9", "OK PICK"),
                        ("DISPENSE 4 2.5", "OK DISPENSE"), ("DISPENSE 5 100", "OK DISPENSE")]:
        w.send(line, end=b"\n")  # a host may end its lines with LF alone
        assert w.replies() == [reply], line
    w.send("STATUS")
    assert w.replies() == ["OK STATUS homed=1 holding=9 x=1.5 y=-2 z=30"]
    got = {c["line"]: (c["cmd"], c["params"]) for c in sim.commands()}
    assert got["MOVE 1.5 -2 3e1"] == ("MOVE_TO", {"x": 1.5, "y": -2.0, "z": 30.0})
    assert got["PICK 7"] == ("PICK", {"position": 7})
    assert got["DISPENSE 4 2.5"] == ("DISPENSE", {"position": 4, "volume_ul": 2.5})
    assert got["DISPENSE 5 100"] == ("DISPENSE", {"position": 5, "volume_ul": 100})
    assert got["STATUS"] == ("GET_STATUS", {})


def test_scan_sends_a_bottle_line_per_position_and_empty_slots(make_sim) -> None:
    sim, w = make_sim()
    w.send("SCAN A 1,10,2")
    assert w.replies() == [f"BOTTLE 1 {qr_code('A', 1)}", "BOTTLE 10 EMPTY",
                           f"BOTTLE 2 {qr_code('A', 2)}", "OK SCAN 3"]
    assert sim.commands()[-1]["cmd"] == "SCAN_QRCODE"
    assert sim.commands()[-1]["params"] == {"rack": "A", "positions": [1, 10, 2]}


@pytest.mark.parametrize(("line", "reply"), [
    ("FOO 1", "ERR unknown command FOO"),
    ("PICK x", "ERR bad params: PICK needs an integer position"),
    ("PLACE", "ERR bad params: PLACE needs an integer position"),
    ("MOVE 1 2", "ERR bad params: MOVE needs numbers x y z"),
    ("MOVE 1 2 nan", "ERR bad params: MOVE needs numbers x y z"),
    ("SCAN A 1,,2", "ERR bad params: SCAN needs a rack and positions p1,p2,..."),
    ("HOME now", "ERR bad params: HOME takes no arguments"),
    ("DISPENSE 4 0", DISPENSE_BAD),
    ("DISPENSE 4 lots", DISPENSE_BAD),
])
def test_a_line_it_cannot_use_gets_err(make_sim, line: str, reply: str) -> None:
    sim, w = make_sim()
    w.send(line)
    assert w.replies() == [reply]
    assert sim.commands()[-1]["line"] == line
    w.send("PING")
    assert w.replies() == ["PONG robot-sim 1.0"]


def test_stop_while_scanning_confirms_first_then_aborts(make_sim) -> None:
    sim, w = make_sim(speed=40.0)  # half a second a bottle: the STOP lands mid-scan
    w.send("SCAN B 1,2,3,4,5")
    assert w.replies(last=f"BOTTLE 1 {qr_code('B', 1)}") == [f"BOTTLE 1 {qr_code('B', 1)}"]
    w.send("STOP")
    assert w.replies(last="ERR ABORTED") == ["OK STOP", "ERR ABORTED"]
    assert sim.commands()[-1] == {"id": None, "cmd": "STOP", "params": {}, "line": "STOP"}
    w.send("PING")
    assert w.replies() == ["PONG robot-sim 1.0"]


def test_stop_while_idle_and_a_command_while_busy(make_sim) -> None:
    _, w = make_sim(speed=40.0)
    w.send("STOP")
    assert w.replies() == ["OK STOP"]
    w.send("SCAN B 1,2,3")
    w.send("HOME")
    assert w.replies() == ["ERR busy"]
    w.send("STOP")
    assert w.replies(last="ERR ABORTED") == ["OK STOP", "ERR ABORTED"]


def test_busy_lines_while_a_long_command_runs(make_sim) -> None:
    _, w = make_sim(speed=4.0)  # MOVE takes 0.5 s: about ten heartbeats
    w.send("MOVE 1 2 3")
    lines = w.until(lambda x: x.startswith(b"OK"))
    assert lines[-1] == b"OK MOVE"
    assert set(lines[:-1]) == {b"BUSY"} and len(lines) > 5


def test_garbage_hides_every_reply_between_junk_lines(make_sim) -> None:
    _, w = make_sim(fault="garbage")
    junk = {line.rstrip(b"\r\n") for line, _ in TEXT_GARBAGE}
    positions = range(1, len(TEXT_GARBAGE) + 1)  # enough lines for every junk shape
    w.send("SCAN A " + ",".join(map(str, positions)))
    lines = w.until(lambda x: x.startswith(b"OK SCAN"))
    real = [x for x in lines if x not in junk]
    assert [x for x in real if x != b"BUSY"] == [
        *(f"BOTTLE {p} {qr_code('A', p)}".encode() for p in positions),
        f"OK SCAN {len(positions)}".encode()]
    assert len(lines) == 2 * len(real)  # one junk line before every real one
    assert set(lines) & junk == junk
    # A full turn of the junk list per command: "OK PICK" never comes while a PICK runs
    # (it would end it), nor "PONG stale" during a PING.
    for line, reply, never in (("PICK 1", b"OK PICK", b"OK PICK"),
                               ("PING", b"PONG robot-sim 1.0", b"PONG stale")):
        for _ in TEXT_GARBAGE:
            w.send(line)
            lines = w.until(lambda x, reply=reply: x == reply)
            assert lines[:-1] and set(lines[:-1]) <= (junk | {b"BUSY"}) - {never}, lines


def test_hang_after_ack_says_nothing_even_to_stop(make_sim) -> None:
    sim, w = make_sim(fault="hang_after_ack")
    w.send("HOME")
    assert sim.wait_for_command(lambda c: c["cmd"] == "HOME", 5)
    assert w.silent(0.3)
    w.send("STOP")
    assert sim.wait_for_command(lambda c: c["cmd"] == "STOP", 5)
    assert w.silent(0.3)
    sim.set_fault(None)
    w.send("PING")
    assert w.replies() == ["PONG robot-sim 1.0"]


def test_no_ack_ignores_every_line(make_sim) -> None:
    sim, w = make_sim(fault="no_ack")
    w.send("PING")
    w.send("STOP")
    assert sim.wait_for_command(lambda c: c["cmd"] == "STOP", 5)
    assert w.silent(0.3)
    sim.set_fault(None)
    w.send("PING")
    assert w.replies() == ["PONG robot-sim 1.0"]


def test_fail_ends_motion_with_err(make_sim) -> None:
    _, w = make_sim(fault="fail")
    for line in ("PICK 1", "SCAN A 1", "DISPENSE 2 5"):
        w.send(line)
        assert w.replies() == ["ERR simulated failure"], line
    w.send("PING")
    assert w.replies() == ["PONG robot-sim 1.0"]


def test_heartbeat_only_sends_busy_and_no_bottle(make_sim) -> None:
    _, w = make_sim(fault="heartbeat_only")
    w.send("SCAN A 1")
    lines = w.until(lambda x: x.startswith(b"OK"))
    assert lines[-1] == b"OK SCAN 1"
    assert set(lines[:-1]) == {b"BUSY"} and len(lines) > 5


def test_alarm_abandons_the_command_and_leaves_the_robot_idle(make_sim) -> None:
    sim, w = make_sim(fault="alarm")
    w.send("SCAN A 1,2,3")
    assert w.replies() == [f"BOTTLE 1 {qr_code('A', 1)}", "ALARM collision detected"]
    assert w.silent(0.3)  # no second bottle, no OK SCAN, no BUSY
    w.send("HOME")
    assert w.replies() == ["ALARM collision detected"]
    w.send("STOP")
    assert w.replies() == ["OK STOP"]
    sim.set_fault(None)
    w.send("PICK 2")
    assert w.replies() == ["OK PICK"]


def test_json_alarm_dispense_and_empty_slot(make_sim) -> None:
    sim, w = make_sim(protocol="json", fault="alarm")

    def exchange(cmd: dict[str, Any], last: str) -> list[dict[str, Any]]:
        w.send(json.dumps(cmd), end=b"\n")
        msgs = [json.loads(x) for x in w.until(lambda x: json.loads(x)["type"] == last)]
        return [m for m in msgs if m["type"] != "heartbeat"]

    alarm = {"type": "alarm", "message": "collision detected"}
    assert exchange({"id": 1, "cmd": "HOME"}, "alarm") == [{"id": 1, "type": "ack"}, alarm]
    got = exchange({"id": 2, "cmd": "SCAN_QRCODE", "params": {"rack": "A", "positions": [10, 2]}},
                   "alarm")
    assert got[0] == {"id": 2, "type": "ack"} and got[2] == alarm and len(got) == 3
    assert got[1]["item"] == {"position": 10, "code": None, "rack": "A"}
    assert w.silent(0.3)
    sim.set_fault(None)
    got = exchange({"id": 3, "cmd": "DISPENSE", "params": {"position": 3, "volume_ul": 50}},
                   "result")
    assert got[-1] == {"id": 3, "type": "result", "success": True, "message": "DISPENSE完成",
                       "data": {"position": 3, "volume_ul": 50}}
    got = exchange({"id": 4, "cmd": "DISPENSE", "params": {"position": 3, "volume_ul": -1}},
                   "result")
    assert got[-1]["success"] is False and got[-1]["message"].startswith("bad params")


def test_protocol_argument_and_flag(tmp_path) -> None:
    with pytest.raises(ValueError, match="protocol"):
        RobotSimulator(protocol="xml")
    proc = subprocess.Popen([sys.executable, "-m", "robot.sim", "--protocol", "text",
                             "--speed", "200"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        path = proc.stdout.readline().strip()
        w = Wire(path)
        w.send("PING")
        assert w.replies() == ["PONG robot-sim 1.0"]
        w.port.close()
    finally:
        proc.terminate()
        proc.wait(10)
