"""Requests (and their strict query-parameter and Accept readers), responses and the
(method, path) route table."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from i18n import t
from server.api.jsonbody import parse_json
from server.app import Application
from server.errors import ApiError
from server.guard.identity import ANONYMOUS, Principal, forbidden
from server.guard.permissions import PERMISSIONS, PUBLIC, allowed
from server.transport.headers import one_line
from server.transport.streams import Source
from tasks.commands import CommandError
from tasks.queue.views import QueueBrief
from tasks.store.audit import AuditEntry

# ?dry_run= and the like: exactly these words, in any case; anything else is refused
# rather than guessed (a typo must not queue a real task for the robot).
FLAG_TRUE = ("true", "1", "yes", "on")
FLAG_FALSE = ("false", "0", "no", "off")
EXTERNAL_ID_MAX = 200  # as a sequence's (tasks/sequences/plan.py)
# JSON Schema's number, no more: float() would also take "nan", "inf" and "1_0".
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"-?[0-9]+")  # [0-9]: ASCII digits, not every Unicode digit
_UNREAD = object()  # Request._parsed before the body is decoded
# What a Location header may carry as is; the rest of a client's path is %-escaped.
_URL_SAFE = "/%:@!$&'()*+,;=-._~?"


def parse_query(raw: str) -> dict[str, str]:
    """A query string's parameters; each may be given once."""
    # Which of ?dry_run=no&dry_run=1 counts is a guess nobody should have to make.
    values = parse_qs(raw, keep_blank_values=True)
    for name, given in values.items():
        if len(given) > 1:
            raise ApiError("query_repeated", 400, params={"name": repr(name[:50])},
                           extra={"param": name[:50]})
    return {name: given[0] for name, given in values.items()}


@dataclass
class Response:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes sent as is
    headers: dict[str, str] = field(default_factory=dict)
    # charset: JSON needs none (RFC 8259), but Windows PowerShell 5.1's Invoke-RestMethod
    # reads a reply without one as ISO-8859-1 and garbles the guide's Chinese messages.
    content_type: str = "application/json; charset=utf-8"
    # Appended to this request's access-log line (e.g. the task a submit created), so
    # one record per request says what it did.
    log_note: str = ""


@dataclass
class StreamResponse:
    """A response written as it is produced (SSE), by the event streams' one thread
    (server/transport/streams.py); the connection closes after it."""

    chunks: Source
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
    principal: Principal = ANONYMOUS  # who is asking (server/guard/identity.py)
    request_id: str = ""  # the X-Request-ID the reply carries and audit rows name
    # The body decoded once: a submit's route reads it, and its audit row's reason too.
    _parsed: Any = field(default=_UNREAD, repr=False)

    @property
    def lang(self) -> str:
        self.lang_used = True
        return self.language

    def t(self, key: str, /, **params: object) -> str:
        """A catalogue text in the reply's language."""
        return t(key, self.lang, **params)

    def json(self) -> Any:
        if self._parsed is _UNREAD:
            self._parsed = parse_json(self.body)  # a refusal is raised, never kept
        return self._parsed

    def declares_json(self) -> bool:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        return ctype == "application/json"

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object: 415 unless it is declared application/json, 400
        unless it parses to an object."""
        if not self.declares_json():
            raise ApiError("content_type", 415)
        body = self.json()
        if not isinstance(body, dict):
            raise ApiError("not_json_object", 400)
        return body

    def framed_json(self) -> dict[str, Any]:
        """The body of a submit: 411 unless its length is framed (Content-Length or
        chunked, which http.py read), then json_object()."""
        if "Content-Length" not in self.headers and "Transfer-Encoding" not in self.headers:
            raise ApiError("length_required", 411)
        return self.json_object()

    def command(self) -> tuple[str, dict[str, Any]]:
        """(cmd_type, params) of a one-command body, checked against the server's
        command table: 422 naming the bad field."""
        body = self.framed_json()
        if isinstance(body, dict) and not SUBMIT_EXTRAS.isdisjoint(body):
            body = {k: v for k, v in body.items() if k not in SUBMIT_EXTRAS}
        commands = self.app.commands
        assert commands is not None  # Application falls back to the manager's table
        try:
            return commands.validate(body)
        except CommandError as exc:
            raise ApiError(exc.code, 422, params=exc.params,
                           extra={"field": exc.field}) from None

    def external_id(self) -> str | None:
        """A submit's optional ``external_id`` (a LIMS's own id): 1-200 characters, no
        control characters; 422 ``external_id_invalid`` otherwise."""
        body = self.framed_json()
        value = body.get("external_id") if isinstance(body, dict) else None
        if value is None:
            return None
        if (not isinstance(value, str) or not value.strip() or len(value) > EXTERNAL_ID_MAX
                or any(ord(c) < 32 or ord(c) == 127 for c in value)):
            raise ApiError("external_id_invalid", 422, params={"max": EXTERNAL_ID_MAX},
                           extra={"field": "external_id"})
        return value

    def idempotency_key(self) -> str | None:
        """The Idempotency-Key header, if sent: 1-255 printable ASCII characters."""
        key = self.headers.get("Idempotency-Key")
        if key is not None and (not key or len(key) > 255
                                or not all(32 <= ord(c) < 127 for c in key)):
            raise ApiError("idempotency_key_invalid", 400)
        return key

    def query_number(self, name: str, *, low: float, high: float,
                     default: float | None = None, clamp: bool = False) -> float | None:
        """A number in (low, high]; absent: default. With `clamp`, a larger one is
        `high` (a long-poll asked to wait longer just waits as long as it may)."""
        raw = self.query.get(name)
        if raw is None:
            return default
        if not _NUMBER.fullmatch(raw):
            raise ApiError("query_not_number", 400, params={"name": name})
        value = float(raw)  # may be inf ("1e999"): clamped, or out of range
        if clamp and value > high:
            return high
        if not low < value <= high:
            raise ApiError("query_out_of_range", 400,
                           params={"name": name, "range": f"({low:g}, {high:g}]"},
                           extra={"param": name, "low": low, "high": high})
        return value

    def query_int(self, name: str, *, default: int, low: int, high: int) -> int:
        """An integer in [low, high]; absent: default. Not an integer: query_not_integer;
        an integer outside the range: query_out_of_range (the client's value was read)."""
        raw = self.query.get(name)
        if raw is None:
            return default
        # ASCII digits only: str.isdigit() also accepts digits int() refuses ("\xb2"). An
        # empty value is refused too: `?limit=` is more likely a script's unset variable
        # than a wish for the default.
        if not _INTEGER.fullmatch(raw):
            raise ApiError("query_not_integer", 400,
                           params={"name": name, "low": low, "high": high})
        # More than 18 digits is past every limit: a huge number is never converted.
        digits = raw.lstrip("-").lstrip("0") or "0"
        value = (-1 if raw[0] == "-" else 1) * int(digits[:19])
        if len(digits) > 18 or not low <= value <= high:
            raise ApiError("query_out_of_range", 400,
                           params={"name": name, "range": f"[{low}, {high}]"},
                           extra={"param": name, "low": low, "high": high})
        return value

    def query_flag(self, name: str) -> bool:
        """A yes/no parameter: absent is no; true/1/yes/on or false/0/no/off in any case."""
        raw = self.query.get(name)
        if raw is None:
            return False
        word = raw.lower() if raw.isascii() else raw
        if word in FLAG_TRUE:
            return True
        if word in FLAG_FALSE:
            return False
        raise ApiError("query_not_boolean", 400, params={"name": name, "value": repr(raw[:50])},
                       extra={"param": name})

    def prefers_html(self) -> bool:
        """A browser opening a URL, not a script or a fetch() asking for JSON."""
        return prefers_html(self.headers.get("Accept"))

    # -- who, and why (docs/security.md) -----------------------------------------------
    def may(self, permission: str) -> bool:
        return allowed(self.principal.role, permission)

    def check_owner(self, owner: str | None) -> None:
        """Acting on work of ``owner``: one's own, or with `others` (403 naming it)."""
        if owner != self.principal.name and not self.may("others"):
            raise forbidden(self.principal, "others")

    def reason(self) -> str | None:
        """Why, as the client says: the X-Reason header (UTF-8, may be %-escaped), else
        a JSON body's `reason`. One sane line of at most 500 characters."""
        raw = self.headers.get("X-Reason")
        if raw is not None:
            try:  # http.server decoded the header's bytes as latin-1
                raw = raw.encode("latin-1").decode("utf-8")
            except (UnicodeEncodeError, UnicodeDecodeError):
                pass
            if "%" in raw:
                raw = unquote(raw, errors="replace")
        elif self.body.strip() and self.declares_json():
            try:
                body = self.json()
            except ApiError:
                body = None  # the route reads the body and refuses it in its own words
            raw = body.get("reason") if isinstance(body, dict) else None
        if not isinstance(raw, str):
            return None
        return one_line(raw, 500)

    def need_reason(self) -> None:
        """With --require-reason: 400 unless the request says why."""
        if self.app.settings.require_reason and self.reason() is None:
            raise ApiError("reason_required", 400)

    def audit(self, action: str, *, target: str | None = None,
              before: str | None = None) -> AuditEntry:
        """This request's audit row, for the task layer to commit with its change."""
        return AuditEntry(self.principal.name, self.principal.role, self.client, action,
                          target=target, before=before, reason=self.reason(),
                          request_id=self.request_id)


# A submit's keys that are the task's, not the command's.
SUBMIT_EXTRAS = frozenset({"external_id", "not_before"})


def paused_fields(req: Request, queue: QueueBrief) -> dict[str, Any]:
    """What a 202 adds while the queue is paused: the work waits, and why."""
    if not queue.paused:
        return {}
    return {"queue_paused": True, "pause_reason": queue.pause_reason,
            "pause_code": queue.pause_code,
            "warning": req.t("reply.queued_while_paused", reason=queue.pause_reason)}


def prefers_html(accept: str | None) -> bool:
    """q(text/html) > q(application/json): ties (*/*, no Accept) go to JSON."""
    return media_quality(accept, "text/html") > media_quality(accept, "application/json")


def media_quality(accept: str | None, media_type: str) -> float:
    """q of `media_type` from the most specific matching range (exact > type/* > */*);
    no matching range (or no header): 0."""
    kind = media_type.split("/")[0]
    best: tuple[int, float] = (-1, 0.0)  # (specificity, q)
    for item in (accept or "").split(","):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        if media == media_type:
            rank = 2
        elif media == f"{kind}/*":
            rank = 1
        elif media == "*/*":
            rank = 0
        else:
            continue
        q = 1.0
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                value = value.strip()
                valid = _NUMBER.fullmatch(value) and not value.startswith("-")
                q = min(float(value), 1.0) if valid else 0.0
        if rank > best[0] or (rank == best[0] and q > best[1]):
            best = (rank, q)
    return best[1]


Route = Callable[[Request], "Response | StreamResponse"]


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
        # Fixed paths ("/queue/status") found by one dict lookup; only those that no
        # earlier pattern matches, so the answer is the one the ordered scan gives.
        self._fixed: dict[tuple[str, str], Route] = {}
        self._table: list[tuple[str, str, str]] = []  # (method, pattern, permission)

    def add(self, method: str, pattern: str, func: Route, permission: str) -> None:
        """Route (method, pattern) to ``func``, which needs ``permission``
        (server/guard/permissions.py): every route says what it needs."""
        if permission != PUBLIC and permission not in PERMISSIONS:
            raise ValueError(f"{method} {pattern}: unknown permission {permission!r}")
        known = getattr(func, "permission", permission)
        if known != permission:  # one function, one permission, whatever its path
            raise ValueError(f"{method} {pattern}: {func.__name__} needs {known!r}")
        func.permission = permission  # type: ignore[attr-defined]
        self._table.append((method, pattern, permission))
        regex = re.compile("^" + re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", pattern) + "$")
        if "<" not in pattern and (method, pattern) not in self._fixed and not any(
                r.match(pattern) for m, r, _ in self._routes if m == method):
            self._fixed[(method, pattern)] = func
        self._routes.append((method, regex, func))

    def routes(self) -> list[tuple[str, str, str]]:
        """(method, pattern, permission) of every route, in the table's order."""
        return list(self._table)

    def match(self, method: str, path: str,
              query: str = "") -> tuple[Route, dict[str, str]]:
        """The route for (method, path). `query` (the raw query string) only goes into
        the Location of a trailing-slash redirect."""
        fixed = self._fixed.get((method, path))
        if fixed is not None:
            return fixed, {}
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
        stripped = path.rstrip("/")
        if stripped and stripped != path and any(regex.match(stripped)
                                                 for _, regex, _ in self._routes):
            # "/queue/status/" is a common typo: say where it is. 308, not 301: a POST
            # is repeated as a POST with its body. %-escaped, so no control character
            # or non-ASCII byte of the client's reaches a header line; latin-1, as
            # http.server decoded the request line, so the escapes are its bytes.
            location = quote(stripped, safe=_URL_SAFE, encoding="latin-1", errors="replace")
            if query:
                location += "?" + quote(query, safe=_URL_SAFE, encoding="latin-1",
                                        errors="replace")
            raise ApiError("trailing_slash", 308, params={"location": location},
                           headers={"Location": location})
        raise ApiError("no_such_endpoint", 404, params={"path": path})
