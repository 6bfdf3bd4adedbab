"""What a robot command returns, the transcript of its lines, and one-line errors.

Shared by the link (robot/link/driver.py and its parts) and whoever reads its results; no I/O.
"""

from __future__ import annotations

import errno
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from i18n import CodedError, message

TRANSCRIPT_MAX = 2000
_SHOWN_BAD_LINE = 200  # characters of an invalid line kept in logs and transcripts

ABORTED_UNSENT = "aborted before it was sent: STOP was requested first"


class Fault(str, Enum):
    """Why a command left the robot in an unknown state. A str: it compares equal to,
    hashes like and serializes as its value ("timeout" == Fault.TIMEOUT)."""

    TIMEOUT = "timeout"
    DISCONNECTED = "disconnected"
    ALARM = "alarm"
    # A reply did not fit its command (robot/link/fit.py): the robot is doing something
    # other than what the host thinks.
    OUT_OF_STEP = "out_of_step"

    def __str__(self) -> str:
        # The value, not "Fault.TIMEOUT", in f-strings, str.format and %s on every Python.
        return self.value


@dataclass
class CommandOutcome:
    success: bool
    message: str  # English, for logs and transcripts
    data: dict[str, Any] = field(default_factory=dict)
    fault: Fault | None = None  # robot state unknown; None: it is known
    aborted: bool = False  # the robot confirmed an abort (result "aborted" after a STOP)
    items: list[dict[str, Any]] = field(default_factory=list)
    items_dropped: int = 0  # progress items beyond robot/link/progress.py's bounds, not kept
    transcript: list[dict[str, Any]] = field(default_factory=list)
    # A failure's stable code and the values its text needs (e.g. robot_timeout,
    # {"seconds": "30"}): the task layer stores the text at error.<code> in the
    # server's language. None for a success (its message is the robot's own).
    code: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # The line went to the port: the robot may have it (a failed write may have put
    # part of it on the wire). False: the robot cannot have seen this command.
    sent: bool = False


@dataclass(frozen=True)
class LinkFailure:
    """Why the link failed a command: English for logs, a code and values for the
    catalogue (robot/ does not translate; tasks/ renders error.<code>)."""

    message: str
    code: str
    params: dict[str, Any] = field(default_factory=dict)


class RobotLinkError(CodedError):
    """Start-up failure: a code and its values, text at ``error.<code>`` (one line);
    ``str()`` and ``message`` are English, for logs."""

    def failure(self) -> LinkFailure:
        return LinkFailure(self.message, self.code, self.params)


class Transcript:
    """Bounded log of the lines of one command: the first and last halves survive."""

    def __init__(self, limit: int = TRANSCRIPT_MAX) -> None:
        self._head: list[dict[str, Any]] = []
        self._tail: deque[dict[str, Any]] = deque(maxlen=limit - limit // 2)
        self._head_max = limit // 2
        self._omitted = 0
        self._lock = threading.Lock()

    def add(self, direction: str, line: str, *, skipped: str | None = None,
            out_of_step: str | None = None) -> None:
        """One line; ``skipped``: why a received line was not used; ``out_of_step``: why
        it could not be the command's own (it failed the command)."""
        entry: dict[str, Any] = {"t": time.time(), "dir": direction, "line": line}
        if skipped is not None:
            entry["skipped"] = skipped
        if out_of_step is not None:
            entry["out_of_step"] = out_of_step
        with self._lock:
            if len(self._head) < self._head_max:
                self._head.append(entry)
                return
            if len(self._tail) == self._tail.maxlen:
                self._omitted += 1
            self._tail.append(entry)

    def export(self) -> list[dict[str, Any]]:
        with self._lock:
            out = list(self._head)
            if self._omitted:
                t = self._tail[0]["t"] if self._tail else time.time()
                out.append({"t": t, "dir": "note",
                            "line": f"... {self._omitted} lines omitted ..."})
            out.extend(self._tail)
            return out


def open_error(url: str, exc: Exception) -> RobotLinkError:
    """Why ``url`` cannot be opened, as a code the operator reads in their language."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in (errno.EAGAIN, errno.EBUSY) or "exclusively lock" in text:
        return RobotLinkError("port_busy", {"url": url})
    # pyserial on Windows wraps the Win32 error in the message text only, e.g.
    # "could not open port 'COM3': PermissionError(13, 'Access is denied.', None, 5)".
    # A COM port is opened exclusively there, so "access denied" almost always
    # means another program (a terminal, a vendor tool, a second server) has it.
    if "Access is denied" in text or "PermissionError(13" in text:
        return RobotLinkError("port_busy_or_denied", {"url": url})
    if "FileNotFoundError(2" in text or "cannot find the file" in text:
        return RobotLinkError("port_not_found", {"url": url, "command": "python main.py ports"})
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return RobotLinkError("port_no_device", {"url": url})
    if code in (errno.EACCES, errno.EPERM):
        return RobotLinkError("port_permission", {"url": url, "group": "dialout"})
    # The system's own words, quoted: there is no telling what else they may say.
    first = text.splitlines()[0] if text else type(exc).__name__
    return RobotLinkError("port_open_failed", {"url": url, "error": first})


def describe_open_error(url: str, exc: Exception) -> str:
    """``open_error`` in English (logs)."""
    return open_error(url, exc).message


# pyserial's words when a device's read returns nothing: the device went away.
_GONE_TEXT = "returned no data"
_GONE_ERRNOS = (errno.EIO, errno.ENXIO, errno.ENODEV)


def os_said(exc: BaseException) -> dict[str, Any]:
    """The system's words about a failed read or write, quoted as its own: there is no
    telling what they may say (i18n.message, a parameter of the failure's text)."""
    return message("wire.os_said", error=str(exc))


def read_failure(exc: BaseException) -> LinkFailure:
    """A read that failed: an unplugged or powered-off device (the usual case) is said
    in the operator's language; anything else in the system's words."""
    gone = _GONE_TEXT in str(exc) or getattr(exc, "errno", None) in _GONE_ERRNOS
    return LinkFailure(f"disconnected: read failed ({exc})", "robot_disconnected",
                       {"error": message("wire.read.device_gone") if gone else os_said(exc)})


def short(line: str) -> str:
    return line if len(line) <= _SHOWN_BAD_LINE else line[:_SHOWN_BAD_LINE] + "..."
