"""A minimal SSE reader over a raw socket (so tests see exactly what is on the wire).

An HTTP/1.1 stream comes chunked (one chunk per event): `dechunk` undoes the framing, and
checks it, as the bytes arrive.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any


class SSEReader:
    def __init__(self, url: str, headers: dict[str, str] | None = None,
                 path: str = "/events") -> None:
        host, port = url.split("//")[1].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream"
                          f"\r\n{extra}\r\n".encode())
        self.buffer = self.raw = b""  # the body (dechunked); bytes of a chunk not yet whole
        self.chunked = False
        self.chunks: list[bytes] = []  # each chunk's payload, in order (chunked only)
        self.ended = False  # the last chunk (size 0) arrived
        head = self._until(b"\r\n\r\n", 10)
        self.status_line = head.split(b"\r\n")[0].decode()
        self.headers = head.decode("latin-1")
        if "\r\ntransfer-encoding: chunked" in self.headers.lower():
            self.chunked = True
            rest, self.buffer = self.buffer, b""
            self._take(rest)

    def _until(self, marker: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {marker!r} within {timeout} s")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("stream closed")
            self._take(chunk)
        block, self.buffer = self.buffer.split(marker, 1)
        return block

    def _take(self, data: bytes) -> None:
        if not self.chunked:
            self.buffer += data  # the head, or a close-delimited body
            return
        self.raw += data
        payloads, self.raw, ended = dechunk(self.raw)
        self.chunks += payloads
        self.buffer += b"".join(payloads)
        self.ended = self.ended or ended

    def next_event(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next event (comments and retry lines skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            block = self._until(b"\n\n", max(0.01, deadline - time.monotonic()))
            event: dict[str, Any] = {}
            for line in block.decode("utf-8").split("\n"):
                if line.startswith(":") or not line:
                    continue
                key, _, value = line.partition(":")
                event[key] = value[1:] if value.startswith(" ") else value
            if "data" in event:
                event["data"] = json.loads(event["data"])
                return event

    def wait_for(self, predicate, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.01, deadline - time.monotonic()))
            if predicate(event):
                return event

    def close(self) -> None:
        self.sock.close()


def dechunk(raw: bytes) -> tuple[list[bytes], bytes, bool]:
    """The complete chunks at the start of a chunked body: (their payloads, the bytes
    left over, whether the last chunk came). Malformed framing raises ValueError."""
    payloads: list[bytes] = []
    while True:
        line, sep, rest = raw.partition(b"\r\n")
        if not sep:
            return payloads, raw, False
        size = int(line, 16)  # ValueError on anything but hex digits
        if size == 0:  # the last chunk; no trailers here, so an empty line ends the body
            if len(rest) < 2:
                return payloads, raw, False
            if rest[:2] != b"\r\n":
                raise ValueError(f"trailers after the last chunk: {rest[:80]!r}")
            return payloads, rest[2:], True
        if len(rest) < size + 2:
            return payloads, raw, False
        if rest[size:size + 2] != b"\r\n":
            raise ValueError(f"chunk of {size} bytes not followed by CRLF: {rest[:size + 8]!r}")
        payloads.append(rest[:size])
        raw = rest[size + 2:]
