"""Small pieces of response heads and log lines: the Date header, Vary, escaping."""

from __future__ import annotations

import re
import time
from email.utils import formatdate

CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # what must not reach a log or console line raw


_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The Date header, formatted once per second rather than once per response."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def one_line(text: str, limit: int) -> str | None:
    """A client's words (a reason) as one sane line of at most ``limit`` characters;
    None if nothing is left."""
    return CONTROL.sub(" ", text[:limit]).strip() or None


def escape(text: str) -> str:
    """One request = one log line: control characters are shown, not obeyed."""
    if text.isprintable():  # no control character in it: the common case, in C
        return text
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def merge_vary(*values: str | None) -> str:
    """One Vary header from several (CORS, the dashboard's Accept, Accept-Language)."""
    seen: dict[str, str] = {}
    for value in values:
        for name in (value or "").split(","):
            if name.strip():
                seen.setdefault(name.strip().lower(), name.strip())
    return ", ".join(seen.values())
