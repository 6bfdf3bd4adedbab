"""One error type for every refusal; the handler turns it into a JSON reply. The task
layer's refusals (tasks/errors.py) become one here, in from_task_error alone."""

from __future__ import annotations

import html

from i18n import CodedError
from tasks.errors import TaskError

# The stdlib's own refusals (bad request line, header limits), by status: their English
# texts are replaced by catalogue ones so that every error has a code and a language.
STDLIB_CODES = {400: "bad_request", 408: "request_timeout", 414: "request_line_too_long",
                431: "headers_too_large", 505: "http_version_not_supported"}


_RETRY_SOON = (("Retry-After", "5"),)
# What each task-layer refusal means on the wire: its status and headers.
TASK_REPLIES: dict[str, tuple[int, tuple[tuple[str, str], ...]]] = {
    "queue_full": (503, _RETRY_SOON),
    "task_not_found": (404, ()),
    "task_finished": (409, ()),
    "idempotency_key_reused": (422, ()),
    "not_accepted": (503, _RETRY_SOON),  # the store could not write: nothing changed
    "not_saved": (503, _RETRY_SOON),  # alike, for a change other than a submit
    "too_many_subscribers": (503, _RETRY_SOON),
    # Sequences (tasks/sequences/): a request its state cannot take.
    "sequence_not_found": (404, ()),
    "sequence_ended": (409, ()),
    "sequence_not_held": (409, ()),
    "not_waiting_confirm": (409, ()),
    "fixit_running": (409, ()),
    "recover_action_invalid": (400, ()),
    # Principals (tasks/store/principals.py).
    "user_exists": (409, ()),
    "user_not_found": (404, ()),
    "user_invalid": (400, ()),
    "webhook_not_found": (404, ()),
    "delivery_not_found": (404, ()),
    # Shaping the queue (tasks/queue/shaping.py, docs/queue.md).
    "draining": (503, (("Retry-After", "60"),)),
    "maintenance": (503, (("Retry-After", "60"),)),
    "anchor_not_found": (404, ()),
    "task_not_pending": (409, ()),
    "task_in_sequence": (409, ()),
    "sequence_not_pending": (409, ()),
    "anchor_not_queued": (409, ()),
}


class ApiError(CodedError):
    """An HTTP error with a JSON body ``{"success": false, "code": ..., "message": ...}``.

    ``code`` is stable and machine-readable (the catalogue key is ``error.<code>``);
    the message is rendered per request, in the client's language.
    """

    def __init__(self, code: str, status: int = 400, *, params: dict | None = None,
                 headers: dict[str, str] | None = None, close: bool = False,
                 extra: dict | None = None) -> None:
        super().__init__(code, params)
        self.status = status
        self.headers = headers or {}
        self.close = close  # framing errors: the connection cannot be reused
        self.extra = extra or {}

    def body(self, lang: str = "en") -> dict:
        return {"success": False, "code": self.code,
                "message": self.text(lang), **self.extra}

    def page(self, lang: str = "en") -> bytes:
        """The refusal as a page, for a person who opened the server in a browser: the
        message says what to configure (--allowed-host, --allow, --trusted-proxy)."""
        message = html.escape(self.text(lang))
        return (f'<!doctype html><html lang="{lang}"><meta charset="utf-8">'
                f"<title>{self.status}</title><h1>{self.status} {html.escape(self.code)}</h1>"
                f"<p>{message}</p></html>\n").encode()


def stdlib_error(status: int) -> ApiError:
    """What to answer for a refusal of http.server's own (it calls send_error)."""
    code = STDLIB_CODES.get(status)
    if code is None:
        return ApiError("http_error", status, params={"status": status}, close=True)
    return ApiError(code, status, close=True)


def from_task_error(exc: TaskError) -> ApiError:
    """The reply to a task-layer refusal: its code and text, with TASK_REPLIES' status.
    A code missing there is a bug: 500, still with the refusal's own text."""
    status, headers = TASK_REPLIES.get(exc.code, (500, ()))
    return ApiError(exc.code, status, params=exc.params, headers=dict(headers))
