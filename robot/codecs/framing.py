"""Line framing and command ids of the robot link, free of I/O.

Whatever the protocol (robot/codecs/seam.py), the link is lines terminated by ``\\n``
(a trailing ``\\r`` is tolerated). Everything here works on bytes so tests can
feed it directly; the threads and the port live in robot/link/.
"""

from __future__ import annotations

import threading
import time

from robot.codecs.seam import MAX_LINE

# How much of a dropped over-long line is kept: enough for its type and id.
OVERLONG_HEAD = 1024


class OverlongLine(bytes):
    """The first bytes of a line that was dropped for being longer than ``max_line``
    (returned in its place by a framer made with ``keep_heads=True``)."""


class LineFramer:
    """Split a byte stream into lines.

    ``feed()`` returns complete lines without the ``\\n`` and without one trailing
    ``\\r``; a partial line is kept until its end arrives. A line longer than
    ``max_line`` bytes is dropped whole (up to and including its ``\\n``) and
    counted in ``dropped``; with ``keep_heads`` an ``OverlongLine`` holding its first
    bytes takes its place among the lines, in order. Empty lines are returned as
    ``b""``.
    """

    def __init__(self, max_line: int = MAX_LINE, *, keep_heads: bool = False) -> None:
        self.max_line = max_line
        self.keep_heads = keep_heads
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
                self._drop(lines, piece)
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
                self._drop(lines, rest)
                self._discarding = True
            else:
                self._buf += rest
        return lines

    def _drop(self, lines: list[bytes], piece: bytes) -> None:
        if self.keep_heads:
            head = bytes(self._buf[:OVERLONG_HEAD])
            lines.append(OverlongLine(head + piece[:OVERLONG_HEAD - len(head)]))
        self._buf.clear()
        self.dropped += 1

    def reset(self) -> None:
        """Forget a buffered partial line (after the input was flushed)."""
        self._buf.clear()
        self._discarding = False

    @property
    def pending(self) -> int:
        return len(self._buf)


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
