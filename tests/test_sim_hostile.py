"""The simulator's hostile fault modes ("flood", "noise", "deep_result") over a real pty,
read by a raw pyserial host: rates, what follows them, STOP and shutdown while they run."""

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

from robot.sim.simulator import RobotSimulator
from tests.conftest import ROOT, wait_until

SPEED = 200.0  # HOME 15 ms after the flood or noise
HOME = {"id": 7, "cmd": "HOME"}


def event(line: bytes) -> dict[str, Any] | None:
    """The message a line is, None for noise (random bytes may happen to be JSON: a
    message is an object with a type)."""
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) and "type" in obj else None


class Host:
    """The host end of the pty: raw writes, whole lines stamped with their arrival time."""

    def __init__(self, path: str) -> None:
        self.port = serial.serial_for_url(path, 115200, timeout=0.02)
        self.buf = b""

    def send(self, obj: dict[str, Any] | str) -> None:
        text = obj if isinstance(obj, str) else json.dumps(obj)
        self.port.write(text.encode() + b"\n")

    def line(self, timeout: float) -> tuple[float, bytes] | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if time.monotonic() > deadline:
                return None
            self.buf += self.port.read(self.port.in_waiting or 1)
        line, self.buf = self.buf.split(b"\n", 1)
        return time.monotonic(), line.removesuffix(b"\r")

    def until(self, done: Callable[[bytes], bool], timeout: float = 5.0
              ) -> list[tuple[float, bytes]]:
        """Every line up to and including the first one ``done`` accepts."""
        lines: list[tuple[float, bytes]] = []
        deadline = time.monotonic() + timeout
        while True:
            got = self.line(max(deadline - time.monotonic(), 0.0))
            assert got is not None, f"timed out after {len(lines)} lines: {lines[-3:]!r}"
            lines.append(got)
            if done(got[1]):
                return lines


def result_of(msg_id: int) -> Callable[[bytes], bool]:
    def done(line: bytes) -> bool:
        obj = event(line)
        return obj is not None and obj.get("type") == "result" and obj.get("id") == msg_id
    return done


@pytest.fixture
def make_sim() -> Iterator[Callable[..., tuple[RobotSimulator, Host]]]:
    started: list[tuple[RobotSimulator, Host]] = []

    def factory(fault: str, protocol: str = "json", **settings: Any
                ) -> tuple[RobotSimulator, Host]:
        sim = RobotSimulator(SPEED, heartbeat_s=0.05, protocol=protocol)
        for name, value in settings.items():
            assert hasattr(sim, name), name
            setattr(sim, name, value)
        sim.start()
        sim.set_fault(fault)
        started.append((sim, Host(sim.path)))
        return started[-1]

    yield factory
    for sim, host in started:
        host.port.close()
        sim.stop()


def flood_lines(lines: list[tuple[float, bytes]]) -> list[tuple[float, dict[str, Any]]]:
    out = []
    for at, line in lines:
        obj = event(line)
        if obj and obj["type"] == "progress" and str(obj.get("message")).startswith("flood "):
            out.append((at, obj))
    return out


def test_flood_at_its_rate_then_the_normal_result(make_sim) -> None:
    sim, host = make_sim("flood", flood_rate=500, flood_seconds=1.0)
    host.send(HOME)
    lines = host.until(result_of(7))
    assert event(lines[0][1]) == {"id": 7, "type": "ack"}
    flood = flood_lines(lines)
    assert flood[0][1] == {"id": 7, "type": "progress", "done": 1, "total": None,
                           "message": "flood 1"}
    assert [obj["done"] for _, obj in flood] == list(range(1, len(flood) + 1))
    assert all(obj["id"] == 7 and "item" not in obj for _, obj in flood)
    span = flood[-1][0] - flood[0][0]
    rate = (len(flood) - 1) / span
    print(f"flood: {len(flood)} lines in {span:.3f} s = {rate:.0f} lines/s (asked 500)")
    assert 425 <= len(flood) <= 575
    assert 0.85 * 500 <= rate <= 1.15 * 500
    result = event(lines[-1][1])
    assert result is not None
    assert result["success"] is True and result["message"] == "HOME完成"
    assert result["data"] == {"position": {"x": 0.0, "y": 0.0, "z": 0.0}}
    # The flood was over before the command itself ran: nothing of it after the result.
    assert host.line(0.2) is None


def test_flood_items_and_settings_read_when_the_command_starts(make_sim) -> None:
    sim, host = make_sim("flood", flood_rate=400, flood_seconds=0.25, flood_items=True)
    host.send({"id": 7, "cmd": "MOVE_TO", "params": {"x": 1, "y": 2, "z": 3}})
    host.until(lambda line: bool(flood_lines([(0.0, line)])))
    sim.flood_items = False  # too late for the running command
    lines = host.until(result_of(7))
    flood = flood_lines(lines)
    assert len(flood) >= 80
    assert all(obj["item"] == {"flood": obj["done"]} for _, obj in flood)
    result = event(lines[-1][1])
    assert result is not None and result["success"] is True
    assert result["data"]["position"] == {"x": 1.0, "y": 2.0, "z": 3.0}


def test_noise_at_its_rate_then_a_clean_result(make_sim) -> None:
    sim, host = make_sim("noise", noise_rate=100_000, noise_seconds=1.0)
    host.send(HOME)
    lines = host.until(result_of(7))
    assert event(lines[0][1]) == {"id": 7, "type": "ack"}
    noise = [(at, line) for at, line in lines[1:-1] if event(line) is None]
    received = sum(len(line) + 1 for _, line in noise)  # + the newline split off
    span = noise[-1][0] - noise[0][0]
    print(f"noise: {received} bytes in {span:.3f} s = {received / span:.0f} B/s "
          "(asked 100000)")
    assert 85_000 <= received <= 115_000
    assert 0.85 * 100_000 <= received / span <= 1.15 * 100_000
    # Heartbeats still came between the chunks, each a line of its own.
    assert any(event(line) == {"type": "heartbeat"} for _, line in lines[1:-1])
    result = json.loads(lines[-1][1])
    assert result == {"id": 7, "type": "result", "success": True, "message": "HOME完成",
                      "data": {"position": {"x": 0.0, "y": 0.0, "z": 0.0}}}


def test_deep_result_is_one_line_nested_deep_levels_deep(make_sim) -> None:
    sim, host = make_sim("deep_result")
    assert sim.deep_levels == 985
    host.send(HOME)
    # json.loads cannot tell: it gives up on this line (that is the point of the mode).
    lines = host.until(lambda line: line.startswith(b'{"id":7,"type":"result"'))
    line = lines[-1][1].decode()
    head, sep, rest = line.partition('"nested":')
    assert sep
    depth = len(rest) - len(rest.lstrip("["))
    assert depth == 985
    assert rest.startswith("[" * depth + "1" + "]" * depth)
    # The rest of the line is the normal result.
    result = json.loads(head + '"nested":0' + rest[2 * depth + 1:])
    assert result["success"] is True and result["message"] == "HOME完成"
    assert result["data"] == {"position": {"x": 0.0, "y": 0.0, "z": 0.0}, "nested": 0}
    assert len(line) < 2 * 985 + 200


def test_deep_result_small_depth_parses_and_ping_stays_plain(make_sim) -> None:
    sim, host = make_sim("deep_result", deep_levels=3)
    host.send({"id": 5, "cmd": "PING"})
    ping = event(host.until(result_of(5))[-1][1])
    assert ping is not None and "nested" not in ping["data"]  # the handshake still works
    host.send(HOME)
    result = event(host.until(result_of(7))[-1][1])
    assert result is not None and result["data"]["nested"] == [[[1]]]


@pytest.mark.parametrize("fault", ["flood", "noise"])
def test_stop_ends_it_at_once_with_the_usual_abort(make_sim, fault: str) -> None:
    sim, host = make_sim(fault, flood_rate=1000, flood_seconds=20, noise_rate=100_000,
                         noise_seconds=20)
    host.send(HOME)
    host.until(lambda line: event(line) is None or event(line)["type"] == "progress")
    sent = time.monotonic()
    host.send({"id": 8, "cmd": "STOP"})
    lines = host.until(result_of(8), timeout=3.0)
    aborted = [event(line) for _, line in lines if result_of(7)(line)]
    assert aborted == [{"id": 7, "type": "result", "success": False, "message": "aborted",
                        "data": {"completed": False}}]
    took = lines[-1][0] - sent
    print(f"{fault}: STOP answered after {took * 1000:.0f} ms")
    assert took < 1.0
    stop = event(lines[-1][1])
    assert stop is not None and stop["success"] is True
    # Over: the robot is idle again, nothing more of the flood or noise comes.
    assert host.line(0.3) is None


def test_simulator_stop_is_prompt_while_a_flood_fills_an_unread_pty(make_sim) -> None:
    sim, host = make_sim("flood", flood_rate=100_000, flood_seconds=20)
    host.send(HOME)
    wait_until(lambda: sim.wait_for_command(lambda c: c.get("id") == 7, 0) is not None,
               timeout=5.0, message="HOME received")
    # The host reads nothing: the pty fills, and the flood's writes block.
    # (A Linux pty holds 4095 bytes.)
    wait_until(lambda: host.port.in_waiting >= 4000, timeout=5.0, message="a full pty")
    job = sim._job
    assert job is not None and job.thread is not None
    began = time.monotonic()
    sim.stop()
    took = time.monotonic() - began
    print(f"stop() during a blocked flood: {took * 1000:.0f} ms")
    assert took < 2.5
    assert not job.thread.is_alive()


def test_text_protocol_gets_the_noise_but_no_flood(make_sim) -> None:
    sim, host = make_sim("noise", protocol="text", noise_rate=50_000, noise_seconds=0.3)
    host.send("HOME")
    lines = host.until(lambda line: line == b"OK HOME")
    noise = sum(len(line) + 1 for _, line in lines if line not in (b"BUSY", b"OK HOME"))
    assert noise >= 10_000
    sim.set_fault("flood")
    sim.flood_seconds = 0.3
    host.send("HOME")
    assert [line for _, line in host.until(lambda line: line == b"OK HOME")
            if line != b"BUSY"] == [b"OK HOME"]


@pytest.mark.parametrize(("flags", "check"), [
    (["--fault", "flood", "--flood-rate", "200", "--flood-seconds", "0.5", "--flood-items"],
     "flood"),
    (["--fault", "noise", "--noise-rate", "20000", "--noise-seconds", "0.5"], "noise"),
    (["--fault", "deep_result", "--deep-levels", "4"], "deep"),
])
def test_command_line_flags_reach_the_simulator(flags: list[str], check: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "robot.sim", "--speed", str(SPEED),
                             "--heartbeat", "0.05", *flags],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert proc.stdout is not None
        host = Host(proc.stdout.readline().strip())
        host.send(HOME)
        lines = host.until(result_of(7))
        result = event(lines[-1][1])
        assert result is not None and result["success"] is True
        if check == "flood":
            flood = flood_lines(lines)
            assert 85 <= len(flood) <= 115
            assert flood[-1][1]["item"] == {"flood": flood[-1][1]["done"]}
        elif check == "noise":
            noise = sum(len(line) + 1 for _, line in lines if event(line) is None)
            assert 8_500 <= noise <= 11_500
        else:
            assert result["data"]["nested"] == [[[[1]]]]
        host.port.close()
    finally:
        proc.terminate()
        proc.wait(10)
