"""Who is asking (docs/security.md): the token of a request as a principal, and the
lock-out of an address that keeps sending bad tokens.

Nothing set up (no principal ever made, no --api-token): everyone is `anonymous` with
every right, as before principals existed. --api-token is the principal `admin`.
Principals are read from the task database at most once a second (a `users add` on
the server PC takes effect within that), and at once after a change made here.
"""

from __future__ import annotations

import collections
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.errors import ApiError
from server.guard.permissions import PUBLIC, allowed
from settings import Settings
from tasks.store.principals import PrincipalRow, PrincipalStore, token_hash

log = logging.getLogger("server.guard")

BAD_TOKENS = 10  # within WINDOW_S from one address: locked out for LOCK_S
WINDOW_S = 60.0
LOCK_S = 60.0
CACHE_S = 1.0
_MAX_ADDRESSES = 4096  # bounded: addresses are many under a spray
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]+")


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    kind: str  # person, program, token (--api-token), anonymous


ANONYMOUS = Principal("anonymous", "admin", "anonymous")
# A public route's caller once access is set up: no role, so no right beyond the route.
NOBODY = Principal("anonymous", "none", "anonymous")
TOKEN_ADMIN = Principal("admin", "admin", "token")


class Refused(ApiError):
    """A 401, 403 or 429: the handler records it in the audit trail."""

    def __init__(self, code: str, status: int, *, who: Principal | None = None,
                 lockout: bool = False, **kwargs: Any) -> None:
        super().__init__(code, status, **kwargs)
        self.who = who
        self.lockout = lockout  # a lock-out started with this refusal


def presented(headers: Any) -> str | None:
    """The token a request carries: X-API-Key, or Authorization: Bearer."""
    given = headers.get("X-API-Key")
    auth = headers.get("Authorization") or ""
    if given is None and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return given


class Identity:
    def __init__(self, principals: PrincipalStore, settings: Settings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.principals = principals
        self.settings = settings  # --api-token read per request, as before
        self.clock = clock
        self._lock = threading.Lock()
        self._table: tuple[dict[str, PrincipalRow], bool] = ({}, False)
        self._read_at: float | None = None
        self._bad: dict[str, collections.deque[float]] = {}
        self._locked: dict[str, float] = {}  # address -> until (clock)

    # -- principals ----------------------------------------------------------------------
    def invalidate(self) -> None:
        with self._lock:
            self._read_at = None

    def _tokens(self) -> tuple[dict[str, PrincipalRow], bool]:
        now = self.clock()
        with self._lock:
            if self._read_at is not None and now - self._read_at < CACHE_S:
                return self._table
        table = self.principals.tokens()
        with self._lock:
            self._table, self._read_at = table, now
        return table

    def auth_required(self) -> bool:
        return bool(self.settings.api_token) or self._tokens()[1]

    # -- one request -----------------------------------------------------------------------
    def authorize(self, permission: str, headers: Any, address: str) -> Principal:
        """The principal of a request to a route that needs ``permission``; Refused
        (401, 403, 429) otherwise."""
        table, any_principal = self._tokens()
        api_token = self.settings.api_token
        if not api_token and not any_principal:
            return ANONYMOUS  # nothing set up: as before principals existed
        if permission == PUBLIC:
            return NOBODY
        token = presented(headers)
        who = self._who(token, table, api_token)
        if self._is_locked(address) and not (who is not None and permission == "stop"):
            # Stopping stays possible for a valid token: stopping is always safe.
            raise Refused("too_many_bad_tokens", 429, headers={"Retry-After": str(int(LOCK_S))})
        if who is None:
            lockout = token is not None and self._count_bad(address)
            raise Refused("not_authenticated", 401, lockout=lockout,
                          headers={"WWW-Authenticate": 'Bearer realm="robot"'})
        if not allowed(who.role, permission):
            raise forbidden(who, permission)
        return who

    @staticmethod
    def _who(token: str | None, table: dict[str, PrincipalRow],
             api_token: str | None) -> Principal | None:
        if token is None:
            return None
        if api_token and hmac.compare_digest(token.encode(), api_token.encode()):
            return TOKEN_ADMIN
        row = table.get(token_hash(token))
        return None if row is None else Principal(row.name, row.role, row.kind)

    # -- the lock-out ------------------------------------------------------------------------
    def _is_locked(self, address: str) -> bool:
        with self._lock:
            until = self._locked.get(address)
            if until is None:
                return False
            if self.clock() < until:
                return True
            del self._locked[address]
            return False

    def _count_bad(self, address: str) -> bool:
        """Count a bad token; True if it starts a lock-out."""
        now = self.clock()
        with self._lock:
            times = self._bad.get(address)
            if times is None:
                if len(self._bad) >= _MAX_ADDRESSES:
                    self._forget_old(now)
                times = self._bad[address] = collections.deque(maxlen=BAD_TOKENS)
            times.append(now)
            if len(times) < BAD_TOKENS or now - times[0] > WINDOW_S:
                return False
            self._locked[address] = now + LOCK_S
            del self._bad[address]
        log.warning("%s: %d bad tokens within %g s; locked out for %g s", address,
                    BAD_TOKENS, WINDOW_S, LOCK_S)
        return True

    def _forget_old(self, now: float) -> None:
        for address in [a for a, t in self._bad.items() if now - t[-1] > WINDOW_S]:
            del self._bad[address]
        if len(self._bad) >= _MAX_ADDRESSES:
            self._bad.clear()  # a spray from everywhere: start counting again


def request_id(given: str | None) -> str:
    """The client's X-Request-ID if it is a sane one (to follow a request through a
    proxy's logs), else a new one."""
    if given and len(given) <= 64 and _REQUEST_ID.fullmatch(given):
        return given
    return os.urandom(8).hex()


def forbidden(who: Principal, permission: str) -> Refused:
    return Refused("forbidden", 403, who=who, params={"permission": permission},
                   extra={"permission": permission})
