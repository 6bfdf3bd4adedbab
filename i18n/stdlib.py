"""The standard library's English words in the operator's language.

``json`` says what is wrong with a document, the OS why a file or a socket failed and
``sqlite3`` why a database cannot be used, all in English. Their messages are a small,
fixed set, so each known one maps to a catalogue key; one not known falls back to
English only for English readers (in other languages a general sentence: no English
inside a translated one, SQLite's words at most quoted as its own).
"""

from __future__ import annotations

import errno
import socket

from i18n import DEFAULT_LANG, message, t

# json.JSONDecodeError.msg by how it starts (the C and the Python scanner, 3.10-3.13).
JSON_SYNTAX = (
    ("Expecting value", "json.expecting_value"),
    ("Expecting property name enclosed in double quotes", "json.expecting_name"),
    ("Expecting ':' delimiter", "json.expecting_colon"),
    ("Expecting ',' delimiter", "json.expecting_comma"),
    ("Unterminated string starting at", "json.unterminated_string"),
    ("Invalid control character", "json.control_character"),
    ("Invalid \\uXXXX escape", "json.bad_unicode_escape"),
    ("Invalid \\escape", "json.bad_escape"),
    ("Extra data", "json.extra_data"),
    ("Illegal trailing comma", "json.trailing_comma"),
    ("Unexpected UTF-8 BOM", "json.bom"),
    # Not syntax, but what json.loads raises on a valid document it will not build.
    ("Exceeds the limit", "json.integer_too_long"),
    ("maximum recursion depth", "json.too_deep"),
)

# OSError.errno; the Windows socket numbers (WSAE...) too, as Python does not map them.
OS_ERRORS = {
    errno.ENOENT: "os.not_found",
    errno.EACCES: "os.permission_denied",
    errno.EPERM: "os.permission_denied",
    10013: "os.permission_denied",  # WSAEACCES: a port reserved or taken exclusively
    errno.EROFS: "os.read_only",
    errno.ENOSPC: "os.no_space",
    errno.EISDIR: "os.is_directory",
    errno.ENOTDIR: "os.not_directory",
    errno.EEXIST: "os.exists",
    errno.EADDRINUSE: "os.address_in_use",
    10048: "os.address_in_use",  # WSAEADDRINUSE
    errno.EADDRNOTAVAIL: "os.address_not_available",
    10049: "os.address_not_available",  # WSAEADDRNOTAVAIL
    socket.EAI_NONAME: "os.unknown_host",  # socket.gaierror: a host name that does not resolve
    11001: "os.unknown_host",  # WSAHOST_NOT_FOUND
    errno.EIO: "os.io_error",
    errno.EBUSY: "os.busy",
}

# sqlite3.Error's text is SQLite's own (sqlite3_errstr), by how it starts: the result
# codes an operator meets when a database cannot be opened or written.
SQLITE_ERRORS = (
    ("file is not a database", "sqlite.not_a_database"),
    ("database disk image is malformed", "sqlite.malformed"),
    ("database is locked", "sqlite.locked"),
    ("database table is locked", "sqlite.locked"),
    ("disk I/O error", "sqlite.io_error"),
    ("unable to open database file", "sqlite.cannot_open"),
    ("attempt to write a readonly database", "sqlite.read_only"),
    ("database or disk is full", "sqlite.full"),
    ("access permission denied", "sqlite.permission_denied"),
    ("out of memory", "sqlite.out_of_memory"),
)


def json_syntax_key(msg: str) -> str | None:
    """The catalogue key of a ``JSONDecodeError.msg``; None for one this table lacks."""
    for prefix, key in JSON_SYNTAX:
        if msg.startswith(prefix):
            return key
    return None


def json_detail(msg: str, lang: str) -> str:
    """What ``json`` found wrong, in ``lang``."""
    key = json_syntax_key(msg)
    if key is not None:
        return t(key, lang)
    return msg if lang == DEFAULT_LANG else t("json.syntax_error", lang)


def os_error_text(exc: OSError, lang: str) -> str:
    """Why an OS call failed, in ``lang`` (no ``[Errno N]``, no file name: the sentence
    around it names what was being done)."""
    key = OS_ERRORS.get(exc.errno) if exc.errno is not None else None
    if key is not None:
        return t(key, lang)
    if lang == DEFAULT_LANG:
        return exc.strerror or str(exc)
    return t("os.other", lang, errno=exc.errno if exc.errno is not None else "?")


def sqlite_detail(msg: str, lang: str) -> str:
    """What SQLite said (``str(sqlite3.Error)``), in ``lang``: a known message by its key;
    another one quoted as SQLite's own words inside a sentence of ``lang``."""
    found = sqlite_message(msg)
    return t(str(found["i18n"]), lang, **found["params"])  # type: ignore[arg-type]


def sqlite_message(msg: str) -> dict[str, object]:
    """``sqlite_detail`` not yet rendered (``i18n.message``): a parameter of another
    message, or kept (a hold's params) to be rendered later in whatever language."""
    for prefix, key in SQLITE_ERRORS:
        if msg.startswith(prefix):
            return message(key)
    return message("sqlite.other", message=msg)
