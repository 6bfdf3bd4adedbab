"""One error type for every refusal; the handler turns it into a JSON reply."""

from __future__ import annotations

import html

from i18n import CodedError

# The stdlib's own refusals (bad request line, header limits), by status: their English
# texts are replaced by catalogue ones so that every error has a code and a language.
STDLIB_CODES = {400: "bad_request", 408: "request_timeout", 414: "request_line_too_long",
                431: "headers_too_large", 505: "http_version_not_supported"}


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
