"""Long-poll waiters: a thread that waits for a task to end is woken when it does."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tasks.models import FINAL_STATUSES

Doc = dict[str, Any]


class FinalWaiters:
    def __init__(self, lock: threading.Lock) -> None:
        # The queue state's lock, not the manager's: a long-poll must not queue behind
        # a store write.
        self._lock = lock
        self._events: dict[str, threading.Event] = {}

    def wait(self, task_id: str, get: Callable[[str], Doc | None],
             timeout: float) -> Doc | None:
        """The task (read with ``get``) once final, or as it is after ``timeout`` s."""
        with self._lock:
            event = self._events.get(task_id)
            if event is None:
                event = self._events[task_id] = threading.Event()
        doc = get(task_id)
        if doc is None or doc["status"] in FINAL_STATUSES:
            # Set, not just drop: another waiter may hold this event and the
            # finishing thread may already have looked for it.
            self.set_final(task_id)
            return doc
        event.wait(timeout)
        return get(task_id)

    def set_final(self, task_id: str) -> None:
        with self._lock:
            event = self._events.pop(task_id, None)
        if event is not None:
            event.set()
