"""Message catalogues: what an operator reads, in English and Chinese.

One flat JSON object per language and domain (``i18n/<lang>/<domain>.json``), the
same format the dashboard reads (``server/static/i18n/<lang>.json``). Keys are
dotted (``banner.queue_enabled``); placeholders are ``{name}`` and are filled by
name only, so a translation may reorder them. No gettext: one format for Python
and the browser, and no compiled ``.mo`` files to forget.

Log records are not translated: they are grepped and pasted into bug reports.
This module is the bottom layer: robot/, tasks/, server/ and the console all may
import it; it imports nothing of theirs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import string
from collections.abc import Mapping

log = logging.getLogger("i18n")

LANGS = ("en", "zh")
DEFAULT_LANG = "en"
CATALOGUE_DIR = os.path.dirname(os.path.abspath(__file__))
# The test suite sets ROBOT_I18N_STRICT=1 (inherited by the servers it starts as
# subprocesses): a missing key or placeholder then raises instead of showing the key.
strict = os.environ.get("ROBOT_I18N_STRICT") == "1"

_cache: dict[str, dict[str, str]] = {}
_formatter = string.Formatter()


class CatalogueError(Exception):
    """A catalogue file that cannot be used (bad JSON, a duplicate key...)."""


def load_dir(path: str) -> dict[str, str]:
    """Merge every ``*.json`` in ``path``; a key defined twice is an error."""
    merged: dict[str, str] = {}
    for name in sorted(os.listdir(path)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(path, name), encoding="utf-8") as fh:
            entries = json.load(fh)
        if not isinstance(entries, dict):
            raise CatalogueError(f"{name}: not a JSON object")
        for key, text in entries.items():
            if not isinstance(text, str):
                raise CatalogueError(f"{name}: {key} is not a string")
            if key in merged:
                raise CatalogueError(f"{name}: {key} is defined twice")
            merged[key] = text
    return merged


def catalogue(lang: str) -> dict[str, str]:
    """The merged catalogue of ``lang`` (cached)."""
    found = _cache.get(lang)
    if found is None:
        found = _cache[lang] = load_dir(os.path.join(CATALOGUE_DIR, lang))
    return found


def placeholders(text: str) -> set[str]:
    """The ``{name}`` fields of a catalogue text."""
    return {field for _, field, _, _ in _formatter.parse(text) if field is not None}


def has(key: str, lang: str = DEFAULT_LANG) -> bool:
    return key in catalogue(lang if lang in LANGS else DEFAULT_LANG)


def t(key: str, lang: str | None = None, /, **params: object) -> str:
    """The text of ``key`` in ``lang`` (else English) with ``params`` filled in.

    A missing key or placeholder never raises at run time (an operator's console must
    not die of a translation slip): it shows the key, and a log record says so.
    """
    lang = lang if lang in LANGS else DEFAULT_LANG
    text = catalogue(lang).get(key)
    if text is None:
        if strict:
            raise KeyError(f"message key {key!r} is missing in {lang}")
        text = catalogue(DEFAULT_LANG).get(key)
        if text is None:
            if strict:
                raise KeyError(f"message key {key!r} is in no catalogue")
            log.warning("message key %r is missing", key)
            return key
    if not params and "{" not in text:
        return text
    try:
        return text.format_map(_Params({name: _nested(value, lang)
                                        for name, value in params.items()}))
    except (ValueError, IndexError) as exc:
        if strict:
            raise
        log.warning("message %r cannot be formatted: %s", key, exc)
        return text


def message(key: str, /, **params: object) -> dict[str, object]:
    """A message not yet rendered, as a plain JSON value: a parameter of another message
    (``t`` renders it in the outer one's language), or kept to render later."""
    return {"i18n": key, "params": params}


def _nested(value: object, lang: str) -> object:
    # Only the exact shape message() makes: a parameter that merely is a dict stays one.
    if isinstance(value, dict) and value.keys() == {"i18n", "params"} \
            and isinstance(value["i18n"], str) and isinstance(value["params"], dict):
        return t(value["i18n"], lang, **value["params"])
    return value


class _Params(dict):
    def __missing__(self, name: str) -> str:
        if strict:
            raise KeyError(f"placeholder {{{name}}} not given")
        return "{" + name + "}"


class CodedError(Exception):
    """An error with a stable machine ``code`` whose text is the catalogue's ``error.<code>``:
    ``message`` is English (logs); ``text(lang)`` is what a person reads in ``lang``."""

    def __init__(self, code: str, params: Mapping[str, object] | None = None) -> None:
        self.code = code
        self.params = dict(params or {})
        self.message = self.text(DEFAULT_LANG)
        super().__init__(self.message)

    def text(self, lang: str) -> str:
        return t(f"error.{self.code}", lang, **self.params)


def error_text(exc: BaseException, lang: str) -> str:
    """An error with a machine code (CommandError, TaskError...) in ``lang``, as ApiError
    renders it; other errors as they are."""
    return exc.text(lang) if isinstance(exc, CodedError) else str(exc)


class Translator:
    """``t`` bound to one language, for code that speaks to one operator."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGS else DEFAULT_LANG

    def __call__(self, key: str, /, **params: object) -> str:
        return t(key, self.lang, **params)


# -- which language ------------------------------------------------------------------
_TAG = re.compile(r"^\s*([A-Za-z]{1,8})(?:[-_][A-Za-z0-9]{1,8})*")


def normalize(tag: str | None) -> str | None:
    """``zh_CN.UTF-8``, ``zh-Hans-CN``, ``Chinese_China.936`` -> ``zh``; ``en-US`` -> ``en``;
    ``C``, ``POSIX`` and languages without a catalogue -> None."""
    if not tag:
        return None
    lowered = tag.strip().lower()
    if lowered.startswith("chinese"):  # Windows locale names, e.g. Chinese (Simplified)_China
        return "zh"
    match = _TAG.match(lowered)
    if match is None:
        return None
    primary = match.group(1)
    return primary if primary in LANGS else None


def system_language(environ: Mapping[str, str] | None = None, *,
                    windows: bool | None = None) -> str:
    """The operator's language: ``LC_ALL``, ``LC_MESSAGES``, ``LANG`` on POSIX (the first
    one set decides, as in POSIX); the user's UI language on Windows; else English."""
    environ = os.environ if environ is None else environ
    windows = os.name == "nt" if windows is None else windows
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(name)
        if value:
            return normalize(value.split(":")[0]) or DEFAULT_LANG
    if windows:  # pragma: no cover - Windows only
        return normalize(_windows_ui_language()) or DEFAULT_LANG
    return DEFAULT_LANG


def _windows_ui_language() -> str | None:  # pragma: no cover - Windows only
    import ctypes
    import locale

    langid = ctypes.windll.kernel32.GetUserDefaultUILanguage()  # type: ignore[attr-defined]
    return locale.windows_locale.get(langid)


def choose_language(flag: str | None, environ: Mapping[str, str] | None = None, *,
                    windows: bool | None = None, configured: str | None = None) -> str:
    """``--lang`` first, then ``ROBOT_LANG``, then ``configured`` (constants.LANG), then
    the system's language: the more specific and recent choice wins."""
    environ = os.environ if environ is None else environ
    for value in (flag, environ.get("ROBOT_LANG"), configured):
        found = normalize(value)
        if found:
            return found
    return system_language(environ, windows=windows)


def negotiate(accept_language: str | None, default: str) -> str:
    """The best of LANGS for an ``Accept-Language`` header (q-values honoured; ``*`` and
    unknown languages fall through); ``default`` when nothing matches."""
    if not accept_language:
        return default
    best: tuple[float, int, str] | None = None
    for order, part in enumerate(accept_language.split(",")[:32]):
        tag, _, rest = part.strip().partition(";")
        q = 1.0
        for param in rest.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        lang = normalize(tag)
        if lang is None or not 0 < q <= 1:
            continue
        if best is None or (q, -order) > (best[0], best[1]):
            best = (q, -order, lang)
    return best[2] if best else default
