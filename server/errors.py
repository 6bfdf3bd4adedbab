"""One error type for every refusal; the handler turns it into a JSON reply."""

from __future__ import annotations


class ApiError(Exception):
    """An HTTP error with a JSON body `{"success": false, "message": ...}`."""

    def __init__(self, message: str, status: int = 400, *,
                 headers: dict[str, str] | None = None, close: bool = False,
                 extra: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = headers or {}
        self.close = close  # framing errors: the connection cannot be reused
        self.extra = extra or {}

    def body(self) -> dict:
        return {"success": False, "message": self.message, **self.extra}
