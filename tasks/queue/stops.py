"""The single record of why the robot is being stopped: an operator's cancel of the
running task, an emergency stop, or the server going down.

Only one task runs at a time, so a stop that is not aimed at a task (emergency stop,
shutdown) concerns whatever runs from the moment it is recorded: the worker takes a
``mark()`` when it starts a task, and a stop recorded after that mark is that task's.
Recording never waits behind a store write: an emergency stop must not be delayed.
"""

from __future__ import annotations

import threading

from tasks.reasons import CANCELLED, EMERGENCY_STOP

# The server is going down and the running task outlived the grace period.
SHUTDOWN = "shutdown"


class StopRecord:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0  # untargeted stops so far: a mark is where a task's begin
        self._cancels: dict[str, str] = {}  # running task id -> its first cancel reason
        self._since_mark: list[tuple[int, str]] = []  # (count, code) of untargeted stops

    def mark(self) -> int:
        """Where a task's stops begin: call when it starts."""
        with self._lock:
            self._since_mark.clear()  # older untargeted stops concerned earlier tasks
            return self._count

    def cancel(self, task_id: str, code: str = CANCELLED) -> None:
        """Stop ``task_id`` (it is running); the first reason given is kept."""
        with self._lock:
            self._cancels.setdefault(task_id, code)

    def stop_all(self, code: str) -> None:
        """Stop whatever runs now or starts before the next mark (EMERGENCY_STOP, SHUTDOWN)."""
        with self._lock:
            self._count += 1
            self._since_mark.append((self._count, code))

    def reason(self, task_id: str, mark: int) -> str | None:
        """Why ``task_id`` (started at ``mark``) is being stopped: a code, or None.

        An operator's cancel or an emergency stop decides how the task is recorded
        (cancelled, with that code) even if the server then went down too."""
        with self._lock:
            code = self._cancels.get(task_id)
            if code is not None:
                return code
            codes = [c for count, c in self._since_mark if count > mark]
        return next((c for c in codes if c != SHUTDOWN), SHUTDOWN if codes else None)

    def forget(self, task_id: str) -> None:
        """The task has ended (or went back to the queue): its cancel is spent."""
        with self._lock:
            self._cancels.pop(task_id, None)


__all__ = ["CANCELLED", "EMERGENCY_STOP", "SHUTDOWN", "StopRecord"]
