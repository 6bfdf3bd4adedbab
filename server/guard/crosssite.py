"""Cross-site request defence that does not depend on the Host a proxy passes on.

A page on another site can make a browser send only "simple" requests without
asking first (a CORS preflight): GET/HEAD/POST with a form or text body and no
custom header. Preflights from foreign origins are refused, so a request with a
foreign Origin that would have needed one came from the same page through a
proxy, or from a program that is not a browser. Only foreign *simple* writes are
refused. Reads are not: a foreign page cannot read the answer (no CORS headers).
"""

from __future__ import annotations

from typing import Any

SAFE_METHODS = frozenset({"GET", "HEAD"})
SIMPLE_CONTENT_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data",
                                  "text/plain"})
# Request headers that a browser sends cross-site only after a preflight.
PREFLIGHTED_HEADERS = ("Authorization", "X-API-Key", "X-Requested-With", "Idempotency-Key")


def normalize_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def is_same_origin(origin: str, host: str | None, proto: str | None,
                   headers: Any) -> bool:
    """The Origin names this server as the browser reached it (maybe through a proxy)."""
    if (headers.get("Sec-Fetch-Site") or "").strip().lower() == "same-origin":
        return True  # a forbidden header: pages cannot set it, browsers always do
    host = (host or "").strip().lower()
    if not host:
        return False
    schemes = (proto,) if proto else ("http", "https")
    return normalize_origin(origin) in {f"{scheme}://{host}" for scheme in schemes}


def is_preflight(method: str, headers: Any) -> bool:
    return method == "OPTIONS" and "Access-Control-Request-Method" in headers


def needed_preflight(method: str, headers: Any) -> bool:
    """Whether a browser would have asked before sending this request cross-site."""
    if method in SAFE_METHODS or method == "POST":
        ctype = headers.get("Content-Type")
        if ctype is not None and ctype.split(";")[0].strip().lower() not in SIMPLE_CONTENT_TYPES:
            return True
        return any(name in headers for name in PREFLIGHTED_HEADERS)
    return True  # DELETE, PUT, PATCH, ...: never simple


def refuse_foreign(method: str, headers: Any) -> bool:
    """For a foreign Origin: True if the request must be refused."""
    if is_preflight(method, headers):
        return True  # only --cors-origin may ask
    if method in SAFE_METHODS:
        return False
    return not needed_preflight(method, headers)
