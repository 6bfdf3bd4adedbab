"""Limits on what a robot may hand the server, free of I/O.

A result or progress item is stored and served as JSON. Python's encoder and decoder
recurse, so a document nested some hundreds of levels deep that parses in the shallow
reader thread can raise ``RecursionError`` later in a deeper HTTP thread: one such
result once made its task unreadable for good. Nothing deeper than ``MAX_DEPTH``
is therefore taken from a robot, and the store refuses to decode deeper text too.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Far beyond any sane result (a rack of bottles is 3 levels), far below the recursion
# limit of any thread.
MAX_DEPTH = 64

# A JSON string (skipped whole: brackets inside it do not count) or one bracket.
_STRUCT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
# The next token of a JSON text after blanks, enough to read top-level scalar members.
_WS_TOKEN = re.compile(r'\s*("[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:,]|[^\s\[\]{}:,"]+)')


def text_too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """True if the JSON ``text`` nests arrays/objects more than ``limit`` levels.

    Costs two ``str.count`` calls for ordinary lines: only a text with more brackets
    than the limit is scanned."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _STRUCT.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def value_too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True if the decoded ``value`` nests lists/dicts more than ``limit`` levels.
    Iterative, so it cannot itself run out of stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def top_level_fields(text: str) -> dict[str, Any]:
    """The scalar members of the top-level object in ``text``, which may be a JSON
    text too deep to decode or only the start of one (an over-long line's head).

    It is how a refused line can still be told apart as the result of the command in
    flight (``{"id": 7, "type": "result", ...``) and fail that command at once
    instead of leaving it to time out. The scan stops at the first thing that is not
    a JSON token (a string cut off by the end of a head), and a member counts only
    once the ``,`` or ``}`` after it is seen (a number cut off is no number)."""
    fields: dict[str, Any] = {}
    depth = 0
    key: str | None = None
    value: Any = None
    state = "key"  # key -> colon -> value -> end (then "," starts the next member)
    pos = 0
    while True:
        match = _WS_TOKEN.match(text, pos)
        if match is None:
            break
        pos = match.end()
        token = match.group(1)
        if token in ("[", "{"):
            if depth == 1:
                state = "skip"  # a nested value: not a scalar member
            depth += 1
        elif token in ("]", "}"):
            depth -= 1
            if depth == 0:
                if state == "end" and key is not None:
                    fields[key] = value
                break
        elif depth != 1:
            continue
        elif token == ",":
            if state == "end" and key is not None:
                fields[key] = value
            key, state = None, "key"
        elif token == ":":
            state = "value" if state == "colon" else "skip"
        elif state == "key" and token.startswith('"'):
            key, state = _scalar(token), "colon"
        elif state == "value":
            try:
                value, state = json.loads(token), "end"
            except ValueError:
                state = "skip"
        else:
            state = "skip"
    return fields


def _scalar(token: str) -> Any:
    try:
        return json.loads(token)
    except ValueError:
        return None
