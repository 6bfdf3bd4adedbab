"""``waiting_for`` in the reader's language: the task layer writes its messages in the
server's; a request in another language gets them made again from code and params."""

from __future__ import annotations

from typing import Any

from i18n import t
from tasks.queue.views import WAITING_KEYS


def localize(doc: dict[str, Any], lang: str, server_lang: str) -> dict[str, Any]:
    """``doc`` with its ``waiting_for`` messages in ``lang`` (the same dict when already
    so, or when it has none)."""
    reasons = doc.get("waiting_for")
    if not reasons or lang == server_lang:
        return doc
    return {**doc, "waiting_for": [
        {**r, "message": t(WAITING_KEYS[r["code"]], lang, **r.get("params", {}))}
        for r in reasons]}


def localize_all(docs: list[dict[str, Any]], lang: str, server_lang: str) -> list[dict[str, Any]]:
    return [localize(doc, lang, server_lang) for doc in docs]
