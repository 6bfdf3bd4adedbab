"""The task layer's errors: one base class, a stable code and its params, no HTTP.

What a refusal means on the wire (status code, Retry-After) is decided in one place,
server/errors.py; the task layer only says what went wrong.
"""

from __future__ import annotations

import sqlite3

from i18n import CodedError, message, t
from i18n.stdlib import os_error_text, sqlite_detail, sqlite_message


class TaskError(CodedError):
    """A request about tasks that cannot be honoured. ``code`` is the catalogue's
    ``error.<code>``; ``params`` fill its text."""

    # ``code`` by keyword in the subclasses: tests/test_i18n.py finds the codes in use
    # as ``code="..."`` arguments.
    def __init__(self, code: str, **params: object) -> None:
        super().__init__(code, params)


class QueueFull(TaskError):
    """The queue holds ``limit`` unfinished tasks: a new one is refused for now."""

    def __init__(self, limit: int) -> None:
        super().__init__(code="queue_full", limit=limit)


class TaskNotFound(TaskError):
    def __init__(self, task_id: str) -> None:
        super().__init__(code="task_not_found", task_id=task_id)


class TaskFinished(TaskError):
    """The task has ended: it can no longer be cancelled."""

    def __init__(self, task_id: str) -> None:
        super().__init__(code="task_finished", task_id=task_id)


class IdempotencyConflict(TaskError):
    """The Idempotency-Key was used before with a different request body."""

    def __init__(self, task_id: str) -> None:
        super().__init__(code="idempotency_key_reused", task_id=task_id)
        self.task_id = task_id


class StoreWriteError(TaskError):
    """A write failed (disk full, read-only, locked): nothing was changed. ``reason``:
    what SQLite said; the reader then gets it in their language (``params["detail"]``
    is a message not yet rendered, which a hold's params can keep too)."""

    def __init__(self, detail: str, *, reason: sqlite3.Error | None = None) -> None:
        super().__init__(code="not_saved", detail=self._shown(detail, reason))
        self.reason = reason
        # str() stays the store's own words (English): the logs quote it.
        self.args = (detail,)

    @staticmethod
    def _shown(detail: str, reason: sqlite3.Error | None) -> object:
        if reason is None:
            return detail
        return message("store.cannot_write", reason=sqlite_message(str(reason)))


class NotAccepted(StoreWriteError):
    """A submit whose task could not be stored: the task does not exist."""

    def __init__(self, detail: str, *, reason: sqlite3.Error | None = None) -> None:
        TaskError.__init__(self, code="not_accepted", detail=self._shown(detail, reason))
        self.reason = reason
        self.args = (detail,)


class StoreError(CodedError):
    """The database cannot be used at all (corrupt, foreign, unreadable): start-up
    stops with this one line. Not a refusal of a request, so not a TaskError.

    ``reason``: what SQLite or the OS said (English), filled into the text as
    ``{reason}`` in the reader's language; ``str()`` stays English for the logs."""

    # A class default too: a subclass may set its code through CodedError alone.
    reason: OSError | sqlite3.Error | None = None

    def __init__(self, code: str, *, reason: OSError | sqlite3.Error | None = None,
                 **params: object) -> None:
        self.reason = reason  # before CodedError renders the English text with it
        super().__init__(code, params)

    def text(self, lang: str) -> str:
        if self.reason is None:
            return super().text(lang)
        if isinstance(self.reason, OSError):
            why = os_error_text(self.reason, lang)
        else:
            why = sqlite_detail(str(self.reason), lang)
        return t(f"error.{self.code}", lang, reason=why, **self.params)


class TooManySubscribers(TaskError):
    def __init__(self, limit: int) -> None:
        super().__init__(code="too_many_subscribers", limit=limit)
        self.args = (f"at most {limit} event subscribers",)


class QueueClosed(TaskError):
    """The queue takes no new work: it is draining or in maintenance (docs/queue.md)."""

    def __init__(self, mode: str, reason: str) -> None:
        super().__init__(code="draining" if mode == "draining" else "maintenance",
                         reason=reason)


class MoveRefused(TaskError):
    """A move the queue cannot make: ``code`` says why (docs/queue.md)."""
