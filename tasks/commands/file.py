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

from i18n import LANGS, CodedError, t
from i18n.stdlib import json_detail, os_error_text
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
RESERVED = ("STOP",)  # the server sends it itself to abort a command

TOP_KEYS = ("commands",)
COMMAND_KEYS = ("name", "description", "params", "example", "timeout_s", "wire", "items_key",
                "count_key", "reply")
REPLY_KEYS = ("item_per", "item_key", "item_params")
PARAM_KEYS = ("name", "type", "description", "required", "minimum", "maximum", "max_length")
BOUNDED_TYPES = ("number", "integer", "integer_list")
LENGTH_TYPES = ("string", "integer_list")
NOT_OBJECT = {"": "commands_top_not_object", "command": "commands_command_not_object",
              "reply": "commands_reply_not_object", "param": "commands_param_not_object"}


class CommandsFileError(CodedError):
    """A commands file that cannot be used: one line naming the file, the command (its
    name, or ``#n``) and the field; ``str()`` is English (logs), ``text(lang)`` is the
    operator's. A param may itself be coded (the example's CommandError, the reason of
    an OSError, json's words): it is rendered in the same language."""

    def __init__(self, code: str, file: str, *, command: str | None = None,
                 field: str | None = None, **params: object) -> None:
        self.file, self.command, self.field = file, command, field
        super().__init__(code, params)

    def text(self, lang: str) -> str:
        problem = t(f"error.{self.code}", lang,
                    **{name: _localized(value, lang) for name, value in self.params.items()})
        where = {"file": self.file, "problem": problem}
        if self.command is None:
            if self.field:
                return t("commands_file.field", lang, field=self.field, **where)
            return t("commands_file.file", lang, **where)
        if self.field:
            return t("commands_file.command_field", lang, command=self.command,
                     field=self.field, **where)
        return t("commands_file.command", lang, command=self.command, **where)


class _OSReason:
    def __init__(self, exc: OSError) -> None:
        self.exc = exc

    def text(self, lang: str) -> str:
        return os_error_text(self.exc, lang)


class _JsonReason:
    def __init__(self, msg: str) -> None:
        self.msg = msg

    def text(self, lang: str) -> str:
        return json_detail(self.msg, lang)


def _localized(value: object, lang: str) -> object:
    return value.text(lang) if isinstance(value, CodedError | _OSReason | _JsonReason) else value


class _Problem(Exception):
    """A mistake at ``field`` inside a command (or the file's top); CommandsFileError
    adds the file and the command."""

    def __init__(self, code: str, field: str = "", **params: object) -> None:
        super().__init__(code)
        self.code, self.field, self.params = code, field, params
        self.command: str | None = None


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
        raise CommandsFileError("commands_not_utf8", shown) from None
    except OSError as exc:
        raise CommandsFileError("commands_unreadable", shown, reason=_OSReason(exc)) from None
    return parse_commands(text, shown)


def parse_commands(text: str, source: str) -> CommandTable:
    """The command table in JSON `text`; `source` names it in error messages."""
    try:
        data = json.loads(text, object_pairs_hook=_object)
    except json.JSONDecodeError as exc:
        raise CommandsFileError("commands_invalid_json", source, line=exc.lineno,
                                column=exc.colno, detail=_JsonReason(exc.msg)) from None
    try:
        return CommandTable(_commands(data), source)
    except _Problem as exc:
        raise CommandsFileError(exc.code, source, command=exc.command, field=exc.field or None,
                                **exc.params) from None


def _commands(data: Any) -> list[Command]:
    _keys(data, TOP_KEYS, "", "")
    if "commands" not in data:
        raise _Problem("commands_missing")
    entries = data["commands"]
    if not isinstance(entries, list) or not entries:
        raise _Problem("commands_empty", "commands")
    commands: list[Command] = []
    seen: dict[str, int] = {}
    for n, entry in enumerate(entries, 1):
        # Only a well-formed name is shown as is: the message must stay one line.
        name = entry.get("name") if isinstance(entry, dict) else None
        where = name if isinstance(name, str) and COMMAND_NAME.fullmatch(name.upper()) \
            else f"#{n}"
        try:
            command = _command(entry)
            if command.name in seen:
                raise _Problem("commands_name_twice", "name", first=seen[command.name],
                               second=n)
        except _Problem as exc:
            exc.command = where
            raise
        seen[command.name] = n
        commands.append(command)
    return commands


def _command(entry: Any) -> Command:
    _keys(entry, COMMAND_KEYS, "", "command")
    name = entry.get("name")
    if name is None:
        raise _Problem("commands_name_missing", "name")
    if not isinstance(name, str) or not COMMAND_NAME.fullmatch(name):
        raise _Problem("commands_name_invalid", "name", value=_shown(name))
    if name in RESERVED:
        raise _Problem("commands_name_reserved", "name", name=name)
    description, descriptions = _description(entry.get("description"), "description")
    raw_params = entry.get("params", [])
    if not isinstance(raw_params, list):
        raise _Problem("commands_params_not_list", "params")
    params: list[Param] = []
    for n, raw in enumerate(raw_params):
        param = _param(raw, f"params[{n}]")
        if any(p.name == param.name for p in params):
            raise _Problem("commands_param_twice", f"params[{n}].name", name=repr(param.name))
        params.append(param)
    timeout = entry.get("timeout_s")
    if timeout is not None and (not _is_number(timeout) or not math.isfinite(timeout)
                                or timeout <= 0):
        raise _Problem("commands_timeout_invalid", "timeout_s", value=_shown(timeout))
    keys = {k: entry.get(k) for k in ("items_key", "count_key")}
    for key, value in keys.items():
        if value is not None and (not isinstance(value, str) or not value):
            raise _Problem("commands_not_text", key)
    if keys["count_key"] is not None and keys["items_key"] is None:
        raise _Problem("commands_count_needs_items", "count_key")
    command = Command(name, description, tuple(params), descriptions=descriptions,
                      items_key=keys["items_key"],
                      count_key=keys["count_key"],
                      reply=_reply(entry.get("reply"), params),
                      timeout_s=None if timeout is None else float(timeout),
                      wire=_wire(entry.get("wire"), params))
    example = entry.get("example", {})
    if not isinstance(example, dict):
        raise _Problem("commands_example_not_object", "example")
    _no_duplicates(example, "example")
    try:
        check_params(command, example)
    except CommandError as exc:
        field = (exc.field or "").removeprefix("params.")
        raise _Problem("commands_example_invalid", f"example{'.' + field if field else ''}",
                       error=exc) from None
    return dataclasses.replace(command, example=dict(example))


def _reply(raw: Any, params: list[Param]) -> ReplyShape | None:
    """What the robot's replies to the command must look like (docs/commands.md)."""
    if raw is None:
        return None
    where = "reply"  # "reply.item_per" written whole would read as a catalogue key
    _keys(raw, REPLY_KEYS, where, "reply")
    kinds = {p.name: p.kind for p in params}
    item_per, item_key = raw.get("item_per"), raw.get("item_key")
    if item_per is not None and kinds.get(item_per) != "integer_list":
        raise _Problem("commands_item_per_invalid", f"{where}.item_per", value=_shown(item_per))
    if (item_per is None) != (item_key is None):
        raise _Problem("commands_item_per_with_key", where)
    if item_key is not None and (not isinstance(item_key, str) or not item_key):
        raise _Problem("commands_not_text", f"{where}.item_key")
    echoed = raw.get("item_params", [])
    if not isinstance(echoed, list) or any(name not in kinds for name in echoed):
        raise _Problem("commands_item_params_invalid", f"{where}.item_params")
    return ReplyShape(item_per, item_key, tuple(echoed))


def _param(raw: Any, where: str) -> Param:
    _keys(raw, PARAM_KEYS, where, "param")

    def problem(key: str, code: str, **params: object) -> _Problem:
        return _Problem(code, f"{where}.{key}", **params)

    name = raw.get("name")
    if name is None:
        raise problem("name", "commands_param_name_missing")
    if not isinstance(name, str) or not PARAM_NAME.fullmatch(name):
        raise problem("name", "commands_param_name_invalid", value=_shown(name))
    kind = raw.get("type")
    if kind is None:
        raise problem("type", "commands_type_missing", types=_listed(PARAM_TYPES))
    if not isinstance(kind, str) or kind not in PARAM_TYPES:
        raise problem("type", "commands_type_unknown", value=_shown(kind),
                      types=_listed(PARAM_TYPES))
    description, descriptions = _description(raw.get("description"), f"{where}.description")
    required = raw.get("required", True)
    if not isinstance(required, bool):
        raise problem("required", "commands_not_boolean")
    bounds: dict[str, float | None] = {}
    for key in ("minimum", "maximum"):
        value = bounds[key] = raw.get(key)
        if value is None:
            continue
        if kind not in BOUNDED_TYPES:
            raise problem(key, "commands_bound_wrong_type", types=_listed(BOUNDED_TYPES),
                          kind=repr(kind))
        if not _is_number(value) or not math.isfinite(value):
            raise problem(key, "commands_bound_not_number", value=_shown(value))
    low, high = bounds["minimum"], bounds["maximum"]
    if low is not None and high is not None and low > high:
        raise problem("minimum", "commands_minimum_above_maximum", minimum=f"{low:g}",
                      maximum=f"{high:g}")
    max_length = raw.get("max_length")
    if max_length is not None:
        if kind not in LENGTH_TYPES:
            raise problem("max_length", "commands_bound_wrong_type",
                          types=_listed(LENGTH_TYPES), kind=repr(kind))
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise problem("max_length", "commands_max_length_invalid", value=_shown(max_length))
    return Param(name, kind, description, minimum=low, maximum=high, max_length=max_length,
                 required=required, descriptions=descriptions)


def _description(value: Any, key: str) -> tuple[str, dict[str, str]]:
    """(English text, texts per language): one string for every language, or an object
    {"en": ..., "zh": ...} with English required (the fallback for the others)."""
    if isinstance(value, str) and value.strip():
        return value, {}
    if not isinstance(value, dict):
        raise _Problem("commands_description_invalid", key)
    _no_duplicates(value, key)
    for lang, text in value.items():
        if lang not in LANGS:
            raise _Problem("commands_unknown_language", key, value=_shown(lang),
                           langs=_listed(LANGS))
        if not isinstance(text, str) or not text.strip():
            raise _Problem("commands_not_text", f"{key}.{lang}")
    if "en" not in value:
        raise _Problem("commands_needs_en", key)
    return value["en"], dict(value)


def _wire(wire: Any, params: list[Param]) -> str | None:
    if wire is None:
        return None
    if not isinstance(wire, str) or not wire.strip():
        raise _Problem("commands_not_text", "wire")
    if "\n" in wire or "\r" in wire:
        raise _Problem("commands_wire_one_line", "wire")
    names = [p.name for p in params]
    try:
        parsed = list(string.Formatter().parse(wire))
    except ValueError:  # a lone { or }
        raise _Problem("commands_wire_braces", "wire") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            # The codec formats the values itself (lists as 1,2,3; 100.0 as 100).
            raise _Problem("commands_wire_spec", "wire", name=name)
        if name not in names:
            if not names:
                raise _Problem("commands_wire_unknown_none", "wire", name=name)
            raise _Problem("commands_wire_unknown", "wire", name=name, names=_listed(names))
        if not next(p for p in params if p.name == name).required:
            # A line with a hole in it cannot be sent: found here, not at the robot.
            raise _Problem("commands_wire_optional", "wire", name=name)
    return wire


def _keys(obj: Any, allowed: tuple[str, ...], field: str, what: str) -> None:
    if not isinstance(obj, dict):
        raise _Problem(NOT_OBJECT[what], field)
    _no_duplicates(obj, field)
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise _Problem("commands_unknown_key", field, key=repr(unknown[0]),
                       allowed=_listed(allowed))


def _no_duplicates(obj: dict[str, Any], field: str) -> None:
    duplicates = getattr(obj, "duplicates", ())
    if duplicates:
        raise _Problem("commands_key_twice", field, key=repr(duplicates[0]))


def _listed(names: Any) -> str:
    """Names (keys, types, languages) quoted, as a value is: 'rack', 'positions'."""
    return ", ".join(repr(name) for name in names)


def _shown(value: Any) -> str:
    """A value as the file's author wrote it: 'float', but true rather than True."""
    return repr(value) if isinstance(value, str) else json.dumps(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
