"""What a robot may hand the server, checked without I/O: nesting, over-long lines,
the progress log's bounds, the skipped-line log summary."""

from __future__ import annotations

import json
import logging

import pytest

from robot.codecs import Reply
from robot.codecs.framing import LineFramer, OverlongLine
from robot.codecs.json_codec import JsonCodec, parse_json_line
from robot.link.linelog import LineReport
from robot.link.progress import MAX_ITEMS, ProgressLog, item_limit
from shared.jsonbounds import MAX_DEPTH, text_too_deep, top_level_fields, value_too_deep


def nested(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


def test_depth_limit_is_exact_and_ignores_brackets_in_strings() -> None:
    assert not text_too_deep(nested(MAX_DEPTH))
    assert text_too_deep(nested(MAX_DEPTH + 1))
    assert not text_too_deep(json.dumps({"s": "[" * 500 + '\\"' + "{" * 500}))
    assert value_too_deep(json.loads(nested(MAX_DEPTH + 1)))
    assert not value_too_deep(json.loads(nested(MAX_DEPTH)))
    # Iterative: a value far deeper than Python's recursion limit is measured, not a crash.
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert value_too_deep(deep)


def test_a_deep_result_fails_its_command_and_a_deep_progress_line_is_skipped() -> None:
    data = '{"nested": ' + nested(985) + "}"
    result = parse_json_line(
        f'{{"id": 7, "type": "result", "success": true, "data": {data}}}'.encode())
    assert (result.kind, result.id, result.success, result.rejected) == \
        ("result", 7, False, "too_deep")
    assert result.data == {}
    progress = parse_json_line(
        f'{{"id": 7, "type": "progress", "done": 1, "item": {data}}}'.encode())
    assert progress.kind == "invalid" and "deeper than 64" in (progress.error or "")
    # Too deep for Python's own parser: still told apart as the result of command 9.
    huge = parse_json_line(b'{"type": "result", "id": 9, "data": ' + b"[" * 200_000 + b"}")
    assert (huge.kind, huge.id, huge.rejected) == ("result", 9, "too_deep")


def test_top_level_fields_of_a_cut_off_head() -> None:
    assert top_level_fields('{"id": 7, "type": "result", "message": "abc') == \
        {"id": 7, "type": "result"}
    assert top_level_fields('{"id": 712') == {}  # a number cut off is no number
    assert top_level_fields('{"item": {"id": 9, "type": "result"}, "type": "progress"}') == \
        {"type": "progress"}


def test_an_overlong_result_line_keeps_its_head_in_order() -> None:
    framer = LineFramer(max_line=100, keep_heads=True)
    line = b'{"id": 5, "type": "result", "success": true, "data": {"x": "' + b"y" * 500 + b'"}}'
    lines = framer.feed(b'{"id": 5, "type": "ack"}\n' + line[:60])
    assert lines == [b'{"id": 5, "type": "ack"}']
    lines = framer.feed(line[60:] + b"\nnext\n")
    assert [type(x) for x in lines] == [OverlongLine, bytes] and lines[1] == b"next"
    assert lines[0].startswith(b'{"id": 5, "type": "result"')
    reply = JsonCodec().decode_overlong(lines[0], None)
    assert (reply.kind, reply.id, reply.rejected) == ("result", 5, "too_long")
    # An over-long line that is not a result is just skipped.
    assert JsonCodec().decode_overlong(b'{"type": "log", "message": "', None).kind == "invalid"
    # Without keep_heads (the simulator's framer) over-long lines vanish as before.
    plain = LineFramer(max_line=10)
    assert plain.feed(b"x" * 20 + b"\nok\n") == [b"ok"] and plain.dropped == 1


def test_progress_log_coalesces_and_bounds_items() -> None:
    log = ProgressLog()
    for k in range(1, 4):
        log.add(Reply(kind="progress", done=k, total=3, message=f"m{k}", item={"k": k}), 20)
    event = log.take()
    assert (event["done"], event["total"], event["message"], event["first"]) == (3, 3, "m3", 0)
    assert event["items"] == [{"k": 1}, {"k": 2}, {"k": 3}] and event["item"] == {"k": 3}
    assert not log.fresh
    log.add(Reply(kind="progress", message="still going"), 20)
    event = log.take()
    # A line without counts keeps the last known ones.
    assert (event["done"], event["items"], event["first"]) == (3, [], 3)
    assert item_limit(3) == 1000 and item_limit(5000) == MAX_ITEMS and item_limit(None) == MAX_ITEMS
    flood = ProgressLog()
    for k in range(MAX_ITEMS + 25):
        flood.add(Reply(kind="progress", item={"k": k}), 20)
    assert len(flood.items) == MAX_ITEMS and flood.dropped == 25
    assert flood.done == MAX_ITEMS + 25  # counted lines, kept or not


def test_progress_log_byte_budget() -> None:
    log = ProgressLog()
    for k in range(100):
        log.add(Reply(kind="progress", item={"k": k}), 64 * 1024)
    assert len(log.items) == 64 and log.dropped == 36  # 4 MiB of lines


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_line_report_logs_a_burst_then_one_summary_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    report = LineReport(logging.getLogger("test.linelog"), logging.WARNING,
                        "skipped robot line", burst=3, interval=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.linelog"):
        for k in range(1000):
            clock.now = k * 0.005
            report.report("not JSON (Expecting value)" if k % 2 else f"bad id {k}",
                          "junk\x1b[2J\nline")
        assert len(caplog.records) == 3
        assert "\\x1b" in caplog.records[0].getMessage()  # control characters escaped
        assert "\n" not in caplog.records[0].getMessage()
        clock.now = 10.0
        report.tick()
    summary = caplog.records[-1].getMessage()
    assert len(caplog.records) == 4
    assert "997 more in the last 10 s" in summary
    assert "not JSON: 499" in summary and "bad id: 498" in summary
    report.tick()  # nothing new: nothing logged
    assert len(caplog.records) == 4
