"""Reading the command table from JSON (format: docs/commands.md).

A lab adds a command by editing a file, not code, so the file is checked as
strictly as a request body: every mistake stops start-up with one line naming
the file, the command and the field, before anything else has started.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import string
from typing import Any

from i18n import LANGS
from tasks.commands.table import (
    PARAM_TYPES,
    Command,
    CommandError,
    CommandTable,
    Param,
    ReplyShape,
    check_params,
)

SHIPPED_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "commands.json")

COMMAND_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # usable as a {placeholder} in wire
RESERVED = {"STOP": "STOP is reserved: the server sends it itself to abort a command"}

TOP_KEYS = ("commands",)
COMMAND_KEYS = ("name", "description", "params", "example", "timeout_s", "wire", "items_key",
                "count_key", "reply")
REPLY_KEYS = ("item_per", "item_key", "item_params")
PARAM_KEYS = ("name", "type", "description", "required", "minimum", "maximum", "max_length")
BOUNDED_TYPES = ("number", "integer", "integer_list")
LENGTH_TYPES = ("string", "integer_list")


class CommandsFileError(Exception):
    """A commands file that cannot be used; the message is one line for the operator."""


class _Problem(Exception):
    """A mistake at `where` inside the file; CommandsFileError adds the file name."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)


class _Object(dict):
    """A JSON object that remembers keys given twice (json keeps only the last)."""

    duplicates: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    seen: set[str] = set()
    twice = []
    for key, _ in pairs:
        if key in seen:
            twice.append(key)
        seen.add(key)
    obj.duplicates = tuple(twice)
    return obj


def load_commands(path: str | None) -> CommandTable:
    """The command table in `path`; None: the shipped tasks/commands/commands.json."""
    shown = SHIPPED_FILE if path is None else path
    try:
        with open(shown, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise CommandsFileError(f"commands file {shown}: not UTF-8 text") from None
    except OSError as exc:
        raise CommandsFileError(f"commands file {shown}: cannot read it: "
                                f"{exc.strerror or exc}") from None
    return parse_commands(text, shown)


def parse_commands(text: str, source: str) -> CommandTable:
    """The command table in JSON `text`; `source` names it in error messages."""
    try:
        data = json.loads(text, object_pairs_hook=_object)
    except json.JSONDecodeError as exc:
        raise CommandsFileError(f"commands file {source}: invalid JSON at line {exc.lineno} "
                                f"column {exc.colno}: {exc.msg}") from None
    try:
        return CommandTable(_commands(data), source)
    except _Problem as exc:
        raise CommandsFileError(f"commands file {source}: {exc}") from None


def _commands(data: Any) -> list[Command]:
    _keys(data, TOP_KEYS, "", '{"commands": [...]}')
    if "commands" not in data:
        raise _Problem("", 'missing "commands" (a list of command objects)')
    entries = data["commands"]
    if not isinstance(entries, list) or not entries:
        raise _Problem("commands", "must be a non-empty list of command objects")
    commands: list[Command] = []
    seen: dict[str, int] = {}
    for n, entry in enumerate(entries, 1):
        where = f"command #{n}"
        # Only a well-formed name is shown as is: the message must stay one line.
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and COMMAND_NAME.fullmatch(name.upper()):
            where = f"command {name}"
        command = _command(entry, where)
        if command.name in seen:
            raise _Problem(where, f"name: listed twice (commands #{seen[command.name]} and #{n})")
        seen[command.name] = n
        commands.append(command)
    return commands


def _command(entry: Any, where: str) -> Command:
    _keys(entry, COMMAND_KEYS, where, "a command")
    name = entry.get("name")
    if not isinstance(name, str) or not COMMAND_NAME.fullmatch(name):
        shown = "missing" if name is None else f"{_shown(name)} is not a command name"
        raise _Problem(where, f"name: {shown} (capital letters, digits and _, starting with a "
                              "letter)")
    if name in RESERVED:
        raise _Problem(where, f"name: {RESERVED[name]}")
    description, descriptions = _description(entry.get("description"), where, "description")
    raw_params = entry.get("params", [])
    if not isinstance(raw_params, list):
        raise _Problem(where, "params: must be a list of parameter objects")
    params: list[Param] = []
    for n, raw in enumerate(raw_params):
        param = _param(raw, where, f"params[{n}]")
        if any(p.name == param.name for p in params):
            raise _Problem(where, f"params[{n}].name: {param.name!r} is listed twice")
        params.append(param)
    timeout = entry.get("timeout_s")
    if timeout is not None and (not _is_number(timeout) or not math.isfinite(timeout)
                                or timeout <= 0):
        raise _Problem(where, f"timeout_s: must be a number of seconds > 0, not "
                              f"{_shown(timeout)}")
    keys = {k: entry.get(k) for k in ("items_key", "count_key")}
    for key, value in keys.items():
        if value is not None and (not isinstance(value, str) or not value):
            raise _Problem(where, f"{key}: must be a non-empty string")
    if keys["count_key"] is not None and keys["items_key"] is None:
        raise _Problem(where, "count_key: needs items_key (it counts those items)")
    command = Command(name, description, tuple(params), descriptions=descriptions,
                      items_key=keys["items_key"],
                      count_key=keys["count_key"],
                      reply=_reply(entry.get("reply"), params, where),
                      timeout_s=None if timeout is None else float(timeout),
                      wire=_wire(entry.get("wire"), params, where))
    example = entry.get("example", {})
    if not isinstance(example, dict):
        raise _Problem(where, "example: must be an object of parameter values")
    _no_duplicates(example, f"{where}: example")
    try:
        check_params(command, example)
    except CommandError as exc:
        field = (exc.field or "").removeprefix("params.")
        raise _Problem(where, f"example{'.' + field if field else ''}: {exc.message}") from None
    return dataclasses.replace(command, example=dict(example))


def _reply(raw: Any, params: list[Param], where: str) -> ReplyShape | None:
    """What the robot's replies to the command must look like (docs/commands.md)."""
    if raw is None:
        return None
    _keys(raw, REPLY_KEYS, f"{where}: reply", "a reply description")
    kinds = {p.name: p.kind for p in params}
    item_per, item_key = raw.get("item_per"), raw.get("item_key")
    if item_per is not None and kinds.get(item_per) != "integer_list":
        raise _Problem(where, f"reply.item_per: {_shown(item_per)} is not an integer_list "
                              "parameter of this command")
    if (item_per is None) != (item_key is None):
        raise _Problem(where, "reply: item_per and item_key go together")
    if item_key is not None and (not isinstance(item_key, str) or not item_key):
        raise _Problem(where, "reply.item_key: must be a non-empty string")
    echoed = raw.get("item_params", [])
    if not isinstance(echoed, list) or any(name not in kinds for name in echoed):
        raise _Problem(where, "reply.item_params: must be a list of this command's "
                              "parameter names")
    return ReplyShape(item_per, item_key, tuple(echoed))


def _param(raw: Any, command_where: str, where: str) -> Param:
    _keys(raw, PARAM_KEYS, f"{command_where}: {where}", "a parameter")

    def problem(key: str, message: str) -> _Problem:
        return _Problem(command_where, f"{where}.{key}: {message}")

    name = raw.get("name")
    if not isinstance(name, str) or not PARAM_NAME.fullmatch(name):
        shown = "missing" if name is None else f"{_shown(name)} is not a parameter name"
        raise problem("name", f"{shown} (letters, digits and _, not starting with a digit)")
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in PARAM_TYPES:
        shown = "missing" if kind is None else f"unknown type {_shown(kind)}"
        raise problem("type", f"{shown} (use {', '.join(PARAM_TYPES)})")
    description, descriptions = _description(raw.get("description"), command_where,
                                             f"{where}.description")
    required = raw.get("required", True)
    if not isinstance(required, bool):
        raise problem("required", "must be true or false")
    bounds: dict[str, float | None] = {}
    for key in ("minimum", "maximum"):
        value = bounds[key] = raw.get(key)
        if value is None:
            continue
        if kind not in BOUNDED_TYPES:
            raise problem(key, f"applies to {', '.join(BOUNDED_TYPES)}, not {kind}")
        if not _is_number(value) or not math.isfinite(value):
            raise problem(key, f"must be a number, not {_shown(value)}")
    low, high = bounds["minimum"], bounds["maximum"]
    if low is not None and high is not None and low > high:
        raise problem("minimum", f"{low:g} is above maximum {high:g}")
    max_length = raw.get("max_length")
    if max_length is not None:
        if kind not in LENGTH_TYPES:
            raise problem("max_length", f"applies to {', '.join(LENGTH_TYPES)}, not {kind}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise problem("max_length", f"must be a whole number >= 1, not "
                                        f"{_shown(max_length)}")
    return Param(name, kind, description, minimum=low, maximum=high, max_length=max_length,
                 required=required, descriptions=descriptions)


def _description(value: Any, where: str, key: str) -> tuple[str, dict[str, str]]:
    """(English text, texts per language): one string for every language, or an object
    {"en": ..., "zh": ...} with English required (the fallback for the others)."""
    if isinstance(value, str):
        if not value.strip():
            raise _Problem(where, f"{key}: required, a non-empty string or "
                                  '{"en": ..., "zh": ...}')
        return value, {}
    if not isinstance(value, dict):
        raise _Problem(where, f"{key}: required, a non-empty string or "
                              '{"en": ..., "zh": ...}')
    _no_duplicates(value, f"{where}: {key}")
    for lang, text in value.items():
        if lang not in LANGS:
            raise _Problem(where, f"{key}: unknown language {_shown(lang)} "
                                  f"(use {', '.join(LANGS)})")
        if not isinstance(text, str) or not text.strip():
            raise _Problem(where, f"{key}.{lang}: must be a non-empty string")
    if "en" not in value:
        raise _Problem(where, f'{key}: needs "en" (shown where a language has no text)')
    return value["en"], dict(value)


def _wire(wire: Any, params: list[Param], where: str) -> str | None:
    if wire is None:
        return None
    if not isinstance(wire, str) or not wire.strip():
        raise _Problem(where, "wire: must be a non-empty string")
    if "\n" in wire or "\r" in wire:
        raise _Problem(where, "wire: must be one line")
    names = [p.name for p in params]
    try:
        parsed = list(string.Formatter().parse(wire))
    except ValueError as exc:  # a lone { or }
        raise _Problem(where, f"wire: {exc} (write {{{{ and }}}} for literal braces)") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            # The codec formats the values itself (lists as 1,2,3; 100.0 as 100).
            raise _Problem(where, f"wire: placeholder {{{name}}} with a format spec or "
                                  f"conversion; write plain {{{name}}}")
        if name not in names:
            takes = ", ".join(names) if names else "it has none"
            raise _Problem(where, f"wire: placeholder {{{name}}} is not one of the command's "
                                  f"params ({takes})")
        if not next(p for p in params if p.name == name).required:
            # A line with a hole in it cannot be sent: found here, not at the robot.
            raise _Problem(where, f"wire: placeholder {{{name}}} names an optional parameter; "
                                  "make it required")
    return wire


def _keys(obj: Any, allowed: tuple[str, ...], where: str, what: str) -> None:
    if not isinstance(obj, dict):
        raise _Problem(where, f"must be a JSON object ({what})")
    _no_duplicates(obj, where)
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise _Problem(where, f"unknown key {unknown[0]!r} (allowed: {', '.join(allowed)})")


def _no_duplicates(obj: dict[str, Any], where: str) -> None:
    duplicates = getattr(obj, "duplicates", ())
    if duplicates:
        raise _Problem(where, f"key {duplicates[0]!r} is given twice")


def _shown(value: Any) -> str:
    """A value as the file's author wrote it: 'float', but true rather than True."""
    return repr(value) if isinstance(value, str) else json.dumps(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
