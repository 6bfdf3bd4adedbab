"""Strict parsing of JSON request bodies: bounded, finite, never a 500."""

from __future__ import annotations

import json
from typing import Any

from server.errors import ApiError

MAX_JSON_DEPTH = 32


def _reject_constant(name: str) -> Any:
    raise ApiError(f"invalid JSON: {name} is not allowed", 400)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ApiError(f"invalid JSON: number {text[:20]} is out of range", 400)
    return value


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
    if not body.strip():
        raise ApiError("the request body is empty; send a JSON command", 400)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("the request body is not UTF-8", 400) from None
    if _depth(text) > MAX_JSON_DEPTH:
        raise ApiError(f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels", 400)
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise ApiError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                       400) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer with 5000 digits
        raise ApiError(f"invalid JSON: {exc}", 400) from None
