"""What the console speaks, for main.py, its menus, banner and the CLI: the language
(--lang, ROBOT_LANG, the system; English where the console cannot show Chinese), task
statuses for people, and text laid out by display width."""

from __future__ import annotations

import argparse
import logging
import sys
import unicodedata
from typing import Any

import i18n
from i18n import Translator

log = logging.getLogger("main")
# What a person reads; JSON output (--json, submit --wait's stdout) keeps the raw values.
STATUS_KEYS = {"pending": "client.status.pending", "running": "client.status.running",
               "completed": "client.status.completed", "failed": "client.status.failed",
               "cancelled": "client.status.cancelled"}


def lang_flag(p: argparse.ArgumentParser, tr: Translator,
              default: Any = argparse.SUPPRESS) -> None:
    """--lang; SUPPRESS after a command: a --lang given before it keeps its value."""
    p.add_argument("--lang", choices=i18n.LANGS, default=default, help=tr("args.lang"))


def console_language(lang: str) -> str:
    """``lang``, or English where this console cannot show Chinese (an ASCII console, a
    code page without it): English beats a screen of question marks."""
    from console.terminal import can_encode

    if lang == "zh" and not (can_encode("任务") and can_encode("任务", sys.stderr)):
        return "en"
    return lang


def say(text: str) -> None:
    """One console line in one write, as the banner: log records from other threads
    (the same terminal, or the same pipe under a service wrapper) cannot cut into it."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def warn_if_not_shown(lang: str, shown: str) -> None:
    if shown != lang:
        log.warning("the console (encoding %s) cannot show language %r: speaking %r "
                    "(set PYTHONIOENCODING=utf-8 or use a UTF-8 terminal)",
                    getattr(sys.stdout, "encoding", None), lang, shown)


def status_text(tr: Translator, status: Any) -> str:
    key = STATUS_KEYS.get(status)
    return tr(key) if key else str(status)


def _columns(c: str) -> int:
    return 2 if unicodedata.east_asian_width(c) in "WF" else 1


def pad(text: str, width: int) -> str:
    """ljust by display width: a Chinese character takes two columns."""
    return text + " " * max(0, width - sum(map(_columns, text)))


def fit(text: str, width: int) -> str:
    """Cut and pad to ``width`` display columns (one terminal line, redrawn with \\r)."""
    out, used = [], 0
    for c in text:
        if used + _columns(c) > width:
            break
        out.append(c)
        used += _columns(c)
    return "".join(out) + " " * (width - used)
