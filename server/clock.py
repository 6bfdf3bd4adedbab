"""Whether the operating system believes its clock is synchronised (``/health``).

The audit trail's times are this PC's clock (docs/security.md): an inspector asks whether
it was kept right. The answer is the kernel's own flag, read without privileges and
without starting a program:

- Linux: ``adjtimex`` with no modes set (read only). It returns ``TIME_ERROR`` (5) while
  the clock is unsynchronised, and ``status`` has ``STA_UNSYNC`` set; NTP daemons
  (chrony, ntpd, systemd-timesyncd) clear both once they discipline the clock.
- Windows and elsewhere: ``None``. Windows keeps its sync state inside the W32Time
  service, reachable only through ``w32tm`` (a process per question), so it is not asked.

``None`` means "cannot tell", never "not synchronised". Never raises; the answer is kept
for a minute (a monitor may poll ``/health`` many times a second).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import threading
import time

log = logging.getLogger("server.clock")

CACHE_S = 60.0
TIME_ERROR = 5  # adjtimex's return: the clock is not synchronised
STA_UNSYNC = 0x0040  # timex.status bit: the clock is not synchronised


class _Timex(ctypes.Structure):
    """The head of ``struct timex`` (linux/timex.h) up to ``status``; the rest is room
    the kernel writes into (the whole struct is about 200 bytes on 64-bit)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 512),
    ]


_lock = threading.Lock()
_cached: tuple[float, bool | None] | None = None  # (time.monotonic(), answer)


def clock_synchronized() -> bool | None:
    """True: the OS says its clock is synchronised; False: it says it is not; None: this
    OS cannot tell (or asking failed). Cached for CACHE_S seconds."""
    global _cached
    now = time.monotonic()
    with _lock:
        if _cached is not None and now - _cached[0] < CACHE_S:
            return _cached[1]
        answer = _ask()
        _cached = (now, answer)
        return answer


def _ask() -> bool | None:
    try:
        if sys.platform.startswith("linux"):
            return _linux()
    except Exception:  # a missing libc symbol or an odd ABI: "cannot tell", not a 500
        log.debug("cannot read the clock's synchronisation state", exc_info=True)
    return None


def _linux() -> bool | None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    adjtimex = libc.adjtimex
    adjtimex.argtypes = [ctypes.POINTER(_Timex)]
    adjtimex.restype = ctypes.c_int
    timex = _Timex()  # zeroed: modes 0 reads, changes nothing
    state = adjtimex(ctypes.byref(timex))
    if state < 0:
        log.debug("adjtimex failed: errno %d", ctypes.get_errno())
        return None
    return state != TIME_ERROR and not timex.status & STA_UNSYNC
