"""The command table: which commands the server accepts, and their validation.

One table drives validation at submit time (so a bad command never reaches the
queue), the parameter form on the dashboard (`GET /commands`), the OpenAPI
schemas, the shape of partial results when a command ends early, and what the
robot side needs per command (silence timeout, wire form). Its contents come
from a JSON file (tasks/commands/file.py, docs/commands.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from i18n import CodedError

PARAM_TYPES = ("number", "integer", "string", "integer_list")


class CommandError(CodedError, ValueError):
    """A well-formed request whose command is not acceptable (HTTP 422)."""

    def __init__(self, code: str, field: str | None = None, **params: object) -> None:
        super().__init__(code, params)  # the reply is in the client's language
        self.field = field


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # one of PARAM_TYPES
    description: str  # English (or the one text for every language)
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None  # strings: characters; lists: items
    required: bool = True
    # Per-language texts from the file ({"en": ..., "zh": ...}); empty: `description`.
    descriptions: dict[str, str] = field(default_factory=dict, compare=False)

    def describe(self, lang: str = "en") -> str:
        return self.descriptions.get(lang) or self.description

    def to_schema(self, lang: str = "en") -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.kind, "description": self.describe(lang),
                                  "required": self.required}
        for key in ("minimum", "maximum", "max_length"):
            value = getattr(self, key)
            if value is not None:
                schema[key] = value
        return schema


@dataclass(frozen=True)
class ReplyShape:
    """What a command's progress items must be (docs/commands.md, "reply"): one per
    member of the list parameter ``item_per``, named by the item's ``item_key``, each
    repeating ``item_params`` as the command had them."""

    item_per: str | None = None
    item_key: str | None = None
    item_params: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    name: str
    description: str  # English (or the one text for every language)
    params: tuple[Param, ...] = ()
    example: dict[str, Any] = field(default_factory=dict)
    # Names the per-item data of progress events carry, so a command that ends
    # early still reports what it had done (e.g. the bottles already scanned).
    items_key: str | None = None
    count_key: str | None = None
    timeout_s: float | None = None  # silence limit for this command; None: the link's default
    wire: str | None = None  # line template for line-protocol robots, e.g. "PICK {position}"
    reply: ReplyShape | None = None
    descriptions: dict[str, str] = field(default_factory=dict, compare=False)

    def describe(self, lang: str = "en") -> str:
        return self.descriptions.get(lang) or self.description


class CommandTable:
    """An ordered, read-only set of commands (the order is the catalog's order)."""

    def __init__(self, commands: Iterable[Command], source: str | None = None) -> None:
        self._commands: dict[str, Command] = {}
        for command in commands:
            if command.name in self._commands:
                raise ValueError(f"command {command.name} is defined twice")
            self._commands[command.name] = command
        self.source = source  # the file it was read from, for messages

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._commands)

    def __iter__(self) -> Iterator[Command]:
        return iter(self._commands.values())

    def __len__(self) -> int:
        return len(self._commands)

    def __contains__(self, name: object) -> bool:
        return name in self._commands

    def __getitem__(self, name: str) -> Command:
        return self._commands[name]

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def as_dict(self) -> dict[str, Command]:
        """A copy keyed by name (the shape of the former module-level COMMANDS)."""
        return dict(self._commands)

    def known_commands(self) -> str:
        return ", ".join(self._commands)

    # -- what clients see ---------------------------------------------------------------
    def catalog(self, lang: str = "en") -> list[dict[str, Any]]:
        """The command definitions as JSON, for the dashboard and API docs; descriptions
        in ``lang`` where the table has them, else English."""
        return [{"cmd_type": c.name, "description": c.describe(lang),
                 "params": {p.name: p.to_schema(lang) for p in c.params},
                 "example": {"cmd_type": c.name, "params": c.example}}
                for c in self._commands.values()]

    def validate(self, body: Any) -> tuple[str, dict[str, Any]]:
        """Return (cmd_type, params) or raise CommandError naming the bad field."""
        if not isinstance(body, dict):
            raise CommandError("invalid_command")
        extra = sorted(set(body) - {"cmd_type", "params"})
        if extra:
            raise CommandError("unknown_field", extra[0], names=", ".join(extra))
        cmd_type = body.get("cmd_type")
        if cmd_type is None:
            raise CommandError("missing_cmd_type", "cmd_type", known=self.known_commands())
        if not isinstance(cmd_type, str) or cmd_type not in self._commands:
            raise CommandError("unknown_command", "cmd_type", cmd_type=_shown(cmd_type),
                               known=self.known_commands())
        return cmd_type, check_params(self._commands[cmd_type], body.get("params", {}))

    # -- results ------------------------------------------------------------------------
    def partial_result(self, cmd_type: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        """What a command that ended early had done, in the shape of its full result."""
        command = self._commands.get(cmd_type)
        if command is None or command.items_key is None or not items:
            return {}
        data: dict[str, Any] = {command.items_key: items}
        if command.count_key:
            data[command.count_key] = len(items)
        return data

    def result_data(self, cmd_type: str, data: dict[str, Any] | None,
                    items: list[dict[str, Any]]) -> dict[str, Any]:
        """The robot's own data, with what its progress events carried filling the gaps
        (e.g. the bottles scanned before an abort, when the robot sent no data)."""
        merged = dict(data or {})
        for key, value in self.partial_result(cmd_type, items).items():
            merged.setdefault(key, value)
        return merged

    # -- the robot side -----------------------------------------------------------------
    def timeouts(self) -> dict[str, float]:
        """Per-command silence limits (only the commands that set timeout_s)."""
        return {c.name: float(c.timeout_s) for c in self._commands.values()
                if c.timeout_s is not None}

    def wire_forms(self) -> dict[str, str]:
        """Per-command line templates (only the commands that set wire)."""
        return {c.name: c.wire for c in self._commands.values() if c.wire is not None}

    def reply_rules(self) -> dict[str, dict[str, Any]]:
        """Per command, what its replies must look like, in the terms of the robot
        layer's ``ReplyRule`` (robot/link/fit.py): checked against every reply line."""
        rules: dict[str, dict[str, Any]] = {}
        for c in self._commands.values():
            shape = c.reply or ReplyShape()
            rule = {"items_param": shape.item_per, "item_field": shape.item_key,
                    "echoed": shape.item_params, "count_key": c.count_key,
                    "items_key": c.items_key}
            if any(rule.values()):
                rules[c.name] = rule
        return rules

    def with_params(self) -> tuple[str, ...]:
        """Commands that take parameters (a line protocol cannot guess their wire form)."""
        return tuple(c.name for c in self._commands.values() if c.params)


def check_params(command: Command, params: Any) -> dict[str, Any]:
    """The command's params, checked and normalised (e.g. 3.0 -> 3 for integers)."""
    cmd_type = command.name
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise CommandError("params_not_object", "params")
    allowed = [p.name for p in command.params]
    for name in params:
        if name not in allowed:
            if not allowed:
                raise CommandError("takes_no_params", f"params.{name}", name=_shown(name),
                                   cmd_type=cmd_type)
            raise CommandError("unknown_param", f"params.{name}", name=_shown(name),
                               cmd_type=cmd_type, allowed=", ".join(sorted(allowed)))
    clean: dict[str, Any] = {}
    for param in command.params:
        if param.name not in params:
            if param.required:
                raise CommandError("missing_param", f"params.{param.name}", name=param.name,
                                   cmd_type=cmd_type)
            continue
        clean[param.name] = _check(param, params[param.name])
    return clean


def _check(param: Param, value: Any) -> Any:
    where, name = f"params.{param.name}", param.name
    if param.kind == "integer_list":
        if not isinstance(value, list) or not value:
            raise CommandError("not_integer_list", where, name=name)
        if param.max_length is not None and len(value) > param.max_length:
            raise CommandError("too_many_items", where, name=name, count=len(value),
                               limit=param.max_length)
        items = [_number(param, v, integer=True) for v in value]
        if len(set(items)) != len(items):
            raise CommandError("duplicate_item", where, name=name)
        return items
    if param.kind == "string":
        if not isinstance(value, str) or not value.strip():
            raise CommandError("not_string", where, name=name)
        if param.max_length is not None and len(value) > param.max_length:
            raise CommandError("too_long", where, name=name, limit=param.max_length)
        if any(ord(ch) < 32 for ch in value):
            raise CommandError("control_characters", where, name=name)
        return value
    return _number(param, value, integer=param.kind == "integer")


def _number(param: Param, value: Any, *, integer: bool) -> int | float:
    where, name = f"params.{param.name}", param.name
    # bool is an int subclass in Python; true is not a position.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandError("not_integer" if integer else "not_number", where, name=name)
    if integer and not isinstance(value, int):
        if not (isinstance(value, float) and value.is_integer()):
            raise CommandError("not_integer", where, name=name)
        value = int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise CommandError("not_finite", where, name=name)
    if param.minimum is not None and value < param.minimum or \
            param.maximum is not None and value > param.maximum:
        # A file may bound only one side; "[1, 96]" is the form clients already match on.
        raise CommandError("out_of_range", where, name=name, value=str(value),
                           minimum="-inf" if param.minimum is None else f"{param.minimum:g}",
                           maximum="inf" if param.maximum is None else f"{param.maximum:g}")
    return value


def _shown(value: Any) -> str:
    """A client's value in a message: quoted like Python's repr, and kept short (the
    reply must not echo a megabyte back)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
