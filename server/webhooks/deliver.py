"""One delivery attempt: a signed POST to a checked address, redirects never followed,
the whole exchange bounded by a deadline. Nothing here raises: an attempt's outcome is
data (the status code or the error, Retry-After, the time it took)."""

from __future__ import annotations

import email.utils
import http.client
import socket
import ssl
import time
from dataclasses import dataclass

from server.webhooks.allow import AllowList, Refused
from server.webhooks.signing import sign

USER_AGENT = "robot-task-server-webhooks/1"
_READ_MAX = 65536  # of the receiver's reply, read and dropped
RETRY_AFTER_MAX = 24 * 3600.0


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    retry_after: float | None
    duration_ms: int
    time: float

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class _Connection(http.client.HTTPConnection):
    """Connects to the checked address, whatever the host name resolves to now."""

    def __init__(self, address: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _TlsConnection(_Connection):
    def connect(self) -> None:
        super().connect()
        context = ssl.create_default_context()
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)


def retry_after(value: str | None) -> float | None:
    """Seconds of a Retry-After header (a number or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_MAX)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when - time.time()), RETRY_AFTER_MAX)


def post(allow: AllowList, url: str, secret: str, msg_id: str, body: str, *,
         timeout: float) -> Outcome:
    """Send one signed delivery now."""
    started, wall = time.monotonic(), time.time()

    def done(code: int | None, error: str | None, after: float | None = None) -> Outcome:
        return Outcome(code, error, after, int((time.monotonic() - started) * 1000), wall)

    try:
        target = allow.check(url)  # again: DNS may have changed since the subscription
    except Refused as refused:
        return done(None, refused.text("en"))
    data = body.encode("utf-8")
    stamp = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "webhook-id": msg_id, "webhook-timestamp": str(stamp),
               "webhook-signature": sign(secret, msg_id, stamp, data)}
    kind = _TlsConnection if target.scheme == "https" else _Connection
    conn = kind(target.address, target.host, target.port, timeout)
    deadline = started + timeout
    try:
        conn.request("POST", target.path, body=data, headers=headers)
        if conn.sock is not None:  # what is left of the deadline for the reply
            conn.sock.settimeout(max(0.1, deadline - time.monotonic()))
        response = conn.getresponse()
        response.read(_READ_MAX)
        code = response.status
        if 300 <= code < 400:
            where = (response.getheader("Location") or "")[:200]
            return done(code, f"redirect not followed (Location: {where})")
        if 200 <= code < 300:
            return done(code, None)
        return done(code, f"HTTP {code} {response.reason}"[:200],
                    retry_after(response.getheader("Retry-After")))
    except (OSError, http.client.HTTPException) as exc:
        text = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        return done(None, text[:300])
    finally:
        conn.close()
