"""Task statuses, ids and time formats shared by the task layer."""

from __future__ import annotations

import secrets
import string
import time
from enum import Enum


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


def new_task_id(now: float | None = None) -> str:
    """`task_YYYYMMDD_HHMMSS_` + 6 random [0-9a-z], as the user guide shows."""
    stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(now))
    # One draw from the OS generator, not six (each secrets.choice reads urandom).
    n = secrets.randbelow(36 ** 6)
    suffix = ""
    for _ in range(6):
        n, digit = divmod(n, 36)
        suffix += _ID_ALPHABET[digit]
    return f"task_{stamp}_{suffix}"


def format_time(ts: float | None) -> str | None:
    """Local time as `YYYY-MM-DD HH:MM:SS` (the guide's format), None stays None."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
