"""The HTTP server: one BaseHTTPRequestHandler dispatching a (method, path) table.

Measured traps this avoids (see ../shared/notes/measured-pitfalls.md): the
44 ms Nagle/delayed-ACK stall of a response written in two pieces (we set
TCP_NODELAY and write each response in one send) and the 1-1.5 s p99 spikes
from the default listen backlog of 5 (we use 128).
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
import logging
import os
import re
import socket
import threading
import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from server.app import Application
from server.errors import ApiError
from server.reader import DeadlineReader, HeadBudget
from server.routing import Request, Response, Route, Router, StreamResponse

log = logging.getLogger("server")
access_log = logging.getLogger("server.access")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only: str.isdigit() accepts "\xb2" and friends
MAX_REQUEST_LINE = 8192  # 414 beyond (the stdlib allows 64 KiB)
MAX_HEADER_BYTES = 32 * 1024  # all header lines together; 431 beyond
CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-API-Key, Idempotency-Key, Last-Event-ID"
CORS_EXPOSE_HEADERS = "Location, Retry-After, Idempotent-Replayed"


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header, formatted once per second rather than once per response."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def _escape(text: str) -> str:
    """One request = one log line: control characters are shown, not obeyed."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


_BUSY_BODY = b'{"success": false, "message": "too many connections; try again shortly"}'
_BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\n"
                  b"Content-Type: application/json; charset=utf-8\r\n"
                  b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n"
                  b"Retry-After: 1\r\nConnection: close\r\n\r\n" + _BUSY_BODY)
_REJECT_LINGER_S = 1.0  # a refused socket stays half-closed this long so the 503 is read
_MAX_LINGERING = 256


def parse_networks(spec: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """'10.0.0.0/8,127.0.0.1' (or a sequence of such) -> networks; ValueError if malformed."""
    items = spec.split(",") if isinstance(spec, str) else list(spec or ())
    return tuple(ipaddress.ip_network(item.strip(), strict=False)
                 for item in items if item.strip())


def _client_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class RobotHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # On Windows SO_REUSEADDR lets a second process bind the same port and steal some
    # of the connections; there the socket is made exclusive instead (server_bind).
    allow_reuse_address = os.name != "nt"

    def server_bind(self) -> None:
        exclusive = getattr(socket, "SO_EXCLUSIVEADDRUSE", None)  # Windows only
        if exclusive is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, exclusive, 1)
        super().server_bind()

    def __init__(self, address: tuple[str, int], app: Application, router: Router, *,
                 backlog: int = 128) -> None:
        self.request_queue_size = backlog
        self.app = app
        self.router = router
        config = app.config
        self.networks = parse_networks(config.allow)
        hostname = socket.gethostname().lower()
        # Names a browser may use for us; anything else (an attacker's DNS name
        # pointing here: DNS rebinding) is refused. IP literals are always fine.
        self.host_names = {"localhost", hostname, hostname.split(".")[0],
                           *(h.strip().lower().rstrip(".") for h in config.allowed_hosts
                             if h.strip())}
        self._host_verdicts: dict[str, bool] = {}
        self._slots = threading.Lock()
        self._open = 0  # connections that have a handler thread
        self._reserved: set[Any] = set()  # over the cap, for an emergency stop only
        self._streaming = 0  # of those, in a long-poll or SSE request right now
        self._lingering: deque[tuple[float, socket.socket]] = deque()
        self._refused = 0
        self._refused_logged = 0.0
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The stdlib prints a traceback for every client that hangs up mid-request.
        log.info("connection from %s ended with an error", client_address[0], exc_info=False)

    # -- access control ---------------------------------------------------------------
    def client_allowed(self, address: str) -> bool:
        if not self.networks:
            return True
        ip = _client_ip(address)
        return ip is not None and any(ip in net for net in self.networks)

    def host_allowed(self, host: str) -> bool:
        """Host header check (memoised: a server sees few distinct Host values)."""
        known = self._host_verdicts.get(host)
        if known is None:
            known = self._host_allowed(host)
            if len(self._host_verdicts) < 256:  # bounded: Host is client-controlled
                self._host_verdicts[host] = known
        return known

    def _host_allowed(self, host: str) -> bool:
        """An IP literal, or a name this server knows it has."""
        host = host.strip()
        if host.startswith("["):
            end = host.find("]")
            rest = host[end + 1:]
            if end < 0 or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
                return False
            try:
                ipaddress.IPv6Address(host[1:end])
            except ValueError:
                return False
            return True
        name, sep, port = host.rpartition(":")
        if not sep:
            name = host
        elif not (port.isascii() and port.isdigit()):
            return False
        name = name.lower().rstrip(".")
        try:
            ipaddress.IPv4Address(name)
            return True
        except ValueError:
            return name in self.host_names

    # -- connection accounting ----------------------------------------------------------
    def process_request(self, request: Any, client_address: Any) -> None:
        # Runs on the accept thread: a refusal must never block here.
        reserve = False
        with self._slots:
            full = self._open - self._streaming >= self.app.config.max_connections
            if not full:
                self._open += 1
            elif len(self._reserved) < self.app.config.stop_reserve:
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
            if self._streaming >= self.app.config.max_streams:
                raise ApiError(f"too many long-poll and event-stream requests "
                               f"(limit {self.app.config.max_streams}); try again shortly",
                               503, headers={"Retry-After": "5"})
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
            sock.send(_BUSY_RESPONSE)
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
                        self._refused, self.app.config.max_connections)
            self._refused, self._refused_logged = 0, now

    def server_close(self) -> None:
        super().server_close()
        while self._lingering:
            self._close_refused(self._lingering.popleft()[1])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "RobotTaskServer/1.0"
    sys_version = ""
    server: RobotHTTPServer

    def setup(self) -> None:
        self.timeout = self.server.app.config.request_timeout
        super().setup()
        # Swap the stdlib's reader for one that enforces the request deadline. The
        # old one must be closed, or the socket is never really closed (io refs).
        self.rfile.close()
        self._reader = DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader, 65536)
        self._client_ok = self.server.client_allowed(self.client_address[0])
        self._reserve = self.server.is_reserve(self.request)
        self._extra_headers: dict[str, str] = {}
        self._body_pending = False
        self._expect_continue = False

    def handle_one_request(self) -> None:
        config = self.server.app.config
        # Set before anything can fail, so a refusal is logged and answered sanely.
        self.command = self.request_version = self.requestline = ""
        self._extra_headers = {}
        self._body_pending = self._expect_continue = False
        try:
            # Idle keep-alive: wait for the first byte of the next request.
            self._reader.arm(config.idle_timeout, config.idle_timeout)
            try:
                if not self.rfile.peek(1):
                    self.close_connection = True
                    return
            except (TimeoutError, ConnectionError):
                self.close_connection = True
                return
            # From the first byte on, the head and body must arrive by the deadline.
            self._reader.arm(config.request_deadline, config.request_timeout)
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
            if len(self.raw_requestline) > MAX_REQUEST_LINE:
                self.send_error(414, f"request line longer than {MAX_REQUEST_LINE} bytes")
                return
            if not self.raw_requestline.endswith(b"\n"):
                self.close_connection = True  # the client hung up mid-line
                return
            rfile, self.rfile = self.rfile, HeadBudget(self.rfile, MAX_HEADER_BYTES)
            try:
                parsed = self.parse_request()
            finally:
                self.rfile = rfile
            if parsed:
                self._dispatch()
        except TimeoutError:
            self.close_connection = True
            log.info("%s: request not received within %g s; connection closed",
                     self.client_address[0], config.request_deadline)
            try:
                self.send_error(408, "the request was not received in time")
            except OSError:
                pass  # a client too slow to send may be gone too; it was logged above

    def handle_expect_100(self) -> bool:
        # Answer "100 Continue" only once the request passed every check (_read_body),
        # so a refused upload is never invited.
        self._expect_continue = True
        return True

    # Every method goes through one dispatcher so unknown methods get 405/404 JSON.
    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        started = time.perf_counter()
        app = self.server.app
        streaming = False
        response: Response | StreamResponse
        try:
            if not self._client_ok:
                raise ApiError("this client address is not allowed to use the server", 403,
                               close=True)
            self._check_framing()
            self._check_host()
            cross_origin = self._check_origin()
            if (cross_origin and self.command == "OPTIONS"
                    and "Access-Control-Request-Method" in self.headers):
                response = self._preflight()
            else:
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query,
                                                       keep_blank_values=True).items()}
                func, params = self.server.router.match(self.command, url.path)
                if self._reserve:
                    self.close_connection = True  # one request, then the slot is free
                    if not getattr(func, "emergency", False):
                        raise ApiError("too many connections; try again shortly", 503,
                                       headers={"Retry-After": "1"}, close=True)
                self._authorize(func, url.path)
                body = self._read_body()
                request = Request(self.command, url.path, query, self.headers, body, app,
                                  self.client_address[0], params)
                mark = getattr(func, "long_lived", None)
                if mark is True or (isinstance(mark, str) and query.get(mark)):
                    self.server.enter_stream()
                    streaming = True
                response = func(request)
        except ApiError as exc:
            response = Response(exc.status, exc.body(), exc.headers)
            if exc.close:
                self.close_connection = True
        except Exception:
            # The log has the traceback; the client gets no path, port or trace.
            log.exception("internal error on %s %s", self.command, _escape(self.path))
            response = Response(500, {"success": False, "message": "internal server error"})
        if self._body_pending:
            self.close_connection = True  # unread body bytes must not become a request
        self._reader.disarm(app.config.request_timeout)
        try:
            if isinstance(response, StreamResponse):
                self._stream(response)
            else:
                self._send(response)
        finally:
            if streaming:
                self.server.leave_stream()
        log.debug("%s %s took %.2f ms", self.command, _escape(self.path),
                  (time.perf_counter() - started) * 1000)

    # -- checks, in order: framing, Host, Origin, token --------------------------------
    def _check_framing(self) -> None:
        # Exactly one way to find where this request ends, or the connection closes:
        # anything else lets a body be read as a second (smuggled) request.
        if "Transfer-Encoding" in self.headers:
            raise ApiError("Transfer-Encoding is not supported on requests; send "
                           "Content-Length", 501, close=True)
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            self._body_length = 0
            return
        if len(lengths) > 1 or not _DIGITS.fullmatch(lengths[0].strip()):
            raise ApiError("invalid Content-Length", 400, close=True)
        self._body_length = int(lengths[0])
        self._body_pending = self._body_length > 0
        limit = self.server.app.config.max_body
        if self._body_length > limit:
            raise ApiError(f"request body too large ({self._body_length} bytes; limit "
                           f"{limit})", 413, close=True)

    def _check_host(self) -> None:
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1:
            raise ApiError("more than one Host header", 400, close=True)
        if not hosts:
            if self.request_version == "HTTP/1.1":
                raise ApiError("an HTTP/1.1 request needs a Host header", 400, close=True)
            return
        if not self.server.host_allowed(hosts[0]):
            raise ApiError(f"this server does not answer for host {hosts[0][:100]!r}; use "
                           "its IP address or add the name with --allowed-host", 421,
                           close=True)

    def _check_origin(self) -> str | None:
        """Refuse browsers on other sites; returns the Origin if it is the CORS one."""
        origin = self.headers.get("Origin")
        if origin is None:
            return None  # not a browser's cross-site request (curl, requests, scripts)
        given = origin.strip().rstrip("/").lower()
        allowed = (self.server.app.config.cors_origin or "").strip().rstrip("/").lower()
        if allowed and given == allowed:
            self._extra_headers = {"Access-Control-Allow-Origin": origin.strip(),
                                   "Access-Control-Expose-Headers": CORS_EXPOSE_HEADERS,
                                   "Vary": "Origin"}
            return origin
        host = (self.headers.get("Host") or "").strip().lower()
        if host and given in (f"http://{host}", f"https://{host}"):
            return None  # same origin: the dashboard
        raise ApiError(f"cross-origin request refused (Origin {origin[:100]!r})", 403,
                       close=True)

    def _preflight(self) -> Response:
        return Response(204, b"", {"Access-Control-Allow-Methods": "GET, POST, DELETE",
                                   "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                                   "Access-Control-Max-Age": "600"})

    def _authorize(self, func: Route, path: str) -> None:
        token = self.server.app.config.api_token
        if not token or getattr(func, "public", False):
            return
        given = self.headers.get("X-API-Key")
        auth = self.headers.get("Authorization") or ""
        if given is None and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError("authentication required: send 'Authorization: Bearer <token>' or "
                           "'X-API-Key: <token>'", 401,
                           headers={"WWW-Authenticate": 'Bearer realm="robot"'})

    def _read_body(self) -> bytes:
        # Framing was checked first; every matched request's body is read, even where
        # the route ignores it, so a keep-alive connection stays in step.
        length = self._body_length
        if not length:
            return b""
        if self._expect_continue:
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise ApiError("the request body was not received in time", 408,
                           close=True) from None
        if len(body) != length:
            raise ApiError("request body shorter than Content-Length", 400, close=True)
        self._body_pending = False
        return body

    # -- responses -------------------------------------------------------------------------
    def _head(self, status: int, headers: dict[str, str], content_type: str,
              length: int | None) -> bytes:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        lines = [f"HTTP/1.1 {status} {phrase}", f"Server: {self.server_version}",
                 f"Date: {_http_date()}", f"Content-Type: {content_type}"]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        lines += [f"{k}: {v}" for k, v in {**self._extra_headers, **headers}.items()]
        if self.close_connection or length is None:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, response: Response) -> None:
        if isinstance(response.body, bytes):
            payload = response.body
        else:
            payload = json.dumps(response.body, ensure_ascii=False).encode("utf-8")
        head = self._head(response.status, response.headers, response.content_type,
                          len(payload))
        self.server.app.metrics.count_http(response.status)
        # One write per response: headers and body in a single send.
        self.wfile.write(head if self.command == "HEAD" else head + payload)
        self.log_request(response.status, len(payload))

    def _stream(self, response: StreamResponse) -> None:
        self.close_connection = True
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **response.headers}
        self.server.app.metrics.count_http(200)
        self.wfile.write(self._head(200, headers, response.content_type, None))
        self.log_request(200, "-")
        try:
            for chunk in response.chunks:
                self.wfile.write(chunk)
        except OSError:
            pass  # the subscriber went away; its subscription is closed by the generator
        finally:
            close = getattr(response.chunks, "close", None)
            if close is not None:
                close()

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        # The stdlib's errors (bad request line, header limits) are HTML; ours are JSON.
        self.close_connection = True
        self._reader.disarm(self.server.app.config.request_timeout)
        text = message or HTTPStatus(code).phrase
        self._send(Response(code, {"success": False, "message": text}))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        access_log.info("%s %s", self.address_string(), _escape(format % args))

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        self.log_message('"%s" %s %s', getattr(self, "requestline", ""), str(code), str(size))


def make_server(host: str, port: int, app: Application, router: Router, *,
                backlog: int = 128) -> RobotHTTPServer:
    server = RobotHTTPServer((host, port), app, router, backlog=backlog)
    server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server
