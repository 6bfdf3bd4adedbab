"""The common request head, parsed without the email package.

`http.server` parses headers with `email.feedparser`, about a tenth of a GET's time in
profiles. Almost every request a lab sends (curl, requests, browsers, the dashboard,
a proxy) is plain: one request line, `Name: value` lines of printable ASCII, CRLF
endings, the whole head in the first packet. `parse_head` handles exactly that and
returns None for anything else, which then takes the stdlib's path unchanged, so
every unusual case (obs-fold, bare LF, non-ASCII, HTTP/0.9, limits, errors) keeps
the stdlib's answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

# Methods this server's handler has do_<METHOD> for; others go the stdlib way (501).
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
MAX_HEADERS = 100  # http.client's limit: more is its 431, so such heads go its way
# Printable ASCII, tab, CR, LF: the only bytes a fast-path head may contain.
_PLAIN = re.compile(rb"[\t\r\n\x20-\x7e]*")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"/[\x21-\x7e]*")


class Headers:
    """What the server reads of `http.client.HTTPMessage`, for a plain head.

    Same answers as the email.message.Message API for these calls: names match
    case-insensitively, `get` gives the first value, `get_all` every value in order or
    `failobj`, `[name]` is `get(name)` (None when absent), `items()` keeps the order
    and spelling the client sent. Values are as the stdlib stores them: leading
    blanks stripped, trailing ones kept.
    """

    __slots__ = ("_items", "_index")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        index: dict[str, list[str]] = {}
        for name, value in items:
            key = name.lower()
            found = index.get(key)
            if found is None:
                index[key] = [value]
            else:
                found.append(value)
        self._index = index

    def get(self, name: str, failobj: str | None = None) -> str | None:
        values = self._index.get(name.lower())
        return values[0] if values else failobj

    def get_all(self, name: str, failobj: list[str] | None = None) -> list[str] | None:
        values = self._index.get(name.lower())
        return list(values) if values else failobj

    def __getitem__(self, name: str) -> str | None:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self._items])

    def keys(self) -> list[str]:
        return [name for name, _ in self._items]

    def values(self) -> list[str]:
        return [value for _, value in self._items]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __str__(self) -> str:
        return "".join(f"{name}: {value}\n" for name, value in self._items) + "\n"


class Head(NamedTuple):
    method: str
    target: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    requestline: str
    headers: Headers
    size: int  # bytes of the head, the blank line included


def parse_head(data: bytes, line_limit: int, header_limit: int) -> Head | None:
    """The head at the start of `data` if it is complete, plain and within the limits
    (request line; header lines with the blank one); otherwise None (the caller takes
    the stdlib path, which also gives the over-limit answers)."""
    first = data.find(b"\r\n", 0, line_limit)  # the line with its CRLF fits
    if first < 0:
        return None
    end = data.find(b"\r\n\r\n", first, first + header_limit + 2)
    if end < 0:
        return None
    head = data[:end]
    # A CR or LF that is not part of a CRLF (bare LF endings, stray CRs) is unusual.
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf or head.count(b"\n") != crlf or not _PLAIN.fullmatch(head):
        return None
    lines = head.split(b"\r\n")
    if len(lines) - 1 > MAX_HEADERS:
        return None
    words = lines[0].split(b" ")
    if len(words) != 3:
        return None
    method, target, version = words
    if version != b"HTTP/1.1" and version != b"HTTP/1.0":
        return None
    # "//x" is rewritten by the stdlib (gh-87389), so it takes that path.
    if not _TARGET.fullmatch(target) or target.startswith(b"//"):
        return None
    method_s = method.decode("ascii")
    if method_s not in METHODS:
        return None
    items: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        # obs-fold continuation lines and "Name :" are the feedparser's business.
        if not sep or not _TOKEN.fullmatch(name):
            return None
        items.append((name.decode("ascii"), value.lstrip(b" \t").decode("ascii")))
    return Head(method_s, target.decode("ascii"), version.decode("ascii"),
                lines[0].decode("ascii"), Headers(items), end + 4)
