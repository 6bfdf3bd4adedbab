"""The robot commands the server accepts, and their validation.

One table drives three things: validation at submit time (so a bad command
never reaches the queue), the parameter form on the dashboard (`GET /commands`)
and the shape of partial results when a command ends early.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


class CommandError(ValueError):
    """A well-formed request whose command is not acceptable (HTTP 422)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "number", "integer", "string", "integer_list"
    description: str
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None  # strings: characters; lists: items
    required: bool = True

    def to_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.kind, "description": self.description,
                                  "required": self.required}
        for key in ("minimum", "maximum", "max_length"):
            value = getattr(self, key)
            if value is not None:
                schema[key] = value
        return schema


@dataclass(frozen=True)
class Command:
    name: str
    description: str
    params: tuple[Param, ...] = ()
    example: dict[str, Any] = field(default_factory=dict)
    # Names the per-item data of progress events carry, so a command that ends
    # early still reports what it had done (e.g. the bottles already scanned).
    items_key: str | None = None
    count_key: str | None = None


_POSITION = dict(minimum=1, maximum=96)
_AXIS = dict(minimum=-1000.0, maximum=1000.0)

COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("PING", "Check that the robot answers; returns its firmware version."),
    Command("GET_STATUS", "Report the robot's position and what it holds."),
    Command("HOME", "Move every axis to its home position."),
    Command("MOVE_TO", "Move the tool to a point (millimetres).", (
        Param("x", "number", "X in mm", **_AXIS),
        Param("y", "number", "Y in mm", **_AXIS),
        Param("z", "number", "Z in mm", **_AXIS),
    ), example={"x": 100.0, "y": 50.0, "z": 20.0}),
    Command("SCAN_QRCODE", "Scan the QR codes of the bottles at the given rack positions.", (
        Param("rack", "string", "Rack name", max_length=32),
        Param("positions", "integer_list", "Rack positions to scan (1-96)", max_length=96,
              **_POSITION),
    ), example={"rack": "A", "positions": [1, 2, 3]},
        items_key="scanned_bottles", count_key="scanned_count"),
    Command("PICK", "Pick the bottle at a rack position.", (
        Param("position", "integer", "Rack position (1-96)", **_POSITION),
    ), example={"position": 1}),
    Command("PLACE", "Place the held bottle at a rack position.", (
        Param("position", "integer", "Rack position (1-96)", **_POSITION),
    ), example={"position": 1}),
)}


def known_commands() -> str:
    return ", ".join(COMMANDS)


def command_catalog() -> list[dict[str, Any]]:
    """The command definitions as JSON, for the dashboard and API docs."""
    return [{"cmd_type": c.name, "description": c.description,
             "params": {p.name: p.to_schema() for p in c.params},
             "example": {"cmd_type": c.name, "params": c.example}}
            for c in COMMANDS.values()]


def validate_command(body: Any) -> tuple[str, dict[str, Any]]:
    """Return (cmd_type, params) or raise CommandError naming the bad field."""
    if not isinstance(body, dict):
        raise CommandError("the command must be a JSON object")
    extra = set(body) - {"cmd_type", "params"}
    if extra:
        raise CommandError(f"unknown field(s) {', '.join(sorted(extra))}; "
                           "a command has 'cmd_type' and 'params'", sorted(extra)[0])
    cmd_type = body.get("cmd_type")
    if cmd_type is None:
        raise CommandError(f"missing 'cmd_type'; known commands: {known_commands()}", "cmd_type")
    if not isinstance(cmd_type, str) or cmd_type not in COMMANDS:
        raise CommandError(f"unknown cmd_type {cmd_type!r}; known commands: {known_commands()}",
                           "cmd_type")
    command = COMMANDS[cmd_type]
    params = body.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise CommandError("'params' must be a JSON object", "params")
    allowed = {p.name for p in command.params}
    for name in params:
        if name not in allowed:
            hint = f"; {cmd_type} takes {', '.join(sorted(allowed))}" if allowed else \
                f"; {cmd_type} takes no parameters"
            raise CommandError(f"unknown parameter {name!r}{hint}", f"params.{name}")
    clean: dict[str, Any] = {}
    for param in command.params:
        if param.name not in params:
            if param.required:
                raise CommandError(f"missing parameter {param.name!r} for {cmd_type}",
                                   f"params.{param.name}")
            continue
        clean[param.name] = _check(param, params[param.name])
    return cmd_type, clean


def _check(param: Param, value: Any) -> Any:
    where = f"params.{param.name}"
    if param.kind == "integer_list":
        if not isinstance(value, list) or not value:
            raise CommandError(f"{param.name!r} must be a non-empty list of integers", where)
        if param.max_length is not None and len(value) > param.max_length:
            raise CommandError(f"{param.name!r} has {len(value)} items; at most "
                               f"{param.max_length}", where)
        items = [_number(param, v, integer=True) for v in value]
        if len(set(items)) != len(items):
            raise CommandError(f"{param.name!r} lists a position twice", where)
        return items
    if param.kind == "string":
        if not isinstance(value, str) or not value.strip():
            raise CommandError(f"{param.name!r} must be a non-empty string", where)
        if param.max_length is not None and len(value) > param.max_length:
            raise CommandError(f"{param.name!r} is longer than {param.max_length} characters",
                               where)
        if any(ord(ch) < 32 for ch in value):
            raise CommandError(f"{param.name!r} contains control characters", where)
        return value
    return _number(param, value, integer=param.kind == "integer")


def _number(param: Param, value: Any, *, integer: bool) -> int | float:
    where = f"params.{param.name}"
    # bool is an int subclass in Python; true is not a position.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandError(f"{param.name!r} must be {'an integer' if integer else 'a number'}",
                           where)
    if integer and not isinstance(value, int):
        if not (isinstance(value, float) and value.is_integer()):
            raise CommandError(f"{param.name!r} must be an integer", where)
        value = int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise CommandError(f"{param.name!r} must be a finite number", where)
    if param.minimum is not None and value < param.minimum or \
            param.maximum is not None and value > param.maximum:
        raise CommandError(f"{param.name!r} = {value} is out of range "
                           f"[{param.minimum:g}, {param.maximum:g}]", where)
    return value


def partial_result(cmd_type: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """What a command that ended early had done, in the shape of its full result."""
    command = COMMANDS.get(cmd_type)
    if command is None or command.items_key is None or not items:
        return {}
    data: dict[str, Any] = {command.items_key: items}
    if command.count_key:
        data[command.count_key] = len(items)
    return data


def result_data(cmd_type: str, data: dict[str, Any] | None,
                items: list[dict[str, Any]]) -> dict[str, Any]:
    """The robot's own data, with what its progress events carried filling the gaps
    (e.g. the bottles scanned before an abort, when the robot sent no data)."""
    merged = dict(data or {})
    for key, value in partial_result(cmd_type, items).items():
        merged.setdefault(key, value)
    return merged
