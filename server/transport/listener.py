"""The listening socket: how many connections at once, and the refusal when full.

Admission runs on the accept thread (process_request), so no refusal may block
there. The request handler (server/http.py) reads and answers, and asks
server/guard/access.py who may talk to us; this module only binds, counts and refuses
connections.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from server.api.routing import Router
from server.app import Application
from server.errors import ApiError
from server.guard.access import Access

log = logging.getLogger("server")


def _busy_response(lang: str) -> bytes:
    """The 503 sent at accept time, before any request is read: in the server's language."""
    body = json.dumps(ApiError("too_many_connections", 503).body(lang),
                      ensure_ascii=False).encode("utf-8")
    return (b"HTTP/1.1 503 Service Unavailable\r\n"
            b"Content-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            b"Retry-After: 1\r\nConnection: close\r\n\r\n" + body)


_REJECT_LINGER_S = 1.0  # a refused socket stays half-closed this long so the 503 is read
_MAX_LINGERING = 256


def listen_options(sock: socket.socket, host: str) -> bool:
    """The options of the server's listening socket, for the server and for whoever
    probes its address first (server/check.py): False if ``host`` "::" cannot take IPv4
    clients too. On Windows SO_REUSEADDR lets a second process bind the same port and
    steal some of the connections: the socket is made exclusive there instead; elsewhere
    it reuses the address, so TIME_WAIT is not "in use"."""
    exclusive = getattr(socket, "SO_EXCLUSIVEADDRUSE", None)  # Windows only
    if exclusive is not None:
        sock.setsockopt(socket.SOL_SOCKET, exclusive, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sock.family == socket.AF_INET6 and host == "::":
        # "::" means every interface: IPv4 clients too, where the OS allows it.
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        except (AttributeError, OSError):
            return False
    return True


class RobotHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = os.name != "nt"  # as listen_options: not on Windows

    def server_bind(self) -> None:
        if not listen_options(self.socket, str(self.server_address[0])):
            log.warning("this system cannot serve IPv4 on an IPv6 socket; "
                        "listening on IPv6 only")
        super().server_bind()

    def __init__(self, address: tuple[str, int], app: Application, router: Router,
                 handler: type[BaseHTTPRequestHandler], *, backlog: int = 128) -> None:
        self.request_queue_size = backlog
        # An IPv6 literal ("::", "::1") needs an IPv6 socket; names keep IPv4 as before.
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self.router = router
        config = app.settings
        # Before binding, as ever: a malformed --allow or --trusted-proxy binds nothing.
        self.access = Access(config)
        self._slots = threading.Lock()
        self._open = 0  # connections that have a handler thread
        self._reserved: set[Any] = set()  # over the cap, for an emergency stop only
        self._streaming = 0  # of those, in a long-poll or SSE request right now
        self._lingering: deque[tuple[float, socket.socket]] = deque()
        self._refused = 0
        self._refused_logged = 0.0
        self.busy_response = _busy_response(config.lang)
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The stdlib prints a traceback for every client that hangs up mid-request.
        log.info("connection from %s ended with an error", client_address[0], exc_info=False)

    # -- connection accounting ----------------------------------------------------------
    def process_request(self, request: Any, client_address: Any) -> None:
        # Runs on the accept thread: a refusal must never block here.
        reserve = False
        with self._slots:
            full = self._open - self._streaming >= self.app.settings.max_connections
            if not full:
                self._open += 1
            elif len(self._reserved) < self.app.settings.stop_reserve:
                # Stop must always work: a few connections beyond the cap are kept
                # for POST /robot/stop alone (anything else on them gets the 503).
                self._reserved.add(request)
                reserve = True
        if full and not reserve:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: Any) -> None:
        with self._slots:
            if request in self._reserved:
                self._reserved.discard(request)
            else:
                self._open -= 1

    def is_reserve(self, request: Any) -> bool:
        with self._slots:
            return request in self._reserved

    def enter_stream(self) -> None:
        with self._slots:
            if self._streaming >= self.app.settings.max_streams:
                raise ApiError("too_many_streams", 503,
                               params={"limit": self.app.settings.max_streams},
                               headers={"Retry-After": "5"}, close=True)
            self._streaming += 1

    def leave_stream(self) -> None:
        with self._slots:
            self._streaming -= 1

    @property
    def connection_counts(self) -> tuple[int, int]:
        """(open connections, of which long-lived) - for tests and metrics."""
        with self._slots:
            return self._open, self._streaming

    def _refuse(self, sock: socket.socket) -> None:
        try:
            sock.setblocking(False)
            self._drain(sock)
            sock.send(self.busy_response)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the client already left: nobody to tell that we are busy
        # Closing now, with the request unread, would send RST and could destroy the
        # 503 before the client reads it; service_actions closes it a moment later.
        self._lingering.append((time.monotonic(), sock))
        while len(self._lingering) > _MAX_LINGERING:
            self._close_refused(self._lingering.popleft()[1])
        self._refused += 1

    @staticmethod
    def _drain(sock: socket.socket) -> None:
        try:
            for _ in range(16):
                if not sock.recv(65536):
                    break
        except OSError:
            pass  # nothing more to read right now

    def _close_refused(self, sock: socket.socket) -> None:
        self._drain(sock)
        try:
            sock.close()
        except OSError:
            pass  # already reset by the peer; the descriptor is released either way

    def service_actions(self) -> None:
        # Called by serve_forever between accepts (at least every poll interval).
        now = time.monotonic()
        while self._lingering and now - self._lingering[0][0] >= _REJECT_LINGER_S:
            self._close_refused(self._lingering.popleft()[1])
        if self._refused and now - self._refused_logged >= 1.0:
            log.warning("refused %d connection(s): limit of %d open connections reached",
                        self._refused, self.app.settings.max_connections)
            self._refused, self._refused_logged = 0, now

    def server_close(self) -> None:
        super().server_close()
        while self._lingering:
            self._close_refused(self._lingering.popleft()[1])
