"""Wire protocol of the robot link: framing, encoding and parsing, free of I/O.

One JSON object per line, UTF-8, terminated by ``\\n`` (a trailing ``\\r`` is
tolerated). Everything here works on bytes so tests can feed it directly; the
threads and the port live in ``robot.driver``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

MAX_LINE = 64 * 1024

MESSAGE_KINDS = ("ack", "progress", "result", "heartbeat", "log")
# Replies to a command must carry its id; heartbeats and logs are unsolicited.
_NEEDS_ID = ("ack", "progress", "result")


class LineFramer:
    """Split a byte stream into lines.

    ``feed()`` returns complete lines without the ``\\n`` and without one trailing
    ``\\r``; a partial line is kept until its end arrives. A line longer than
    ``max_line`` bytes is dropped whole (up to and including its ``\\n``) and
    counted in ``dropped``: the caller compares the counter before and after
    ``feed()`` to log and count it. Empty lines are returned as ``b""``.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.dropped = 0
        self._buf = bytearray()
        # True while skipping the rest of an over-long line until its newline.
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            piece = data[start:nl]
            start = nl + 1
            if self._discarding:
                self._discarding = False
                continue
            if len(self._buf) + len(piece) > self.max_line:
                self._buf.clear()
                self.dropped += 1
                continue
            if self._buf:
                self._buf += piece
                line = bytes(self._buf)
                self._buf.clear()
            else:
                line = bytes(piece)
            if line.endswith(b"\r"):
                line = line[:-1]
            lines.append(line)
        rest = data[start:]
        if rest and not self._discarding:
            if len(self._buf) + len(rest) > self.max_line:
                # Count it now: its end may never come, and memory stays bounded.
                self._buf.clear()
                self.dropped += 1
                self._discarding = True
            else:
                self._buf += rest
        return lines

    def reset(self) -> None:
        """Forget a buffered partial line (after the input was flushed)."""
        self._buf.clear()
        self._discarding = False

    @property
    def pending(self) -> int:
        return len(self._buf)


def encode_command(msg_id: int, cmd: str, params: dict[str, Any] | None = None) -> bytes:
    """One host -> robot line: compact JSON, UTF-8 and a newline."""
    obj: dict[str, Any] = {"id": msg_id, "cmd": cmd}
    if params is not None:
        obj["params"] = params
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8") + b"\n"


@dataclass
class Message:
    """One parsed robot -> host line; ``kind == "invalid"`` carries ``error``."""

    kind: str
    id: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _is_int(value: Any) -> bool:
    # bool is a subclass of int in Python, but true is not an id or a count.
    return isinstance(value, int) and not isinstance(value, bool)


def _invalid(reason: str) -> Message:
    return Message(kind="invalid", error=reason)


def parse_line(line: bytes) -> Message:
    """Parse and validate one line (without its newline). Never raises."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return _invalid("not UTF-8")
    if not text.strip():
        return _invalid("empty line")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        return _invalid(f"not JSON ({exc})")
    if not isinstance(obj, dict):
        return _invalid(f"not a JSON object ({type(obj).__name__})")
    kind = obj.get("type")
    if kind not in MESSAGE_KINDS:
        return _invalid(f"unknown type {kind!r}")
    msg_id = obj.get("id")
    if msg_id is not None and not _is_int(msg_id):
        return _invalid(f"bad id {msg_id!r}")
    if msg_id is None and kind in _NEEDS_ID:
        return _invalid(f"{kind} without id")
    if kind == "progress":
        for key in ("done", "total"):
            if key in obj and obj[key] is not None and not _is_int(obj[key]):
                return _invalid(f"progress {key} is not an integer")
        if obj.get("item") is not None and not isinstance(obj["item"], dict):
            return _invalid("progress item is not an object")
    elif kind == "result":
        if not isinstance(obj.get("success"), bool):
            return _invalid("result without boolean success")
        if obj.get("data") is not None and not isinstance(obj["data"], dict):
            return _invalid("result data is not an object")
    if "message" in obj and obj["message"] is not None and not isinstance(obj["message"], str):
        return _invalid("message is not a string")
    return Message(kind=kind, id=msg_id, fields=obj)


class IdGenerator:
    """Thread-safe increasing command ids.

    The first id is derived from the wall clock (milliseconds modulo 10**12, so
    ids stay below 2**53 and survive a round trip through a JSON double): a reply
    still in flight from before a restart does not match a new command.
    """

    def __init__(self, start: int | None = None) -> None:
        self._next = int(time.time() * 1000) % 10**12 if start is None else start
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            value = self._next
            self._next += 1
            return value
