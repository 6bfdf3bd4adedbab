"""Task statuses, ids and time formats shared by the task layer."""

from __future__ import annotations

import datetime
import math
import os
import secrets
import string
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any


class TaskStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
ALL_STATUSES = tuple(s.value for s in TaskStatus)

_ID_ALPHABET = string.digits + string.ascii_lowercase
_ID_SPACE = 36 ** 6
# Two base-36 digits per lookup, so a suffix is three lookups, not six divmods.
_ID_PAIRS = tuple(a + b for a in _ID_ALPHABET for b in _ID_ALPHABET)
_ID_BATCH = 512
_id_lock = threading.Lock()
_id_suffixes: list[str] = []


def _refill_suffixes() -> None:
    # One read of the OS generator per batch: a read per id was most of an id's cost.
    # Each id is a 64-bit value mod 36**6. As 2**64 = q * 36**6 + r with q ~ 8.5e9,
    # every suffix has probability q/2**64 or (q+1)/2**64: off uniform by at most one
    # part in 8.5e9, far below what collision odds between ids could notice.
    raw = secrets.token_bytes(8 * _ID_BATCH)
    for value in memoryview(raw).cast("Q"):
        high, rest = divmod(value % _ID_SPACE, 36 ** 4)
        mid, low = divmod(rest, 36 ** 2)
        _id_suffixes.append(_ID_PAIRS[high] + _ID_PAIRS[mid] + _ID_PAIRS[low])


def _forget_suffixes_after_fork() -> None:
    # A forked child must not hand out the ids its parent is about to use.
    global _id_lock
    _id_lock = threading.Lock()
    _id_suffixes.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork either
    os.register_at_fork(after_in_child=_forget_suffixes_after_fork)


class LocalTimeFormat:
    """time.strftime of a local time, remembered for the last whole second asked:
    ids and documents made together mostly share their second."""

    __slots__ = ("_fmt", "_last")

    def __init__(self, fmt: str) -> None:
        self._fmt = fmt
        self._last: tuple[int | None, str] = (None, "")

    def __call__(self, ts: float) -> str:
        second = math.floor(ts)  # what time.localtime(ts) does with the fraction
        last = self._last  # one read: another thread may replace it meanwhile
        if last[0] == second:
            return last[1]
        text = time.strftime(self._fmt, time.localtime(second))
        self._last = (second, text)
        return text


_id_stamp = LocalTimeFormat("%Y%m%d_%H%M%S")
# The guide's times, and logging's asctime to the second (server/logbatch.py).
local_second = LocalTimeFormat("%Y-%m-%d %H:%M:%S")


def new_task_id(now: float | None = None, prefix: str = "task") -> str:
    """`task_YYYYMMDD_HHMMSS_` + 6 random [0-9a-z], as the user guide shows (a
    sequence's: `seq_...`)."""
    with _id_lock:
        if not _id_suffixes:
            _refill_suffixes()
        suffix = _id_suffixes.pop()
    return f"{prefix}_{_id_stamp(time.time() if now is None else now)}_{suffix}"


def format_time(ts: float | None) -> str | None:
    """Local time as `YYYY-MM-DD HH:MM:SS` (the guide's format), None stays None."""
    if ts is None:
        return None
    return local_second(ts)


NOT_BEFORE_MAX_DAYS = 366  # further ahead is a typo (a year), not a plan


def parse_not_before(value: object, now: float) -> float:
    """A ``not_before`` as a POSIX time: the guide's `YYYY-MM-DD HH:MM:SS` (local), or ISO
    8601 (with an offset, or local without one). Raises ValueError with a code:
    "not_before_invalid" or "not_before_too_far"."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        raise ValueError("not_before_invalid")
    try:
        moment = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError("not_before_invalid") from None
    try:
        if moment.tzinfo is None:  # local time, its DST as the OS says
            stamp = time.mktime(moment.timetuple()) + moment.microsecond / 1e6
        else:
            stamp = moment.timestamp()
    except (OverflowError, OSError, ValueError):
        raise ValueError("not_before_invalid") from None
    if not math.isfinite(stamp):
        raise ValueError("not_before_invalid")
    if stamp > now + NOT_BEFORE_MAX_DAYS * 86400:
        raise ValueError("not_before_too_far")
    return stamp


@dataclass(slots=True)
class Task:
    """One task as the task layer passes it around (a stored row, typed).

    ``to_dict()`` is the document clients see: the guide's keys first, in its names
    (``submit_time``...), times formatted; the ETA fields are the views' to add."""

    task_id: str
    cmd_type: str
    params: dict[str, Any]
    status: TaskStatus
    submitted: float
    started: float | None = None
    ended: float | None = None
    result: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    retry_of: str | None = None
    seq: int | None = None
    # Seconds from start to end on the monotonic clock of the process that ran the task:
    # a step of the wall clock (NTP, an operator) during the run does not change it.
    # None when unknown: a task failed by recovery after a restart, or an older row.
    run_s: float | None = None
    # A sequence's task (tasks/sequences/): its step (from 1), or None for a fix-it
    # command run while the sequence was held.
    sequence_id: str | None = None
    step: int | None = None
    # Who submitted it and who cancelled it (docs/security.md); None in older rows.
    submitted_by: str | None = None
    cancelled_by: str | None = None
    external_id: str | None = None  # the submitter's own id (a LIMS's), in every event
    # Its place once an operator moved it (None: seq); the queue's order is rank or seq.
    rank: int | None = None
    not_before: float | None = None  # it does not start before this time (wall clock)

    @property
    def key(self) -> int:
        """Its key in the queue's order (tasks/queue/state.py)."""
        assert self.seq is not None  # every stored task read back has its seq
        return self.seq if self.rank is None else self.rank

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def duration(self) -> float | None:
        """Seconds it ran, once ended: the monotonic measure where this process took it,
        else the wall-clock difference, never negative (a clock stepped back during a
        run before a restart cannot be corrected, only kept from going below zero)."""
        if self.started is None or self.ended is None:
            return None
        if self.run_s is not None:
            return self.run_s
        return max(0.0, self.ended - self.started)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "task_id": self.task_id, "status": self.status.value, "cmd_type": self.cmd_type,
            "submit_time": format_time(self.submitted),
            "start_time": format_time(self.started),
            "end_time": format_time(self.ended),
            "result": self.result, "params": self.params,
        }
        duration = self.duration
        if duration is not None:
            doc["duration_s"] = round(duration, 3)
        if self.progress is not None:
            doc["progress"] = self.progress
        if self.retry_of:
            doc["retry_of"] = self.retry_of
        if self.sequence_id is not None:
            doc["sequence_id"] = self.sequence_id
            if self.step is None:
                doc["fixit"] = True
            else:
                doc["step"] = self.step
        if self.submitted_by is not None:
            doc["submitted_by"] = self.submitted_by
        if self.cancelled_by is not None:
            doc["cancelled_by"] = self.cancelled_by
        if self.external_id is not None:
            doc["external_id"] = self.external_id
        if self.not_before is not None:
            doc["not_before"] = format_time(self.not_before)
        return doc
