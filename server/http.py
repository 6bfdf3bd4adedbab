"""The HTTP server: one BaseHTTPRequestHandler dispatching a (method, path) table.

Measured traps this avoids (see ../shared/notes/measured-pitfalls.md): the
44 ms Nagle/delayed-ACK stall of a response written in two pieces (we set
TCP_NODELAY and write each response in one send) and the 1-1.5 s p99 spikes
from the default listen backlog of 5 (we use 128).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from server.app import Application
from server.errors import ApiError

log = logging.getLogger("server")
access_log = logging.getLogger("server.access")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_JSON_DEPTH = 32


def _escape(text: str) -> str:
    """One request = one log line: control characters are shown, not obeyed."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


@dataclass
class Response:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes sent as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class StreamResponse:
    """A response written as it is produced (SSE); the connection closes after it."""

    chunks: Iterator[bytes]
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/event-stream; charset=utf-8"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Any  # http.client.HTTPMessage
    body: bytes
    app: Application
    client: str
    params: dict[str, str] = field(default_factory=dict)  # path captures

    def json(self) -> Any:
        return parse_json(self.body)

    def query_number(self, name: str, *, low: float, high: float,
                     default: float | None = None) -> float | None:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ApiError(f"query parameter {name!r} must be a number", 400) from None
        if not low < value <= high:
            raise ApiError(f"query parameter {name!r} must be in ({low:g}, {high:g}]", 400)
        return value

    def query_int(self, name: str, *, default: int, low: int, high: int) -> int:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise ApiError(f"query parameter {name!r} must be an integer in "
                           f"[{low}, {high}]", 400)
        return int(raw)


def _reject_constant(name: str) -> Any:
    raise ApiError(f"invalid JSON: {name} is not allowed", 400)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ApiError(f"invalid JSON: number {text[:20]} is out of range", 400)
    return value


def _depth(text: str) -> int:
    """Maximum nesting of arrays/objects, outside strings (before json.loads recurses)."""
    depth = peak = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            peak = max(peak, depth)
        elif ch in "]}":
            depth -= 1
    return peak


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8, bounded nesting, no NaN/Infinity, no huge numbers."""
    if not body.strip():
        raise ApiError("the request body is empty; send a JSON command", 400)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("the request body is not UTF-8", 400) from None
    if _depth(text) > MAX_JSON_DEPTH:
        raise ApiError(f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels", 400)
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise ApiError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                       400) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer with 5000 digits
        raise ApiError(f"invalid JSON: {exc}", 400) from None


Route = Callable[[Request], "Response | StreamResponse"]


def public(func: Route) -> Route:
    """Mark a route as reachable without the API token (health, the page shell)."""
    func.public = True  # type: ignore[attr-defined]
    return func


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Route]] = []

    def add(self, method: str, pattern: str, func: Route) -> None:
        regex = re.compile("^" + re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", pattern) + "$")
        self._routes.append((method, regex, func))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        allowed = []
        for route_method, regex, func in self._routes:
            m = regex.match(path)
            if m is None:
                continue
            if route_method == method or (method == "HEAD" and route_method == "GET"):
                return func, m.groupdict()
            allowed.append(route_method)
        if allowed:
            allow = ", ".join(sorted(set(allowed) | ({"HEAD"} if "GET" in allowed else set())))
            raise ApiError(f"method {method} is not allowed on {path}; allowed: {allow}", 405,
                           headers={"Allow": allow})
        raise ApiError(f"no such endpoint: {path}", 404)


class RobotHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: Application, router: Router, *,
                 backlog: int = 128) -> None:
        self.request_queue_size = backlog
        self.app = app
        self.router = router
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The stdlib prints a traceback for every client that hangs up mid-request.
        log.info("connection from %s ended with an error", client_address[0], exc_info=False)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "RobotTaskServer/1.0"
    sys_version = ""
    server: RobotHTTPServer

    def setup(self) -> None:
        self.timeout = self.server.app.config.request_timeout
        super().setup()

    # Every method goes through one dispatcher so unknown methods get 405/404 JSON.
    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        started = time.perf_counter()
        app = self.server.app
        try:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            func, params = self.server.router.match(self.command, url.path)
            self._authorize(func, url.path)
            body = self._read_body()
            request = Request(self.command, url.path, query, self.headers, body, app,
                              self.client_address[0], params)
            response = func(request)
        except ApiError as exc:
            response = Response(exc.status, exc.body(), exc.headers)
            if exc.close:
                self.close_connection = True
        except Exception:
            # The log has the traceback; the client gets no path, port or trace.
            log.exception("internal error on %s %s", self.command, _escape(self.path))
            response = Response(500, {"success": False, "message": "internal server error"})
        if isinstance(response, StreamResponse):
            self._stream(response)
        else:
            self._send(response)
        log.debug("%s %s took %.2f ms", self.command, _escape(self.path),
                  (time.perf_counter() - started) * 1000)

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
        if "Transfer-Encoding" in self.headers:
            raise ApiError("Transfer-Encoding is not supported on requests; send "
                           "Content-Length", 501, close=True)
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return b""
        if len(lengths) > 1 or not lengths[0].strip().isdigit():
            raise ApiError("invalid Content-Length", 400, close=True)
        length = int(lengths[0])
        limit = self.server.app.config.max_body
        if length > limit:
            raise ApiError(f"request body too large ({length} bytes; limit {limit})", 413,
                           close=True)
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            raise ApiError("request body shorter than Content-Length", 400, close=True)
        return body

    def _head(self, status: int, headers: dict[str, str], content_type: str,
              length: int | None) -> bytes:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        lines = [f"HTTP/1.1 {status} {phrase}", f"Server: {self.server_version}",
                 f"Date: {formatdate(usegmt=True)}", f"Content-Type: {content_type}"]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        lines += [f"{k}: {v}" for k, v in headers.items()]
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
        # One write per response: headers and body in a single send.
        self.wfile.write(head if self.command == "HEAD" else head + payload)
        self.log_request(response.status, len(payload))

    def _stream(self, response: StreamResponse) -> None:
        self.close_connection = True
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **response.headers}
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
