"""Requests, responses and the (method, path) route table."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from i18n import t
from server.app import Application
from server.errors import ApiError
from server.jsonbody import parse_json


@dataclass
class Response:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes sent as is
    headers: dict[str, str] = field(default_factory=dict)
    # charset: JSON needs none (RFC 8259), but Windows PowerShell 5.1's Invoke-RestMethod
    # reads a reply without one as ISO-8859-1 and garbles the guide's Chinese messages.
    content_type: str = "application/json; charset=utf-8"


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
    # The reply's language: Accept-Language, else the server's (http.py negotiates it).
    language: str = "en"
    # Set once a route reads the language: the reply then carries Vary: Accept-Language.
    lang_used: bool = False

    @property
    def lang(self) -> str:
        self.lang_used = True
        return self.language

    def t(self, key: str, /, **params: object) -> str:
        """A catalogue text in the reply's language."""
        return t(key, self.lang, **params)

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
            raise ApiError("query_not_number", 400, params={"name": name}) from None
        if not low < value <= high:
            raise ApiError("query_out_of_range", 400,
                           params={"name": name, "low": f"{low:g}", "high": f"{high:g}"},
                           extra={"param": name, "low": low, "high": high})
        return value

    def query_int(self, name: str, *, default: int, low: int, high: int) -> int:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        # isascii: str.isdigit() also accepts digits int() refuses ("\xb2").
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 18) or not low <= int(raw) <= high:
            raise ApiError("query_not_integer", 400,
                           params={"name": name, "low": low, "high": high})
        return int(raw)


Route = Callable[[Request], "Response | StreamResponse"]


def public(func: Route) -> Route:
    """Mark a route as reachable without the API token (health, the page shell)."""
    func.public = True  # type: ignore[attr-defined]
    return func


def emergency(func: Route) -> Route:
    """Mark the route that may use the connections kept beyond the cap (stop)."""
    func.emergency = True  # type: ignore[attr-defined]
    return func


def long_lived(query_param: str | None = None) -> Callable[[Route], Route]:
    """Mark a route that may hold its connection open: always (SSE), or only when
    `query_param` is given (a `?wait=` long-poll). Such requests are counted in
    their own pool so they cannot use up the slots of ordinary requests."""
    def mark(func: Route) -> Route:
        func.long_lived = query_param or True  # type: ignore[attr-defined]
        return func
    return mark


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
            raise ApiError("method_not_allowed", 405,
                           params={"method": method, "path": path, "allowed": allow},
                           headers={"Allow": allow})
        raise ApiError("no_such_endpoint", 404, params={"path": path})
