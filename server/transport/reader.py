"""Socket reading for the request handler: deadlines and a header budget."""

from __future__ import annotations

import http.client
import io
import os
import socket
import struct
import time
from typing import Any


def _timeval(seconds: float | None, windows: bool = os.name == "nt") -> bytes | int:
    """SO_RCVTIMEO/SO_SNDTIMEO's value; None: no timeout (what the kernel calls 0)."""
    if seconds is None:
        return 0 if windows else struct.pack("ll", 0, 0)
    # 0 means "wait forever" to the kernel: a deadline that is nearly up must not
    # become that, so never less than a millisecond.
    seconds = max(seconds, 0.001)
    if windows:
        return int(seconds * 1000)  # a DWORD of milliseconds on Windows
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


def kernel_timeouts(sock: socket.socket, read: float, write: float) -> bool:
    """Put socket timeouts in the kernel (SO_RCVTIMEO/SO_SNDTIMEO) on a blocking socket.

    A Python-level timeout (settimeout) makes CPython poll() before every recv and
    send: a quarter of a GET's time in profiles. False where the OS refuses; the
    caller then keeps Python-level timeouts.
    """
    try:
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(read))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(write))
    except (OSError, AttributeError, struct.error):
        return False
    return True


def _timed_out(exc: OSError) -> bool:
    # A kernel timeout is EAGAIN on POSIX, WSAETIMEDOUT on Windows.
    return isinstance(exc, (BlockingIOError, TimeoutError)) or \
        getattr(exc, "winerror", None) == 10060


class DeadlineReader(io.RawIOBase):
    """Socket reads bounded twice: per read, and by a total deadline for the request.

    A per-read timeout alone lets a client that trickles one byte every few
    seconds hold a thread forever (slowloris); the deadline cuts it off.

    With kernel timeouts the socket's SO_RCVTIMEO is changed only when a read needs
    a different value than the one in force: a request that arrives in one packet
    (almost all) costs no setsockopt at all, however often arm() is called.
    """

    def __init__(self, sock: socket.socket, *, idle: float, write: float,
                 kernel: bool = True) -> None:
        super().__init__()
        self._sock = sock
        self._deadline: float | None = None
        self._per_read: float | None = idle
        self._kernel = kernel and kernel_timeouts(sock, idle, write)
        self._applied: float | None = idle if self._kernel else None
        if not self._kernel:
            sock.settimeout(idle)

    @property
    def kernel(self) -> bool:
        """Whether the kernel enforces the timeouts (else CPython's poll does)."""
        return self._kernel

    def readable(self) -> bool:
        return True

    def arm_idle(self, per_read: float) -> None:
        """Waiting for a request's first byte: one read, bounded by `per_read` alone."""
        self._deadline = None
        self._per_read = per_read

    def arm(self, total: float, per_read: float) -> None:
        self._deadline = time.monotonic() + total
        self._per_read = per_read

    def disarm(self, per_op: float) -> None:
        """The request is in: no deadline; `per_op` bounds each later write or read."""
        self._deadline = None
        self._per_read = per_op
        if not self._kernel:
            self._sock.settimeout(per_op)

    def readinto(self, buffer: Any) -> int:
        timeout = self._per_read
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the request was not received in time")
            if timeout is None or remaining < timeout:
                timeout = remaining
        if timeout != self._applied:
            if self._kernel:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(timeout))
            else:
                self._sock.settimeout(timeout)
            self._applied = timeout
        try:
            return self._sock.recv_into(buffer)
        except OSError as exc:
            if _timed_out(exc):
                raise TimeoutError("no data from the client in time") from None
            raise

    def close(self) -> None:
        # The socket belongs to socketserver, which shuts it down and closes it.
        super().close()


class DeadlineWriter(io.BufferedIOBase):
    """wfile for a socket with kernel timeouts: each send is bounded by SO_SNDTIMEO, and
    a response still unsent after `total` seconds of partial sends fails, so a client
    that reads a byte now and then cannot hold a thread (as sendall's total timeout
    did with Python-level timeouts)."""

    def __init__(self, sock: socket.socket, total: float) -> None:
        super().__init__()
        self._sock = sock
        self._total = total

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = len(data)
        try:
            sent = self._sock.send(data)
            if sent == size:
                return size  # the common case: one send, no clock
            deadline = time.monotonic() + self._total
            view = memoryview(data)
            while sent < size:
                if time.monotonic() > deadline:
                    raise TimeoutError("the client did not read the response in time")
                sent += self._sock.send(view[sent:])
        except OSError as exc:
            if _timed_out(exc):
                raise TimeoutError("the client did not read the response in time") from None
            raise
        return size

    def fileno(self) -> int:
        return self._sock.fileno()


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
