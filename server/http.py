"""The HTTP server: one BaseHTTPRequestHandler dispatching a (method, path) table.

Measured traps this avoids (see ../shared/notes/measured-pitfalls.md): the
44 ms Nagle/delayed-ACK stall of a response written in two pieces (we set
TCP_NODELAY and write each response in one send) and the 1-1.5 s p99 spikes
from the default listen backlog of 5 (we use 128).
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import re
import socket
import time
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from i18n import negotiate
from server.app import Application
from server.errors import ApiError, stdlib_error
from server.listener import RobotHTTPServer
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


def _merge_vary(*values: str | None) -> str:
    """One Vary header from several (CORS, the dashboard's Accept, Accept-Language)."""
    seen: dict[str, str] = {}
    for value in values:
        for name in (value or "").split(","):
            if name.strip():
                seen.setdefault(name.strip().lower(), name.strip())
    return ", ".join(seen.values())

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
        self._vary_lang = False

    def handle_one_request(self) -> None:
        config = self.server.app.config
        # Set before anything can fail, so a refusal is logged and answered sanely.
        self.command = self.request_version = self.requestline = ""
        self._extra_headers = {}
        self._body_pending = self._expect_continue = self._vary_lang = False
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
                self._refuse_early(ApiError("request_line_too_long", 414,
                                            params={"limit": MAX_REQUEST_LINE}))
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
                self._refuse_early(stdlib_error(408))
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
        # The head is parsed: from here on every reply speaks the client's language.
        lang = negotiate(self.headers.get("Accept-Language"), app.config.lang)
        try:
            if not self._client_ok:
                raise ApiError("client_not_allowed", 403, close=True)
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
                        raise ApiError("too_many_connections", 503,
                                       headers={"Retry-After": "1"}, close=True)
                self._authorize(func, url.path)
                body = self._read_body()
                request = Request(self.command, url.path, query, self.headers, body, app,
                                  self.client_address[0], params, language=lang)
                mark = getattr(func, "long_lived", None)
                if mark is True or (isinstance(mark, str) and query.get(mark)):
                    self.server.enter_stream()
                    streaming = True
                try:
                    response = func(request)
                finally:
                    self._vary_lang = request.lang_used
        except ApiError as exc:
            response = Response(exc.status, exc.body(lang), exc.headers)
            self._vary_lang = True
            if exc.close:
                self.close_connection = True
        except Exception:
            # The log has the traceback; the client gets no path, port or trace.
            log.exception("internal error on %s %s", self.command, _escape(self.path))
            response = Response(500, ApiError("internal_error", 500).body(lang))
            self._vary_lang = True
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
            raise ApiError("transfer_encoding", 501, close=True)
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            self._body_length = 0
            return
        if len(lengths) > 1 or not _DIGITS.fullmatch(lengths[0].strip()):
            raise ApiError("invalid_content_length", 400, close=True)
        self._body_length = int(lengths[0])
        self._body_pending = self._body_length > 0
        limit = self.server.app.config.max_body
        if self._body_length > limit:
            raise ApiError("body_too_large", 413, close=True,
                           params={"size": self._body_length, "limit": limit})

    def _check_host(self) -> None:
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1:
            raise ApiError("duplicate_host", 400, close=True)
        if not hosts:
            if self.request_version == "HTTP/1.1":
                raise ApiError("missing_host", 400, close=True)
            return
        if not self.server.host_allowed(hosts[0]):
            raise ApiError("host_not_allowed", 421, close=True,
                           params={"host": repr(hosts[0][:100])})

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
        raise ApiError("cross_origin", 403, close=True, params={"origin": repr(origin[:100])})

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
            raise ApiError("not_authenticated", 401,
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
            raise ApiError("body_timeout", 408, close=True) from None
        if len(body) != length:
            raise ApiError("body_short", 400, close=True)
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
        merged = {**self._extra_headers, **headers}
        vary = _merge_vary(self._extra_headers.get("Vary"), headers.get("Vary"),
                           "Accept-Language" if self._vary_lang else None)
        if vary:
            merged["Vary"] = vary
        lines += [f"{k}: {v}" for k, v in merged.items()]
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
        log.debug("%s: refused (%d): %s", self.client_address[0], code, message)
        self._refuse_early(stdlib_error(code))

    def _refuse_early(self, exc: ApiError) -> None:
        """A refusal before the head is parsed: in the server's language, then close."""
        self.close_connection = True
        self._reader.disarm(self.server.app.config.request_timeout)
        self._vary_lang = False
        self._send(Response(exc.status, exc.body(self.server.app.config.lang), exc.headers))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        access_log.info("%s %s", self.address_string(), _escape(format % args))

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        self.log_message('"%s" %s %s', getattr(self, "requestline", ""), str(code), str(size))


def make_server(host: str, port: int, app: Application, router: Router, *,
                backlog: int = 128) -> RobotHTTPServer:
    server = RobotHTTPServer((host, port), app, router, Handler, backlog=backlog)
    server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server
