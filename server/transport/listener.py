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
from server.transport.streams import Source, StreamHub

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
        self._ordinary: set[Any] = set()  # of those, holding an ordinary slot
        # Streams handed to the stream hub (server/transport/streams.py), which serves
        # them from its one thread and says when each ends: they stay counted till then.
        self._detached: dict[Any, tuple[Source, bool]] = {}
        self._hubs: list[StreamHub] = []  # one (see streams.CAPACITY), made on first use
        self._closing = False
        self._lingering: deque[tuple[float, socket.socket]] = deque()
        self._refused = 0
        self._refused_logged = 0.0
        self.busy_response = _busy_response(config.lang)
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The stdlib prints a traceback for every client that hangs up mid-request.
        log.info("connection from %s ended with an error", client_address[0], exc_info=False)

    # -- connection accounting ----------------------------------------------------------
    # A connection is undecided from accept until its first request is routed (route()):
    # then it holds an ordinary slot (until it closes or streams) or, for the length of a
    # long-lived request, a stream slot; after a long-poll it is undecided again.
    def process_request(self, request: Any, client_address: Any) -> None:
        # Runs on the accept thread: a refusal must never block here.
        config = self.app.settings
        reserve = False
        with self._slots:
            # Admitted while ordinary + undecided < max_connections + (max_streams -
            # streaming): each connection not streaming fits an ordinary slot or a free
            # stream slot; that is, while open < max_connections + max_streams.
            full = self._open >= config.max_connections + config.max_streams
            if not full:
                self._open += 1
            elif len(self._reserved) < config.stop_reserve:
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
            with self._slots:
                handover = self._detached.get(request)
                hub = self._hub_with_room() if handover is not None else None
            if handover is None:
                self._release(request)
            elif hub is None:  # the server is closing
                handover[0].close()
                super().shutdown_request(request)
                self._stream_ended(request)
            else:  # the handler thread is done with it: the hub's from now on
                hub.adopt(request, *handover)

    def _hub_with_room(self) -> StreamHub | None:
        """(Under the slots' lock.) None once the server is closing."""
        if self._closing:
            return None
        for hub in self._hubs:
            if not hub.full:
                return hub
        self._hubs.append(StreamHub(self._stream_ended, self.app.settings.request_timeout))
        return self._hubs[-1]

    def shutdown_request(self, request: Any) -> None:
        if request not in self._detached:  # a stream's socket stays open for the hub
            super().shutdown_request(request)

    def detach_stream(self, request: Any, source: Source, chunked: bool) -> None:
        """The long-lived response on ``request`` (its head written next by the handler)
        goes to the stream hub once the handler's thread is done with the connection."""
        with self._slots:
            self._detached[request] = (source, chunked)

    def _stream_ended(self, request: Any) -> None:
        """The hub closed a stream: its connection and stream slot are free."""
        with self._slots:
            self._detached.pop(request, None)
            self._streaming -= 1
            self._open -= 1
            self._ordinary.discard(request)

    def _release(self, request: Any) -> None:
        with self._slots:
            if request in self._reserved:
                self._reserved.discard(request)
            else:
                self._open -= 1
                self._ordinary.discard(request)

    def route(self, request: Any, stream: bool, emergency: bool) -> bool:
        """Admission of a request on connection ``request`` once it is routed, before its
        token and body are read. A long-lived one (``stream``) enters the stream count
        (503 ``too_many_streams`` past max_streams); an ordinary one takes an ordinary
        slot, which its connection keeps (503 ``too_many_connections`` past
        max_connections). An emergency route is served regardless, as on the stop
        reserve. True: serve this one request, then close the connection."""
        config = self.app.settings
        with self._slots:
            if request in self._reserved:  # beyond every cap: POST /robot/stop alone
                if emergency and not stream:
                    return True
            elif stream:
                if self._streaming < config.max_streams:
                    self._ordinary.discard(request)  # its ordinary slot is free meanwhile
                    self._streaming += 1
                    return False
                raise ApiError("too_many_streams", 503, params={"limit": config.max_streams},
                               headers={"Retry-After": "5"}, close=True)
            elif request in self._ordinary or len(self._ordinary) < config.max_connections:
                self._ordinary.add(request)
                return False
            elif emergency:
                return True
        raise ApiError("too_many_connections", 503, headers={"Retry-After": "1"}, close=True)

    def leave_stream(self, request: Any) -> None:
        """A long-lived request ended: its connection (if kept) is undecided again. (A
        stream handed to the hub is the hub's to end.)"""
        with self._slots:
            if request not in self._detached:
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
            config = self.app.settings
            log.warning("refused %d connection(s): limit of %d open connections reached "
                        "(%d ordinary + %d long-lived)", self._refused,
                        config.max_connections + config.max_streams,
                        config.max_connections, config.max_streams)
            self._refused, self._refused_logged = 0, now

    def server_close(self) -> None:
        super().server_close()
        with self._slots:
            hubs, self._hubs, self._closing = self._hubs, [], True
        for hub in hubs:
            hub.stop()  # every stream ends (the last chunk), its client reconnects
        while self._lingering:
            self._close_refused(self._lingering.popleft()[1])
