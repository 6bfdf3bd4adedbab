"""Where a request body ends: Content-Length or `Transfer-Encoding: chunked`, strictly.

Strict because lenient framing is how request smuggling works: a length, size line
or CRLF that one parser accepts and another reads differently lets a body be read
as a second request. Every limit is enforced while reading, so an endless or
oversized body never sits in memory.
"""

from __future__ import annotations

import re
from typing import Any

from server.errors import ApiError

_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only: str.isdigit() accepts "\xb2" and friends
MAX_SIZE_LINE = 1024  # a chunk-size line, extensions included
MAX_TRAILER_BYTES = 4096
MAX_TRAILER_LINES = 32
_SIZE = re.compile(rb"([0-9A-Fa-f]{1,8})(?:[ \t]*;[^\r\n]*)?")


def body_framing(headers: Any, limit: int) -> tuple[int, bool]:
    """(Content-Length, chunked) of a request; ApiError (close) for anything ambiguous."""
    codings = headers.get_all("Transfer-Encoding")
    lengths = headers.get_all("Content-Length") or []
    if codings is not None:
        if lengths:
            raise ApiError("length_and_chunked", 400, close=True)
        value = ",".join(codings).strip()
        if value.lower() != "chunked":
            raise ApiError("transfer_encoding", 501, close=True,
                           params={"value": repr(value[:40])})
        return 0, True
    if not lengths:
        return 0, False
    if len(lengths) > 1 or not _DIGITS.fullmatch(lengths[0].strip()):
        raise ApiError("invalid_content_length", 400, close=True)
    length = int(lengths[0])
    if length > limit:
        raise ApiError("body_too_large", 413, close=True,
                       params={"size": length, "limit": limit})
    return length, False


def _invalid(detail: str) -> ApiError:
    return ApiError("chunked_invalid", 400, close=True, params={"detail": detail})


def _line(rfile: Any, limit: int) -> bytes:
    """One CRLF-terminated line without its CRLF; bare LF or EOF is refused."""
    line = rfile.readline(limit + 2)
    if not line:
        raise ApiError("body_short", 400, close=True)
    if not line.endswith(b"\r\n"):
        if len(line) > limit or line.endswith(b"\n"):
            raise _invalid("line too long or not ended by CRLF")
        raise ApiError("body_short", 400, close=True)  # the peer stopped mid-line
    return line[:-2]


def read_chunked(rfile: Any, limit: int) -> bytes:
    """The decoded body; ApiError (connection to close) on any fault or over `limit`."""
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = _line(rfile, MAX_SIZE_LINE)
        match = _SIZE.fullmatch(size_line)
        if match is None:
            raise _invalid("bad chunk size line")
        size = int(match.group(1), 16)
        if size == 0:
            break
        total += size
        if total > limit:
            raise ApiError("body_too_large", 413, close=True,
                           params={"size": total, "limit": limit})
        data = rfile.read(size)
        if len(data) != size:
            raise ApiError("body_short", 400, close=True)
        parts.append(data)
        end = rfile.read(2)
        if end != b"\r\n":
            if len(end) < 2 and b"\r\n".startswith(end):
                raise ApiError("body_short", 400, close=True)
            raise _invalid("chunk data not followed by CRLF")
    # Trailer fields are read and dropped: none of them may change how we act.
    used = 0
    for _ in range(MAX_TRAILER_LINES + 1):
        line = _line(rfile, MAX_TRAILER_BYTES)
        if not line:
            return b"".join(parts)
        used += len(line) + 2
        if used > MAX_TRAILER_BYTES:
            break
    raise _invalid("trailer section too large")
