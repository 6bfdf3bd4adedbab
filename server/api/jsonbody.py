"""Strict parsing of JSON request bodies: bounded, finite, never a 500."""

from __future__ import annotations

import json
from typing import Any

from i18n import t
from i18n.stdlib import json_detail
from server.errors import ApiError

MAX_JSON_DEPTH = 32


class JsonSyntaxError(ApiError):
    """``invalid_json`` or ``json_value``: the parser's own words (English) are given as
    ``detail`` and shown in the reader's language (i18n/stdlib.py)."""

    def __init__(self, code: str, detail: str, **params: object) -> None:
        self.detail = detail  # before ApiError renders the English text with it
        super().__init__(code, 400, params={"detail": detail, **params})

    def text(self, lang: str) -> str:
        return t(f"error.{self.code}", lang,
                 **{**self.params, "detail": json_detail(self.detail, lang)})


def _reject_constant(name: str) -> Any:
    raise ApiError("json_constant", 400, params={"name": name})


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ApiError("json_number_range", 400, params={"number": text[:20]})
    return value


# What json.loads(text, parse_constant=..., parse_float=...) builds on every call, once.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _depth(text: str) -> int:
    """Maximum nesting of arrays/objects, outside strings (before json.loads recurses)."""
    depth = peak = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            peak = max(peak, depth)
        elif ch in "]}":
            depth -= 1
    return peak


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8, bounded nesting, no NaN/Infinity, no huge numbers."""
    # Windows Notepad saves UTF-8 with a byte-order mark; it is not part of the JSON.
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    if not body.strip():
        raise ApiError("empty_body", 400)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("body_not_utf8", 400) from None
    # Nesting cannot exceed the number of brackets: the character scan only runs for
    # bodies with more than the limit of them (a submit has two or three).
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth(text) > MAX_JSON_DEPTH:
        raise ApiError("json_too_deep", 400, params={"limit": MAX_JSON_DEPTH})
    try:
        if text.startswith("\ufeff"):  # as json.loads says it (a second BOM)
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise JsonSyntaxError("invalid_json", exc.msg, line=exc.lineno,
                              column=exc.colno) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer with 5000 digits
        raise JsonSyntaxError("json_value", str(exc)) from None
