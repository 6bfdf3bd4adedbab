"""Background pruning of old finished tasks (never pending or running ones)."""

from __future__ import annotations

import logging
import threading
import time

from tasks.errors import StoreWriteError
from tasks.store import TaskStore

log = logging.getLogger("tasks.housekeeping")


class Pruner:
    def __init__(self, store: TaskStore, keep_days: float, *, interval: float = 3600.0) -> None:
        self.store = store
        self.keep_days = keep_days
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pruner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def run_once(self) -> int:
        removed = self.store.prune(time.time() - self.keep_days * 86400)
        if removed:
            log.info("pruned %d finished tasks older than %g days", removed, self.keep_days)
        return removed

    def _run(self) -> None:
        delay = min(60.0, self.interval)  # first pass soon, but not during start-up
        while not self._stop.wait(delay):
            try:
                self.run_once()
            except StoreWriteError as exc:
                log.warning("pruning failed: %s", exc)
            delay = self.interval
