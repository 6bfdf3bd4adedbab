"""The console the server runs in: output that cannot kill it, and every way to stop it.

A lab PC starts the server by double-click, from an IDE, under a service wrapper
(NSSM, Task Scheduler) or with output redirected to a file, often in a Chinese
code page (GBK). Whatever the console, printing must not raise, and every way an
operator closes it must take the shutdown path that sends the robot STOP.
What differs per OS sits in small functions the tests call with the path forced.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from i18n import t

log = logging.getLogger("server.console")

# Windows console control events (wincon.h).
CTRL_C_EVENT = 0
CTRL_BREAK_EVENT = 1
CTRL_CLOSE_EVENT = 2
CTRL_LOGOFF_EVENT = 5
CTRL_SHUTDOWN_EVENT = 6
# Windows ends the process about 5 s after a close event, whatever the handler does.
CLOSE_WAIT_S = 4.5

_keep_alive: list[Any] = []  # ctypes callbacks must outlive their registration


def make_console_safe(streams: tuple[TextIO, ...] | None = None) -> None:
    """Replace what the console cannot encode instead of raising.

    The encoding itself is kept: a real Windows console already gets Unicode through
    Python's console I/O (PEP 528), and a redirect keeps the encoding the operator's
    tools expect (the ANSI code page, or PYTHONIOENCODING). Only the failure goes:
    with GBK or ASCII output, the banner's check mark used to kill the server.
    """
    for stream in streams if streams is not None else (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None:
            continue  # replaced by an IDE or wrapper with its own writer
        try:
            reconfigure(errors="replace")
        except (ValueError, OSError) as exc:  # a closed or detached stream
            log.debug("cannot reconfigure %r: %s", stream, exc)


def can_encode(text: str, stream: TextIO | None = None) -> bool:
    """True if ``text`` reaches ``stream`` (default stdout) without replacement."""
    encoding = getattr(stream or sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def shutdown_signals(module: Any = signal) -> list[int]:
    """Signals that ask for a clean shutdown: Ctrl+C and SIGTERM everywhere, Ctrl+Break
    (SIGBREAK) on Windows, the terminal closing (SIGHUP) on POSIX."""
    found = []
    for name in ("SIGINT", "SIGTERM", "SIGBREAK", "SIGHUP"):
        number = getattr(module, name, None)
        if number is None:
            continue
        if name == "SIGHUP" and signal.getsignal(number) is signal.SIG_IGN:
            continue  # started under nohup: the operator asked to survive the terminal
        found.append(number)
    return found


def console_close_handler(request_stop: Callable[[], None], finished: threading.Event,
                          wait_s: float = CLOSE_WAIT_S) -> Callable[[int], bool]:
    """A Windows console control handler for the events that end the process.

    Closing the console window, logging off or shutting down give the process a few
    seconds and then end it: there is no time for the grace period, so
    ``request_stop`` must send STOP at once. The handler holds the event (Windows
    waits for it) until the shutdown has finished or the time is nearly up.
    Ctrl+C and Ctrl+Break are left to the signal handlers (return False).
    """
    def handler(event: int) -> bool:
        if event not in (CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT):
            return False
        log.info("console event %d: stopping now", event)
        request_stop()
        finished.wait(wait_s)
        return True

    return handler


def install_shutdown_handlers(on_signal: Callable[[int], None],
                              on_console_close: Callable[[], None],
                              finished: threading.Event) -> list[int]:
    """Route every shutdown signal to ``on_signal(signum)``; on Windows also the
    console close/logoff/shutdown events to ``on_console_close``. Returns the signals."""
    signals = shutdown_signals()
    for number in signals:
        signal.signal(number, lambda signum, frame: on_signal(signum))
    if os.name == "nt":  # pragma: no cover - Windows only
        _register_console_handler(console_close_handler(on_console_close, finished))
    return signals


def _register_console_handler(handler: Callable[[int], bool]) -> None:  # pragma: no cover
    import ctypes
    from ctypes import wintypes

    routine = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)(  # type: ignore[attr-defined]
        lambda event: bool(handler(int(event))))
    _keep_alive.append(routine)
    # Registered after Python's own (Ctrl+C/Ctrl+Break) handler, so it is asked first.
    if not ctypes.windll.kernel32.SetConsoleCtrlHandler(routine, True):  # type: ignore
        log.warning("cannot watch the console window: closing it will not stop the robot")


def pause_before_exit(code: int, *, interactive: bool, windows: bool = os.name == "nt",
                      read: Callable[[str], str] = input, lang: str = "en") -> None:
    """A window opened by double-click closes with the process: on Windows, after a
    failed interactive start, wait for Enter so the reason can be read."""
    if code == 0 or not interactive or not windows:
        return
    try:
        read("\n" + t("console.press_enter", lang))
    except (EOFError, OSError, KeyboardInterrupt):
        pass  # no console to read from: nothing to wait for
