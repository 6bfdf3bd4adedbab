"""Clients of a running server over HTTP: `client.api` (the stdlib-only Python client, one
file to copy to a client PC) and `client.cli` (main.py's submit/status/cancel/tasks/sequence)."""

from client.api import (
    DEFAULT_URL,
    RobotClient,
    RobotClientError,
    RobotConnectionError,
    RobotHTTPError,
    RobotTimeoutError,
)

__all__ = ["DEFAULT_URL", "RobotClient", "RobotClientError", "RobotConnectionError",
           "RobotHTTPError", "RobotTimeoutError"]
