"""Socket reading for the request handler: deadlines and a header budget."""

from __future__ import annotations

import http.client
import io
import socket
import time
from typing import Any


class DeadlineReader(io.RawIOBase):
    """Socket reads bounded twice: per read, and by a total deadline for the request.

    A per-read timeout alone lets a client that trickles one byte every few
    seconds hold a thread forever (slowloris); the deadline cuts it off.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self._deadline: float | None = None
        self._per_read: float | None = None

    def readable(self) -> bool:
        return True

    def arm(self, total: float, per_read: float) -> None:
        self._deadline = time.monotonic() + total
        self._per_read = per_read

    def disarm(self, per_op: float) -> None:
        """The request is in: no deadline; `per_op` bounds each later write or read."""
        self._deadline = None
        self._per_read = per_op
        self._sock.settimeout(per_op)

    def readinto(self, buffer: Any) -> int:
        timeout = self._per_read
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the request was not received in time")
            timeout = remaining if timeout is None else min(timeout, remaining)
        self._sock.settimeout(timeout)
        return self._sock.recv_into(buffer)

    def close(self) -> None:
        # The socket belongs to socketserver, which shuts it down and closes it.
        super().close()


class HeadBudget:
    """Stands in for rfile while the stdlib parses headers: all header lines together
    may use `budget` bytes (the stdlib alone allows 100 lines of 64 KiB each)."""

    def __init__(self, rfile: Any, budget: int) -> None:
        self._rfile = rfile
        self._budget = self._limit = budget

    def readline(self, limit: int = -1) -> bytes:
        size = self._budget + 1 if limit < 0 else min(limit, self._budget + 1)
        line = self._rfile.readline(size)
        self._budget -= len(line)
        if self._budget < 0:
            raise http.client.LineTooLong(f"request headers longer than {self._limit} bytes")
        return line
