"""The wire protocol without I/O: framing, encoding, parsing, ids."""

from __future__ import annotations

import json
import threading

import pytest

from robot.codecs.framing import IdGenerator, LineFramer
from robot.codecs.json_codec import encode_json_command as encode_command
from robot.codecs.json_codec import parse_json_line as parse_line
from robot.sim.simulator import qr_code


def test_framer_whole_lines_and_crlf() -> None:
    f = LineFramer()
    assert f.feed(b'{"a":1}\n{"b":2}\r\n') == [b'{"a":1}', b'{"b":2}']
    assert f.pending == 0


def test_framer_partial_lines_fed_byte_by_byte() -> None:
    f = LineFramer()
    data = b'{"id":5,"type":"ack"}\r\n{"type":"heartbeat"}\n'
    out: list[bytes] = []
    for i in range(len(data)):
        out += f.feed(data[i:i + 1])
    assert out == [b'{"id":5,"type":"ack"}', b'{"type":"heartbeat"}']


def test_framer_keeps_partial_line_until_newline() -> None:
    f = LineFramer()
    assert f.feed(b'{"id":1,') == []
    assert f.feed(b'"type":"ack"}') == []
    assert f.feed(b"\n") == [b'{"id":1,"type":"ack"}']


def test_framer_only_strips_one_trailing_cr() -> None:
    f = LineFramer()
    assert f.feed(b"abc\r\r\n") == [b"abc\r"]
    assert f.feed(b"\n") == [b""]


def test_framer_drops_overlong_line_in_one_chunk() -> None:
    f = LineFramer(max_line=10)
    assert f.feed(b"x" * 11 + b"\nok\n") == [b"ok"]
    assert f.dropped == 1


def test_framer_drops_overlong_line_arriving_in_pieces() -> None:
    f = LineFramer(max_line=10)
    assert f.feed(b"x" * 8) == []
    assert f.feed(b"x" * 8) == []  # over the cap: counted now, buffer freed
    assert f.dropped == 1
    assert f.pending == 0
    assert f.feed(b"y" * 100) == []  # still the same long line
    assert f.feed(b"tail\nnext\n") == [b"next"]
    assert f.dropped == 1


def test_framer_reset_forgets_partial() -> None:
    f = LineFramer()
    f.feed(b'{"half')
    f.reset()
    assert f.feed(b'{"type":"heartbeat"}\n') == [b'{"type":"heartbeat"}']


def test_encode_command_compact_utf8() -> None:
    line = encode_command(7, "SCAN_QRCODE", {"rack": "架A", "positions": [1, 2]})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert "架A".encode() in line
    assert json.loads(line) == {"id": 7, "cmd": "SCAN_QRCODE",
                                "params": {"rack": "架A", "positions": [1, 2]}}
    assert b" " not in line
    assert json.loads(encode_command(8, "PING", None)) == {"id": 8, "cmd": "PING"}


def test_encode_rejects_nan() -> None:
    with pytest.raises(ValueError):
        encode_command(1, "MOVE_TO", {"x": float("nan"), "y": 0, "z": 0})


@pytest.mark.parametrize("line,kind,msg_id", [
    (b'{"id":3,"type":"ack"}', "ack", 3),
    (b'{"id":3,"type":"progress","done":1,"total":2,"message":"m","item":{"p":1}}',
     "progress", 3),
    (b'{"id":3,"type":"result","success":true,"message":"ok","data":{}}', "result", 3),
    (b'{"id":3,"type":"result","success":false}', "result", 3),
    (b'{"type":"heartbeat"}', "heartbeat", None),
    (b'{"type":"log","message":"hello"}', "log", None),
    ('{"id":4,"type":"result","success":true,"message":"SCAN_QRCODE完成"}'.encode(),
     "result", 4),
])
def test_parse_valid(line: bytes, kind: str, msg_id: int | None) -> None:
    msg = parse_line(line)
    assert msg.kind == kind, msg.error
    assert msg.id == msg_id
    assert msg.error is None


@pytest.mark.parametrize("line,reason", [
    (b"", "empty"),
    (b"   ", "empty"),
    (b"\xff\xfe", "UTF-8"),
    (b"not json", "not JSON"),
    (b'{"type":"ack","id":', "not JSON"),
    (b"[1,2,3]", "not a JSON object"),
    (b'"str"', "not a JSON object"),
    (b"42", "not a JSON object"),
    (b"null", "not a JSON object"),
    (b'{"id":1}', "unknown type"),
    (b'{"id":1,"type":"teleport"}', "unknown type"),
    (b'{"id":1,"type":7}', "unknown type"),
    (b'{"type":"ack"}', "without id"),
    (b'{"type":"result","success":true}', "without id"),
    (b'{"id":true,"type":"ack"}', "bad id"),
    (b'{"id":"1","type":"ack"}', "bad id"),
    (b'{"id":1.5,"type":"ack"}', "bad id"),
    (b'{"id":NaN,"type":"ack"}', "not JSON"),
    (b'{"id":1,"type":"progress","done":Infinity}', "not JSON"),
    (b'{"id":1,"type":"progress","done":-Infinity}', "not JSON"),
    (b'{"id":1,"type":"progress","done":"1"}', "done"),
    (b'{"id":1,"type":"progress","total":true}', "total"),
    (b'{"id":1,"type":"progress","item":[1]}', "item"),
    (b'{"id":1,"type":"result"}', "boolean success"),
    (b'{"id":1,"type":"result","success":1}', "boolean success"),
    (b'{"id":1,"type":"result","success":"true"}', "boolean success"),
    (b'{"id":1,"type":"result","success":true,"data":[]}', "data"),
    (b'{"id":1,"type":"result","success":true,"message":5}', "message"),
    (b"[" * 100000, "nested deeper than 64 levels"),
])
def test_parse_invalid(line: bytes, reason: str) -> None:
    msg = parse_line(line)
    assert msg.kind == "invalid"
    assert msg.error is not None and reason in msg.error, msg.error


def test_id_generator_time_based_increasing_and_thread_safe() -> None:
    gen = IdGenerator()
    first = gen.next()
    assert first > 10**9  # derived from the clock, not 0 or 1
    got: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        ids = [gen.next() for _ in range(500)]
        with lock:
            got.extend(ids)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 2000
    assert min(got) > first
    assert max(got) < 2**53
    assert IdGenerator(start=5).next() == 5


def test_qr_codes_are_deterministic() -> None:
    assert qr_code("A", 1) == qr_code("A", 1)
    assert qr_code("A", 1) != qr_code("A", 2) != qr_code("B", 2)
    assert qr_code("A", 3).startswith("A-03-") and len(qr_code("A", 3)) == len("A-03-") + 6
