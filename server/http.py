"""The HTTP server: one BaseHTTPRequestHandler dispatching a (method, path) table.
It frames requests, dispatches them, writes the replies and logs them; who may ask
is server/guard/access.py's question, how many at once server/transport/listener.py's.

Measured traps this avoids (see ../shared/notes/measured-pitfalls.md): the
44 ms Nagle/delayed-ACK stall of a response written in two pieces (we set
TCP_NODELAY and write each response in one send) and the 1-1.5 s p99 spikes
from the default listen backlog of 5 (we use 128).
"""

from __future__ import annotations

import io
import json
import logging
import socket
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from i18n import negotiate
from server.api.routing import Request, Response, Router, StreamResponse, parse_query, prefers_html
from server.app import Application
from server.errors import ApiError, from_task_error, stdlib_error
from server.guard import crosssite
from server.guard.identity import Refused, request_id
from server.logbatch import AccessLog
from server.transport.framing import body_framing, read_chunked
from server.transport.headers import escape as _escape
from server.transport.headers import http_date as _http_date
from server.transport.headers import merge_vary as _merge_vary
from server.transport.listener import RobotHTTPServer
from server.transport.reader import DeadlineReader, DeadlineWriter, HeadBudget
from server.transport.requesthead import Head, parse_head
from tasks.errors import TaskError
from tasks.store.audit import AuditEntry

log = logging.getLogger("server")
access_log = logging.getLogger("server.access")
# The request thread only enqueues a finished line (server/logbatch.py).
_access_line = AccessLog("server.access").emit

MAX_REQUEST_LINE = 8192  # 414 beyond (the stdlib allows 64 KiB)
MAX_HEADER_BYTES = 32 * 1024  # all header lines together; 431 beyond
# Status lines built once ("HTTP/1.1 200 OK\r\n"), not through HTTPStatus per response.
_STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n" for s in HTTPStatus}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "RobotTaskServer/1.0"
    sys_version = ""
    timeout = None  # timeouts are the reader's (kernel ones where possible)
    server: RobotHTTPServer
    # A BufferedReader; a HeadBudget while the stdlib parses a head (handle_one_request).
    rfile: Any

    def setup(self) -> None:
        config = self.server.app.settings
        super().setup()
        # Swap the stdlib's reader for one that enforces the request deadline. The
        # old one must be closed, or the socket is never really closed (io refs).
        self.rfile.close()
        self._reader = DeadlineReader(self.connection, idle=config.idle_timeout,
                                      write=config.request_timeout)
        self.rfile = io.BufferedReader(self._reader, 65536)
        if self._reader.kernel:
            self.wfile = DeadlineWriter(self.connection, config.request_timeout)
        self._access = self.server.access
        self._peer = self._access.peer(self.client_address[0])
        self._extra_headers: dict[str, str] = {}
        self._body_pending = False
        self._chunked = False
        self._expect_continue = False
        self._vary_lang = False

    def handle_one_request(self) -> None:
        config = self.server.app.settings
        # Set before anything can fail, so a refusal is logged and answered sanely.
        self.command = self.request_version = self.requestline = ""
        self._extra_headers = {}
        self._body_pending = self._expect_continue = self._vary_lang = False
        self._chunked = False
        self._fwd = self._peer.direct
        self._request_id = ""
        try:
            # Idle keep-alive: wait for the first byte of the next request.
            self._reader.arm_idle(config.idle_timeout)
            try:
                data = self.rfile.peek(1)
            except (TimeoutError, ConnectionError):
                data = b""
            if not data:
                self.close_connection = True
                return
            # From the first byte on, the head and body must arrive by the deadline.
            self._reader.arm(config.request_deadline, config.request_timeout)
            # Almost every head is plain and came whole in the first packet: parsed
            # from the buffer without the email package. Anything else: the stdlib.
            head = parse_head(data, MAX_REQUEST_LINE, MAX_HEADER_BYTES)
            if head is not None:
                self.rfile.read(head.size)  # already buffered: no socket read
                if self._take_head(head):
                    self._dispatch()
                return
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

    def _take_head(self, head: Head) -> bool:
        """What parse_request sets, from a plain head (same rules, same fields)."""
        self.command, self.path = head.method, head.target
        self.request_version, self.requestline = head.version, head.requestline
        self.headers = head.headers  # type: ignore[assignment]  # the same API, see Headers
        self.close_connection = head.version != "HTTP/1.1"
        conntype = (head.headers.get("Connection") or "").lower()
        if conntype == "close":
            self.close_connection = True
        elif conntype == "keep-alive":
            self.close_connection = False
        expect = head.headers.get("Expect")
        if expect is not None and expect.lower() == "100-continue" \
                and head.version == "HTTP/1.1":
            return self.handle_expect_100()
        return True

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
        lang = negotiate(self.headers.get("Accept-Language"), app.settings.lang)
        headers = self.headers
        access = self._access
        self._request_id = request_id(headers.get("X-Request-ID"))
        path = self.path
        try:
            # The checks, in order: client, framing, Host, Origin, route, token.
            self._fwd = access.client(self._peer, headers)
            access.check_client(self._peer, self._fwd)
            self._check_framing()
            target = self.path
            if target[:1] == "/" and "?" not in target and "#" not in target:
                path, raw_query = target, ""  # what urlsplit gives for a plain path
            else:
                url = urlsplit(target)
                path, raw_query = url.path, url.query
            # Liveness reveals nothing: a monitor may probe it by any name.
            access.check_host(headers, self.request_version, self._fwd,
                              check_name=path != "/health")
            cors = access.check_origin(self.command, headers, self._fwd)
            if cors is not None:
                self._extra_headers = cors
            if cors is not None and crosssite.is_preflight(self.command, headers):
                response = access.preflight()
            else:
                func, params = self.server.router.match(self.command, path, raw_query)
                query = parse_query(raw_query) if raw_query else {}
                mark = getattr(func, "long_lived", None)  # admission: before token and body
                long_lived = mark is True or (isinstance(mark, str) and bool(query.get(mark)))
                if self.server.route(self.request, long_lived, getattr(func, "emergency", False)):
                    self.close_connection = True  # the stop reserve: one request, then free
                streaming = long_lived
                principal = app.identity.authorize(func.permission,  # type: ignore[attr-defined]
                                                   headers, self._fwd.client)
                body = self._read_body()
                request = Request(self.command, path, query, headers, body, app,
                                  self._fwd.client, params, language=lang,
                                  principal=principal, request_id=self._request_id)
                try:
                    response = func(request)
                finally:
                    self._vary_lang = request.lang_used
        except ApiError as exc:
            if isinstance(exc, Refused):
                self._audit_refused(exc, path)
            response = self._refusal(exc, lang)
        except TaskError as exc:
            # The task layer says what went wrong; server/errors.py, what it means in HTTP.
            response = self._refusal(from_task_error(exc), lang)
        except Exception:
            # The log has the traceback; the client gets no path, port or trace.
            log.exception("internal error on %s %s", self.command, _escape(self.path))
            response = Response(500, ApiError("internal_error", 500).body(lang))
            self._vary_lang = True
        if self._body_pending:
            self.close_connection = True  # unread body bytes must not become a request
        self._reader.disarm(app.settings.request_timeout)
        try:
            if isinstance(response, StreamResponse):
                self._stream(response)
            else:
                self._send(response)
        finally:
            if streaming:
                self.server.leave_stream(self.request)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s took %.2f ms", self.command, _escape(self.path),
                      (time.perf_counter() - started) * 1000)

    def _audit_refused(self, exc: Refused, path: str) -> None:
        """A 401 or 403 is on record, and a lock-out once, when it starts (not every
        429 after it: a flood must not become a flood of commits)."""
        if exc.status == 429:
            return
        who = exc.who
        entry = AuditEntry(who.name if who else "unknown", who.role if who else "-",
                           self._fwd.client, "auth.refused", target=f"{self.command} {path}",
                           request_id=self._request_id, status=exc.status,
                           reason=str(exc.params["permission"]) if exc.params else None)
        rows = [entry.statement()]
        if exc.lockout:
            rows.append(AuditEntry("unknown", "-", self._fwd.client, "auth.lockout",
                                   target=self._fwd.client, request_id=self._request_id,
                                   status=429).statement())
        try:
            self.server.app.manager.store.commit(rows)
        except TaskError:  # the refusal stands; the log says the row is missing
            log.error("audit row of a refused request could not be written")

    def _refusal(self, exc: ApiError, lang: str) -> Response:
        self._vary_lang = True
        if exc.close:
            self.close_connection = True
        if exc.status in (403, 421) and self._wants_page():
            return Response(exc.status, exc.page(lang), exc.headers,
                            content_type="text/html; charset=utf-8")
        return Response(exc.status, exc.body(lang), exc.headers)

    def _wants_page(self) -> bool:
        """A browser opening a URL (not a script, not the dashboard's fetch)."""
        return self.command in ("GET", "HEAD") and prefers_html(self.headers.get("Accept"))

    # -- framing ----------------------------------------------------------------------------
    def _check_framing(self) -> None:
        # Exactly one way to find where this request ends, or the connection closes.
        self._body_length, self._chunked = body_framing(self.headers,
                                                        self.server.app.settings.max_body)
        self._body_pending = self._chunked or self._body_length > 0

    def _read_body(self) -> bytes:
        # Framing was checked first; every matched request's body is read, even where
        # the route ignores it, so a keep-alive connection stays in step.
        length = self._body_length
        if not length and not self._chunked:
            return b""
        if self._expect_continue:
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            if self._chunked:
                body = read_chunked(self.rfile, self.server.app.settings.max_body)
            else:
                body = self.rfile.read(length)
        except TimeoutError:
            raise ApiError("body_timeout", 408, close=True) from None
        if not self._chunked and len(body) != length:
            raise ApiError("body_short", 400, close=True)
        self._body_pending = False
        return body

    # -- responses -------------------------------------------------------------------------
    def _head(self, status: int, headers: dict[str, str], content_type: str,
              length: int | None) -> bytes:
        parts = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} \r\n",
                 f"Server: {self.server_version}\r\nDate: {_http_date()}\r\n"
                 f"Content-Type: {content_type}\r\n"]
        if length is not None:
            parts.append(f"Content-Length: {length}\r\n")
        if self._request_id:
            parts.append(f"X-Request-ID: {self._request_id}\r\n")
        extra = self._extra_headers
        if extra or self._vary_lang or "Vary" in headers:
            merged = {**extra, **headers}
            vary = _merge_vary(extra.get("Vary"), headers.get("Vary"),
                               "Accept-Language" if self._vary_lang else None)
            if vary:
                merged["Vary"] = vary
        else:
            merged = headers  # nothing to merge: the common case
        for name, value in merged.items():
            parts.append(f"{name}: {value}\r\n")
        if self.close_connection or length is None:
            parts.append("Connection: close\r\n")
        elif self.request_version == "HTTP/1.0":
            # HTTP/1.0 closes by default: a client that asked to keep the connection
            # (the stdlib kept it open) waits for this header (ab -k did, 30 s).
            parts.append("Connection: keep-alive\r\n")
        parts.append("\r\n")
        return "".join(parts).encode("latin-1")

    def _send(self, response: Response) -> None:
        if isinstance(response.body, bytes):
            payload = response.body
        else:
            payload = json.dumps(response.body, ensure_ascii=False).encode("utf-8")
        head = self._head(response.status, response.headers, response.content_type,
                          len(payload))
        self.server.app.metrics.count_http(response.status)
        # Logged before the write, as the stdlib's send_response does: a submit's line
        # ("task ... pending") then usually precedes the worker's "running".
        self._log_access(response.status, len(payload), response.log_note)
        # One write per response: headers and body in a single send.
        self.wfile.write(head if self.command == "HEAD" else head + payload)

    def _stream(self, response: StreamResponse) -> None:
        self.close_connection = True
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **response.headers}
        chunked = self.request_version != "HTTP/1.0"  # one chunk per event: read at once
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        self.server.app.metrics.count_http(200)
        # The body is written by the event streams' one thread (server/transport/
        # streams.py) once this thread is done; a failed head write ends it there.
        self.server.detach_stream(self.request, response.chunks, chunked)
        self.wfile.write(self._head(200, headers, response.content_type, None))
        self._log_access(200, "-")

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        # The stdlib's errors (bad request line, header limits) are HTML; ours are JSON.
        log.debug("%s: refused (%d): %s", self.client_address[0], code, message)
        self._refuse_early(stdlib_error(code))

    def _refuse_early(self, exc: ApiError) -> None:
        """A refusal before the head is parsed: in the server's language, then close."""
        self.close_connection = True
        self._reader.disarm(self.server.app.settings.request_timeout)
        self._vary_lang = False
        self._send(Response(exc.status, exc.body(self.server.app.settings.lang), exc.headers))

    def address_string(self) -> str:
        fwd = self._fwd
        return f"{_escape(fwd.client)} via {fwd.peer}" if fwd.via_proxy else fwd.peer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        if access_log.isEnabledFor(logging.INFO):
            _access_line(f"{self.address_string()} {_escape(format % args)}")

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        self._log_access(code, size)

    def _log_access(self, code: Any, size: Any, note: str = "") -> None:
        """The request's one access-log line (built only when INFO is on)."""
        if not access_log.isEnabledFor(logging.INFO):
            return
        line = _escape(f'"{self.requestline}" {code} {size}')
        _access_line(f"{self.address_string()} {line} {note}" if note
                     else f"{self.address_string()} {line}")


def make_server(host: str, port: int, app: Application, router: Router, *,
                backlog: int = 128) -> RobotHTTPServer:
    server = RobotHTTPServer((host, port), app, router, Handler, backlog=backlog)
    server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server
