"""Logging of robot lines that a noisy link could otherwise turn into a flood.

A wrong baud rate or a chatty debug firmware sends thousands of useless lines a
second; logging each one (it used to be a WARNING per line) fills the disk and
hides everything else. ``LineReport`` logs the first few of each interval, then
one summary per interval that says how many were not shown, and why.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable

from robot.link.outcome import short

# A reason's kind: its words before the first parenthesis, or a word that starts with a
# number or quote ("not JSON (Expecting value ...)" and "not JSON (Extra data ...)" are
# one kind, "stale or unknown id 17" and "... id 18" too; "not UTF-8" stays whole).
_KIND = re.compile(r"\s+[\d('\"]|\s*\(")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape(text: str) -> str:
    """Control characters as \\xNN: raw robot bytes must not forge log lines."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def reason_kind(reason: str) -> str:
    return _KIND.split(reason, maxsplit=1)[0].strip() or reason


class LineReport:
    """The first ``burst`` lines of each ``interval`` are logged, the rest counted and
    summarised once the interval is over (by the next line or by ``tick()``)."""

    def __init__(self, logger: logging.Logger, level: int, what: str, *, burst: int = 5,
                 interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.level = level
        self.what = what
        self.burst = burst
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._start: float | None = None
        self._shown = 0
        self._hidden: Counter[str] = Counter()

    def report(self, reason: str, text: str) -> None:
        """One line, ``text`` as received; ``reason`` why it is reported."""
        now = self._clock()
        with self._lock:
            summary = self._roll_locked(now)
            show = self._shown < self.burst
            if show:
                self._shown += 1
            else:
                self._hidden[reason_kind(reason)] += 1
        if summary:
            self.logger.log(self.level, "%s", summary)
        if show:
            if reason:
                self.logger.log(self.level, "%s (%s): %s", self.what, reason,
                                escape(short(text)))
            else:
                self.logger.log(self.level, "%s: %s", self.what, escape(short(text)))

    def tick(self) -> None:
        """Log the summary of an interval that is over, if lines were not shown in it."""
        now = self._clock()
        with self._lock:
            if self._start is None or now - self._start < self.interval:
                return
            summary = self._roll_locked(now)
        if summary:
            self.logger.log(self.level, "%s", summary)

    def flush(self) -> None:
        """Log the summary of the interval so far now (the link is closing)."""
        with self._lock:
            summary = self._roll_locked(self._clock(), force=True)
        if summary:
            self.logger.log(self.level, "%s", summary)

    def _roll_locked(self, now: float, force: bool = False) -> str | None:
        if not force and self._start is not None and now - self._start < self.interval:
            return None
        summary = None
        if self._hidden:
            total = sum(self._hidden.values())
            kinds = ", ".join(f"{kind}: {n}" for kind, n in self._hidden.most_common())
            start = now if self._start is None else self._start
            seconds = min(self.interval, now - start)
            summary = (f"{self.what}: {total} more in the last {seconds:.3g} s "
                       f"not shown ({kinds})")
        self._start = now
        self._shown = 0
        self._hidden.clear()
        return summary
