"""A real webhook receiver for the tests: a ThreadingHTTPServer on loopback that records
every POST (time, headers, body) and answers from a script (status codes, a hang, a
redirect), so tests assert on what really went over the wire."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    time: float  # time.monotonic() when it arrived
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def type(self) -> str:
        return str(self.json["type"])


# A reply: a status code, or (status, headers); "hang" holds the request until released.
Reply = int | tuple[int, dict[str, str]] | str


class Receiver:
    """``script`` is consumed one reply per request; once empty, ``then`` answers."""

    def __init__(self, script: list[Reply] | None = None, then: Reply = 200) -> None:
        self.script = list(script or [])
        self.then = then
        self.received: list[Received] = []
        self.release = threading.Event()  # ends every "hang"
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender went away mid-request (a kill -9): nothing was delivered,
                    # as a real receiver would see it; the sender sends it again.
                    self.close_connection = True
                    return
                item = Received(time.monotonic(), self.path,
                                {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver._lock:
                    receiver.received.append(item)
                    reply = receiver.script.pop(0) if receiver.script else receiver.then
                    receiver._changed.notify_all()
                if reply == "hang":
                    receiver.release.wait(60)
                    reply = 200
                status, headers = reply if isinstance(reply, tuple) else (int(reply), {})
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def wait_for(self, predicate: Callable[[list[Received]], bool],
                 timeout: float = 15.0) -> list[Received]:
        """Block until ``predicate(received)`` holds; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self.received):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"receiver: condition not met; got "
                                         f"{[r.body[:120] for r in self.received]}")
                self._changed.wait(remaining)
            return list(self.received)

    def wait_count(self, n: int, timeout: float = 15.0) -> list[Received]:
        return self.wait_for(lambda got: len(got) >= n, timeout)

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
