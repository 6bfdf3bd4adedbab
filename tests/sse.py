"""A minimal SSE reader over a raw socket (so tests see exactly what is on the wire)."""

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
        self.buffer = b""
        head = self._until(b"\r\n\r\n", 10)
        self.status_line = head.split(b"\r\n")[0].decode()
        self.headers = head.decode("latin-1")

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
            self.buffer += chunk
        block, self.buffer = self.buffer.split(marker, 1)
        return block

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
