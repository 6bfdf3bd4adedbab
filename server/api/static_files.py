"""The dashboard's static files: a fixed set of files from one folder, no build step.

Only regular files directly in `static_dir` whose names look like assets can be
served; the name comes from a single path segment and is looked up in the
folder listing, so `..`, slashes and symlinks out of the folder never resolve.
Browsers revalidate every time (`no-cache`) so an updated page is never stale,
and a revalidation costs a 304 without a body.
"""

from __future__ import annotations

import hashlib
import os
import re
from email.utils import formatdate, parsedate_to_datetime

from server.api.routing import Request, Response
from server.errors import ApiError

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json; charset=utf-8",  # the message catalogues
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*\.(html|css|js|svg|png|ico|json)$")

# The page needs nothing from elsewhere (offline lab LAN) and runs no inline code.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _allowed(static_dir: str) -> set[str]:
    """The names that may be served: asset-like regular files in the folder itself."""
    try:
        entries = list(os.scandir(static_dir))
    except OSError:
        return set()
    return {e.name for e in entries
            if _NAME.match(e.name) and e.is_file(follow_symlinks=False)}


def _etag(payload: bytes) -> str:
    return '"' + hashlib.sha256(payload).hexdigest()[:32] + '"'


def _not_modified(req: Request, etag: str, mtime: float) -> bool:
    # RFC 9110 13.2.2: If-None-Match wins; If-Modified-Since only without it.
    inm = req.headers.get("If-None-Match")
    if inm is not None:
        tags = [t.strip() for t in inm.split(",")]
        return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)
    ims = req.headers.get("If-Modified-Since")
    if ims:
        try:
            since = parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        return int(mtime) <= since
    return False


def serve_static(req: Request, name: str) -> Response:
    static_dir = req.app.static_dir
    if not static_dir or name not in _allowed(static_dir):
        raise ApiError("no_such_file", 404, params={"name": name})
    path = os.path.join(static_dir, name)
    try:
        with open(path, "rb") as fh:
            payload = fh.read()
        mtime = os.stat(path).st_mtime
    except OSError:
        raise ApiError("no_such_file", 404, params={"name": name}) from None
    etag = _etag(payload)
    headers = {
        **SECURITY_HEADERS,
        "ETag": etag,
        "Last-Modified": formatdate(mtime, usegmt=True),
        "Cache-Control": "no-cache",
    }
    if name == "index.html":
        headers["Vary"] = "Accept"  # GET / is JSON for API clients
    content_type = CONTENT_TYPES[os.path.splitext(name)[1]]
    if _not_modified(req, etag, mtime):
        return Response(304, b"", headers, content_type)
    return Response(200, payload, headers, content_type)


def static_file(req: Request) -> Response:
    return serve_static(req, req.params["name"])
