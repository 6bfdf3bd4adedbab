"""The G-code-like example: its codec and simulator pass the codec contract, loaded as a
lab loads it (``package.module:ClassName``); the codec fed bytes; a scan through the server."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.gcode_robot.gcode_codec import GcodeCodec
from examples.gcode_robot.gcode_sim import JUNK, GcodeSimulator
from robot import RobotLink
from robot.codecs import CodecError, Sent, load_codec
from robot.sim.channels import pty_available
from tasks.commands import load_commands
from tests.conftest import ROOT, Client
from tests.robot_contract import RobotContract

SPEC = "examples.gcode_robot.gcode_codec:GcodeCodec"
needs_pty = pytest.mark.skipif(not pty_available(), reason="the simulator needs a pty")


def new_simulator(tmp_path: Path) -> GcodeSimulator:
    # Reached through a symlink, like /dev/serial/by-id: the path outlives each pty.
    return GcodeSimulator(1000.0, link_path=str(tmp_path / "robot"), heartbeat_s=0.05)


@needs_pty
class TestGcodeContract(RobotContract):
    protocol = SPEC

    def make_simulator(self, tmp_path: Path) -> Any:
        return new_simulator(tmp_path)


@needs_pty
class TestGcodeContractLateStopReply(RobotContract):
    """M410's bare "ok" 50 ms after "error: aborted": with no ids, only waiting for it
    keeps it from being read as the next command's result."""

    protocol = SPEC

    def make_simulator(self, tmp_path: Path) -> Any:
        sim = new_simulator(tmp_path)
        sim.stop_reply_delay = 0.05
        return sim


# -- the codec, fed bytes ---------------------------------------------------------------------
@pytest.fixture
def codec() -> GcodeCodec:
    codec = load_codec(SPEC)
    assert isinstance(codec, GcodeCodec)
    codec.set_wire_forms(load_commands(None).wire_forms())  # as the server does: ignored
    return codec


def sent(codec: GcodeCodec, cmd: str, params: dict[str, Any] | None = None) -> Sent:
    return Sent(1, cmd, params or {}, codec.encode_command(1, cmd, params))


def test_encodes_gcode_not_the_tables_wire_forms(codec: GcodeCodec) -> None:
    assert codec.encode_command(1, "SCAN_QRCODE", {"rack": "A", "positions": [1, 2, 3]}) \
        == b"M950 RA P1,2,3\n"
    assert codec.encode_command(1, "MOVE_TO", {"x": 100.0, "y": -2.5, "z": 0}) \
        == b"G0 X100 Y-2.5 Z0\n"
    assert codec.encode_command(1, "PICK", {"position": 7}) == b"M951 P7\n"
    assert codec.encode_command(1, "HOME", None) == b"G28\n"
    assert codec.encode_command(1, "PING", None) == b"M115\n"
    assert codec.encode_stop(9) == b"M410\n"


@pytest.mark.parametrize("rack", ["A B", "A;x", "架"])
def test_refuses_what_the_robot_would_misread(codec: GcodeCodec, rack: str) -> None:
    with pytest.raises(CodecError, match="ASCII words"):
        codec.encode_command(1, "SCAN_QRCODE", {"rack": rack, "positions": [1]})


def test_refuses_a_command_it_has_no_gcode_for(codec: GcodeCodec) -> None:
    with pytest.raises(CodecError, match="no G-code"):
        codec.encode_command(1, "DISPENSE", {"position": 1, "volume_ul": 5})


def test_decodes_a_scan(codec: GcodeCodec) -> None:
    scan = sent(codec, "SCAN_QRCODE", {"rack": "A", "positions": [1, 2, 10]})
    bottle = codec.decode(b"bottle: 2 A-02-8ac019", scan)
    assert bottle.kind == "progress" and bottle.total == 3
    assert bottle.item == {"position": 2, "code": "A-02-8ac019", "rack": "A"}
    assert codec.decode(b"bottle: 10 none\r", scan).item == {"position": 10, "code": None,
                                                             "rack": "A"}
    assert codec.decode(b"busy: processing", scan).kind == "heartbeat"
    done = codec.decode(b"ok", scan)
    assert done.kind == "result" and done.success and done.data == {} and not done.message
    aborted = codec.decode(b"error: aborted", scan)
    assert aborted.kind == "result" and aborted.success is False
    assert aborted.message == "aborted"


def test_decodes_answers_and_alarms(codec: GcodeCodec) -> None:
    ping = codec.decode(b"ok FIRMWARE_NAME:acme-gcode 2.0", sent(codec, "PING"))
    assert ping.success and ping.data == {"firmware": "acme-gcode 2.0"}
    status = codec.decode(b"ok X:0 Y:0 Z:0", sent(codec, "GET_STATUS"))
    assert status.success and status.data == {"status": "X:0 Y:0 Z:0"}
    assert codec.decode(b"ok", sent(codec, "HOME")).success
    alarm = codec.decode(b"!! endstop hit", None)
    assert alarm.kind == "alarm" and alarm.message == "endstop hit"
    # With nothing in flight an ok is a result all the same: the driver knows whether a
    # STOP is waiting for it.
    assert codec.decode(b"ok", None).kind == "result"


@pytest.mark.parametrize("line", [j.rstrip(b"\n") for j in JUNK] + [
    b"", b"OK", b"error", b"bottle: 2", b"busy processing"])
def test_junk_is_invalid(codec: GcodeCodec, line: bytes) -> None:
    scan = sent(codec, "SCAN_QRCODE", {"rack": "A", "positions": [1, 2, 3]})
    assert codec.decode(line, scan).kind == "invalid"


def test_a_bottle_is_invalid_outside_a_scan(codec: GcodeCodec) -> None:
    assert codec.decode(b"bottle: 2 A-02-8ac019", sent(codec, "HOME")).kind == "invalid"
    assert codec.decode(b"bottle: 2 A-02-8ac019", None).kind == "invalid"


# -- through the real server ------------------------------------------------------------------
@pytest.fixture
def gcode_robot(tmp_path: Path) -> Iterator[GcodeSimulator]:
    sim = new_simulator(tmp_path)
    sim.start()
    yield sim
    sim.stop()


@needs_pty
def test_a_move_shows_in_the_status(gcode_robot: GcodeSimulator) -> None:
    link = RobotLink(gcode_robot.path, codec=load_codec(SPEC), robot_timeout=2.0,
                     handshake_timeout=1.0)
    link.start()
    try:
        assert link.info()["firmware"] == "acme-gcode 2.0"
        assert link.execute("MOVE_TO", {"x": 100.0, "y": -2.5, "z": 0}).success
        status = link.execute("GET_STATUS")
        assert status.success and status.data == {"status": "X:100 Y:-2.5 Z:0"}, status
        assert [c["line"] for c in gcode_robot.commands()] == ["M115", "G0 X100 Y-2.5 Z0",
                                                                "M114"]
    finally:
        link.stop()


@needs_pty
def test_the_guides_scan_through_the_server(gcode_robot: GcodeSimulator,
                                            make_server: Callable[..., Any]) -> None:
    client = Client(make_server(robot=gcode_robot.path, robot_protocol=SPEC))
    with open(os.path.join(ROOT, "SCAN_QR_CODE_command.json"), encoding="utf-8") as fh:
        task_id = client.submit(json.load(fh))
    doc = client.wait_final(task_id)
    assert doc["status"] == "completed", doc
    assert doc["result"]["scanned_count"] == 3, doc
    assert [b["position"] for b in doc["result"]["scanned_bottles"]] == [1, 2, 3]
    assert "M950 RA P1,2,3" in [c["line"] for c in gcode_robot.commands()]


def test_m115_must_name_the_firmware(codec: GcodeCodec) -> None:
    # A STOP's late bare "ok" during the handshake must not pass for M115's answer.
    assert codec.decode(b"ok", sent(codec, "PING")).kind == "invalid"
