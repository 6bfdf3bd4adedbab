"""The robot commands the server accepts: the table, its file, and the shipped default.

The table itself is tasks/commands/table.py; reading it from JSON is
tasks/commands/file.py (format: docs/commands.md). The running server uses the
table it loaded (`--commands FILE`); the module-level functions here use the
shipped tasks/commands/commands.json, so code and tests written before the table was
data keep working.
"""

from __future__ import annotations

import threading
from typing import Any

from tasks.commands.file import SHIPPED_FILE, CommandsFileError, load_commands, parse_commands
from tasks.commands.table import (
    PARAM_TYPES,
    Command,
    CommandError,
    CommandTable,
    Param,
)

# COMMANDS is also exported, through __getattr__ below.
__all__ = [
    "PARAM_TYPES", "SHIPPED_FILE", "Command", "CommandError", "CommandTable",
    "CommandsFileError", "Param", "command_catalog", "default_table", "known_commands",
    "load_commands", "parse_commands", "partial_result", "result_data",
    "validate_command",
]

_default: CommandTable | None = None
_default_lock = threading.Lock()


def default_table() -> CommandTable:
    """The shipped table, read on first use (a broken shipped file raises here)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = load_commands(None)
        return _default


def __getattr__(name: str) -> Any:
    # COMMANDS is computed on first access so importing this module reads no file.
    if name == "COMMANDS":
        return default_table().as_dict()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def known_commands() -> str:
    return default_table().known_commands()


def command_catalog() -> list[dict[str, Any]]:
    """The shipped commands as JSON, for the dashboard and API docs."""
    return default_table().catalog()


def validate_command(body: Any) -> tuple[str, dict[str, Any]]:
    """Return (cmd_type, params) or raise CommandError naming the bad field."""
    return default_table().validate(body)


def partial_result(cmd_type: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return default_table().partial_result(cmd_type, items)


def result_data(cmd_type: str, data: dict[str, Any] | None,
                items: list[dict[str, Any]]) -> dict[str, Any]:
    return default_table().result_data(cmd_type, data, items)
