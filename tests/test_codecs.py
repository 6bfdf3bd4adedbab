"""Codecs fed bytes (no I/O), and loading a lab's codec by ``package.module:ClassName``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from robot.codecs import CodecError, CodecLoadError, Sent, load_codec, wire_value
from robot.codecs.json_codec import JsonCodec
from robot.codecs.text_codec import TextCodec
from tasks.commands import load_commands


@pytest.fixture
def text() -> TextCodec:
    codec = TextCodec()
    codec.set_wire_forms(load_commands(None).wire_forms())
    return codec


def sent(codec: TextCodec, cmd: str, params: dict | None = None) -> Sent:
    return Sent(1, cmd, params or {}, codec.encode_command(1, cmd, params))


def test_text_encodes_from_the_wire_forms(text: TextCodec) -> None:
    # The handshake carries a nonce the firmware echoes (robot/codecs/text_codec.py).
    assert text.encode_command(1, "PING", None) == b"PING 00000001\r\n"
    assert text.encode_command(1, "GET_STATUS", {}) == b"STATUS\r\n"
    assert text.encode_command(1, "SCAN_QRCODE", {"rack": "A", "positions": [1, 2, 3]}) \
        == b"SCAN A 1,2,3\r\n"
    assert text.encode_command(1, "MOVE_TO", {"x": 100.0, "y": -2.5, "z": 0}) \
        == b"MOVE 100 -2.5 0\r\n"
    assert text.encode_command(1, "PICK", {"position": 7}) == b"PICK 7\r\n"
    assert text.encode_stop(9) == b"STOP\r\n"


def test_text_refuses_what_it_cannot_send(text: TextCodec) -> None:
    with pytest.raises(CodecError, match="no wire form"):
        text.encode_command(1, "DISPENSE", {"position": 1})
    with pytest.raises(CodecError, match="ASCII"):
        text.encode_command(1, "SCAN_QRCODE", {"rack": "架", "positions": [1]})
    assert wire_value(True) == "1" and wire_value(0.5) == "0.5" and wire_value([1, 2]) == "1,2"


def test_text_scan_replies(text: TextCodec) -> None:
    scan = sent(text, "SCAN_QRCODE", {"rack": "A", "positions": [1, 10]})
    bottle = text.decode(b"BOTTLE 1 A-01-3c782d", scan)
    assert bottle.kind == "progress" and bottle.total == 2
    assert bottle.item == {"position": 1, "code": "A-01-3c782d", "rack": "A"}
    empty = text.decode(b"BOTTLE 10 EMPTY", scan)
    assert empty.item == {"position": 10, "code": None, "rack": "A"}
    done = text.decode(b"OK SCAN 2", scan)
    assert done.kind == "result" and done.success and done.data == {"scanned_count": 2}
    assert done.message is None  # the link says "SCAN_QRCODE完成", as for JSON robots


@pytest.mark.parametrize("line,kind", [
    (b"BUSY", "heartbeat"), (b"ALARM collision", "alarm"), (b"ERR jammed", "result"),
    (b"OK STOP", "result"), (b"PONG robot 2.1", "result"),
])
def test_text_reply_kinds(text: TextCodec, line: bytes, kind: str) -> None:
    ping = sent(text, "PING")
    assert text.decode(line, ping).kind == kind


def test_text_err_alarm_pong_stop(text: TextCodec) -> None:
    pick = sent(text, "PICK", {"position": 2})
    err = text.decode(b"ERR gripper empty", pick)
    assert err.success is False and err.message == "gripper empty"
    assert text.decode(b"ALARM door open", pick).message == "door open"
    stop = text.decode(b"OK STOP", pick)
    assert stop.to_stop and stop.success
    assert text.decode(b"OK STOP", None).to_stop  # also when idle
    pong = text.decode(b"PONG acme-arm 4.2 build 7", sent(text, "PING"))
    # A firmware that does not echo the nonce: accepted, with the weaker guarantee.
    assert pong.success and pong.data == {"firmware": "acme-arm 4.2 build 7", "echo": False}


def test_text_handshake_names_itself(text: TextCodec) -> None:
    ping = Sent(0x7F3A, "PING", {}, text.encode_command(0x7F3A, "PING", None))
    assert ping.line == b"PING 00007f3a\r\n"
    mine = text.decode(b"PONG 00007f3a simbot 1.0", ping)
    assert mine.kind == "result" and mine.data == {"firmware": "simbot 1.0", "echo": True}
    late = text.decode(b"PONG 00007f39 simbot 1.0", ping)  # an earlier handshake's answer
    assert late.kind == "stray" and "earlier PING" in (late.error or ""), late


def test_text_status_says_idle(text: TextCodec) -> None:
    assert text.says_idle(True, "", {"status": "homed=1 holding=- x=0"}) is True
    assert text.says_idle(True, "", {"status": "state=busy x=1"}) is False
    assert text.says_idle(False, "busy", {}) is False
    assert text.says_idle(False, "unknown command", {}) is None


@pytest.mark.parametrize("line,reason", [
    (b"", "empty"), (b"\xff\xfe", "ASCII"), (b"OK", "without"), (b"BOTTLE x", "BOTTLE"),
    (b"HELLO", "unknown"),
])
def test_text_skips_what_is_not_a_reply(text: TextCodec, line: bytes, reason: str) -> None:
    reply = text.decode(line, sent(text, "PICK", {"position": 2}))
    assert reply.kind == "invalid" and reason in (reply.error or ""), reply


@pytest.mark.parametrize("line,reason", [
    (b"OK PLACE", "does not answer"), (b"PONG x", "does not answer"),
    (b"BOTTLE 1 A-01", "during"), (b"OK STATUS", "does not answer"),
])
def test_text_another_commands_reply_is_stray(text: TextCodec, line: bytes, reason: str) -> None:
    """A well-formed reply to another command: the robot is out of step (robot/link/fit.py)."""
    reply = text.decode(line, sent(text, "PICK", {"position": 2}))
    assert reply.kind == "stray" and reason in (reply.error or ""), reply


def test_text_nothing_in_flight(text: TextCodec) -> None:
    assert text.decode(b"OK PICK", None).kind == "stray"  # the robot is still working
    assert text.decode(b"BUSY", None).kind == "heartbeat"


def test_scan_count_must_be_a_number(text: TextCodec) -> None:
    scan = sent(text, "SCAN_QRCODE", {"rack": "A", "positions": [1]})
    assert text.decode(b"OK SCAN lots", scan).kind == "invalid"


def test_json_alarm_kind() -> None:
    assert JsonCodec().decode(b'{"type":"alarm","message":"estop"}', None).kind == "alarm"


# -- loading ----------------------------------------------------------------------------
@pytest.fixture
def lab_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "lab_codecs.py").write_text(
        "from robot.codec import LineCodec, Reply\n"
        "class Good(LineCodec):\n"
        "    name = 'good'\n"
        "    uses_ids = False\n"
        "    def encode_command(self, msg_id, cmd, params): return cmd.encode() + b'\\n'\n"
        "    def encode_stop(self, msg_id): return b'!\\n'\n"
        "    def decode(self, line, sent): return Reply(kind='heartbeat')\n"
        "class Half(LineCodec):\n"
        "    def encode_command(self, msg_id, cmd, params): return b''\n"
        "class NotACodec:\n"
        "    pass\n"
        "class Explodes(Good):\n"
        "    def __init__(self): raise RuntimeError('no licence key')\n"
        "class BadIds(Good):\n"
        "    uses_ids = 'yes'\n"
        "VALUE = 3\n", encoding="utf-8")
    (tmp_path / "lab_broken.py").write_text("import does_not_exist_anywhere\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "lab_codecs"
    for name in ("lab_codecs", "lab_broken"):
        sys.modules.pop(name, None)


def test_builtins_by_name() -> None:
    assert load_codec("json").name == "json" and load_codec("text").name == "text"


def test_a_lab_codec_by_module_and_class(lab_module: str) -> None:
    codec = load_codec(f"{lab_module}:Good")
    assert codec.name == "good" and codec.uses_ids is False


@pytest.mark.parametrize("spec,words", [
    ("modbus", ["unknown robot protocol 'modbus'", "json, text"]),
    ("lab_broken:X", ["cannot import lab_broken", "does_not_exist_anywhere"]),
    ("no_such_module_xyz:X", ["cannot import no_such_module_xyz"]),
    ("lab_codecs:Missing", ["has no Missing"]),
    ("lab_codecs:VALUE", ["VALUE is not a subclass of robot.codecs.LineCodec"]),
    ("lab_codecs:NotACodec", ["NotACodec is not a subclass"]),
    ("lab_codecs:Half", ["Half does not implement encode_stop, decode"]),
    ("lab_codecs:Explodes", ["Explodes() failed", "no licence key"]),
    ("lab_codecs:BadIds", ["uses_ids must be True or False"]),
])
def test_a_bad_codec_is_one_clear_line(lab_module: str, spec: str, words: list[str]) -> None:
    with pytest.raises(CodecLoadError) as info:
        load_codec(spec)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_text_refuses_a_word_with_a_space(text: TextCodec) -> None:
    with pytest.raises(CodecError, match="contains a space"):
        text.encode_command(1, "SCAN_QRCODE", {"rack": "A B", "positions": [1]})


def test_a_wire_codec_needs_a_wire_form_for_every_command_with_params() -> None:
    from robot import RobotLinkError, make_codec

    with pytest.raises(RobotLinkError, match="has none for DISPENSE"):
        make_codec("text", {"PICK": "PICK {position}"}, ("PICK", "DISPENSE"))
    assert make_codec("json", {}, ("DISPENSE",)).name == "json"  # JSON carries params itself
