"""The worker's side of the queue: waiting until tasks may start, taking the next one,
committing `running` before any byte goes out, progress, and the final state.

``TaskManager`` (tasks/queue/manager.py) is this plus the clients' side (submit, cancel,
pause); the two share one set of locks and state, declared here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tasks.models import Task, TaskStatus
from tasks.queue.events import EventBus
from tasks.queue.state import MAINTENANCE, QueueState
from tasks.queue.stops import StopRecord
from tasks.queue.views import TaskViews
from tasks.queue.waiters import FinalWaiters
from tasks.store import Statement, TaskStore

log = logging.getLogger("tasks")  # the manager's logger: these are its records
# A progress event carries only the items new since the previous one, and only if their
# JSON fits in EVENT_ITEM_BYTES; its message is cut to EVENT_MESSAGE_BYTES. So one SSE
# frame stays within 4 KB however many items come at once (docs/api.md, Events); whoever
# wants omitted items reads GET /task/<id>, which has them all.
EVENT_ITEM_BYTES = 3 * 1024
EVENT_MESSAGE_BYTES = 512


def json_size(value: Any) -> int:
    """UTF-8 bytes of ``value`` as the SSE stream encodes it."""
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def items_fit(items: list[Any], budget: int) -> bool:
    """Whether ``items`` as a JSON list take at most ``budget`` bytes; counting stops once
    over, so a burst of thousands is not encoded only to be left out."""
    size = 2
    for item in items:
        size += json_size(item) + 2
        if size > budget:
            return False
    return True


def cut_message(message: Any, budget: int) -> Any:
    """``message`` if its JSON takes at most ``budget`` bytes, else the longest start of its
    text that does, with an ellipsis."""
    if message is None or json_size(message) <= budget:
        return message
    text = message if isinstance(message, str) else json.dumps(message, ensure_ascii=False)
    low, high = 0, min(len(text), budget)
    while low < high:
        mid = (low + high + 1) // 2
        if json_size(text[:mid] + "…") <= budget:
            low = mid
        else:
            high = mid - 1
    return text[:low] + "…"


@dataclass(frozen=True)
class Run:
    """A task the worker may now send to the robot."""

    task: Task
    # The link's STOP count, read before `running` was committed: a STOP from then on
    # keeps the command off the wire instead of being overtaken by it.
    stop_epoch: int
    stop_mark: int  # where this task's stops begin in the StopRecord


class RunSide:
    # Set by TaskManager.__init__.
    store: TaskStore
    events: EventBus
    state: QueueState
    views: TaskViews
    stops: StopRecord
    waiters: FinalWaiters
    wall: Callable[[], float]
    on_finish: Callable[[str, str, float], None] | None
    _lock: threading.RLock
    _runnable: threading.Condition
    _run_clocks: dict[str, float]

    @property
    def paused(self) -> bool:
        return self.state.hold.paused

    @property
    def blocked(self) -> bool:
        """No task may start: the queue is paused or in maintenance."""
        return self.state.hold.paused or self.state.mode.mode == MAINTENANCE

    @property
    def control_lock(self) -> threading.RLock:
        """The lock of the queue's operations (start, cancel, pause, finish) and of the
        condition the worker waits on; a sequence's control state shares it."""
        return self._lock

    def get(self, task_id: str) -> dict[str, Any] | None:
        return self.views.get(task_id)

    def wait_runnable(self, stop: threading.Event, timeout: float) -> bool:
        """Block while the queue is paused; True when tasks may start."""
        with self._lock:
            if self.blocked and not stop.is_set():
                self._runnable.wait(timeout)
            return not self.blocked and not stop.is_set()

    def wait_change(self, timeout: float, unless: Callable[[], bool] = lambda: False) -> None:
        """Block until the queue's hold changes, a sequence is asked something
        (notify_runnable), or ``timeout``: the sequence runner's waits. ``unless`` is
        checked under the lock first, so a request made just before is not slept on."""
        with self._lock:
            if not unless():
                self._runnable.wait(timeout)

    def notify_runnable(self) -> None:
        with self._lock:
            self._runnable.notify_all()

    def wake(self) -> None:
        """Wake a worker blocked in wait_runnable or take (used at shutdown)."""
        self.notify_runnable()
        self.state.wake()

    def take(self, timeout: float) -> str | None:
        """The next entry whose time has come (a task id, or a sequence id), or None
        after timeout (tasks/queue/state.py)."""
        return self.state.take(timeout, self.wall)

    def put_back_first(self, entry: str) -> None:
        """Return an entry taken but not started: it stays first in line."""
        with self.state.lock:
            self.state.put_back(entry)

    def start(self, task_id: str, stop_epoch: Callable[[], int], *,
              extra: Sequence[Statement] = (), hold_ok: bool = False,
              put_back: bool = True) -> Run | None:
        """Commit `running` (before any byte goes to the robot); None if not runnable.

        ``stop_epoch`` reads the link's STOP count; it is read, with this task's mark
        in the StopRecord, before the commit. ``extra``: statements committed with it
        (a sequence's state). ``hold_ok``: starts even while the queue is paused (a
        fix-it command while its sequence is held). ``put_back=False``: a sequence's
        step refused for a pause is not put in the FIFO (its runner waits)."""
        with self._lock:
            with self.state.lock:
                pending = task_id in self.state.pending
            if not pending:
                return None  # cancelled while it waited
            if self.blocked and not hold_ok:
                # Paused between the worker's check and its take: keep its place.
                if put_back:
                    self.put_back_first(task_id)
                return None
            epoch, mark = stop_epoch(), self.stops.mark()
            clock = time.monotonic()
            task = self.store.mark_running(task_id, self.wall(), extra=extra)
            if task is None:  # not pending on disk: nothing to run
                with self.state.lock:
                    self.state.forget(task_id)
                return None
            with self.state.lock:
                self.state.forget(task_id)
                self.state.counts[TaskStatus.PENDING] -= 1
                self.state.counts[TaskStatus.RUNNING] += 1
                self.state.running = task
                self._run_clocks[task_id] = clock
        log.info("task %s %s running", task_id, task.cmd_type)
        self.events.publish("task", self.views.doc(task))
        return Run(task, epoch, mark)

    def requeue_unsent(self, task_id: str) -> bool:
        """Put a running task whose command never reached the robot back at the head
        of the queue (nothing happened on the robot, so nothing is repeated)."""
        with self._lock:
            with self.state.lock:
                running = self.state.running
            task = running if running is not None and running.task_id == task_id \
                else self.store.get(task_id)
            if task is None or not self.store.unstart(task_id):
                return False
            with self.state.lock:
                self.state.running = None
                self.state.counts[TaskStatus.RUNNING] -= 1
                self.state.counts[TaskStatus.PENDING] += 1
                # A sequence's step is not the line's: its sequence runs it next.
                self.state.requeue_first(task)
                self._run_clocks.pop(task_id, None)
            self.stops.forget(task_id)
        log.warning("task %s was not sent (robot link down): back at the head of the queue",
                    task_id)
        doc = self.get(task_id)
        if doc is not None:
            self.events.publish("task", doc)
        return True

    def progress(self, task_id: str, progress: dict[str, Any],
                 new_items: list[Any] | None = None, first: int = 0) -> None:
        """The running task's progress now (without items) and its items from index
        ``first`` on: stored by appending, appended in place to the task in memory, and
        published as a delta (the new items only, with ``items_from`` and ``items_count``;
        none but ``items_omitted`` when they do not fit the event's bound)."""
        new_items = list(new_items or [])
        self.store.set_progress(task_id, progress, new_items, first)
        with self.state.lock:
            running = self.state.running
            count = first + len(new_items)
            if running is not None and running.task_id == task_id:
                items = (running.progress or {}).get("items")
                if not isinstance(items, list):
                    items = []
                del items[first:]  # items sent again replace their first copies
                first = len(items)
                # In place, not copied: O(new items) per event. Nothing built for a reader
                # shares this list while the task runs (GET /task reads the store), and
                # once it is final no progress is added to it.
                items.extend(new_items)
                count = len(items)
                running.progress = {**progress, "items": items}
        delta = {**progress, "items": new_items, "items_from": first, "items_count": count}
        if "message" in delta:
            delta["message"] = cut_message(delta["message"], EVENT_MESSAGE_BYTES)
        if not items_fit(new_items, EVENT_ITEM_BYTES):
            delta.update(items=[], items_from=count, items_omitted=len(new_items))
        self.events.publish("progress", {"task_id": task_id, "progress": delta})

    def finish(self, task_id: str, status: TaskStatus, result: dict[str, Any],
               transcript: list[dict[str, Any]] | None = None, *,
               log_text: str | None = None, drop_items: bool = False,
               extra: Sequence[Statement] = (),
               settled: Iterable[str] = ()) -> dict[str, Any] | None:
        """Commit the final state, then report it (events, waiters, metrics).

        ``log_text``: the outcome in English for the log (the stored message is in the
        server's language). ``drop_items``: its progress items are discarded with it
        (replies out of step: they may be another command's). ``extra``: statements
        committed in the same transaction (a sequence's next state); ``settled``: the
        pending tasks they cancelled. Raises StoreWriteError with nothing changed if
        the state cannot be saved."""
        ended, clock = self.wall(), time.monotonic()
        with self.state.lock:
            began = self._run_clocks.get(task_id)
        run_s = None if began is None else clock - began
        # Not popped before the commit: a write that fails is tried again, same start.
        self.store.finish(task_id, status, ended, result, transcript,
                          only_if=(TaskStatus.RUNNING,), run_s=run_s, drop_items=drop_items,
                          extra=extra)
        with self.state.lock:
            self._run_clocks.pop(task_id, None)
            running = self.state.running
            self.state.running = None
            self.state.counts[TaskStatus.RUNNING] -= 1
            self.state.counts[status] += 1
            final = dataclasses.replace(running, status=status, ended=ended, result=result,
                                        run_s=run_s) if running is not None else None
            if final is not None and drop_items and final.progress:
                final.progress = {k: v for k, v in final.progress.items() if k != "items"}
            if status == TaskStatus.COMPLETED and final and final.duration is not None:
                self.views.record_duration(final.cmd_type, final.duration)
        self.stops.forget(task_id)
        self.settle_pending(settled, TaskStatus.CANCELLED)
        if final is not None and final.task_id == task_id:
            # Built from memory, not read back: the row was just committed as this.
            doc: dict[str, Any] | None = self.views.doc(final)
            assert doc is not None
            self.views.cache_final(task_id, doc)
        else:
            doc = self.get(task_id)
        duration = (final.duration if final else None) or 0.0
        # Before waiters wake: whoever sees the task final also sees it in the metrics.
        if self.on_finish is not None and running is not None:
            try:
                self.on_finish(running.cmd_type, status.value, duration)
            except Exception:
                log.exception("on_finish hook failed for task %s", task_id)
        self.waiters.set_final(task_id)
        if doc is not None:
            self.events.publish("task", doc)
        # The log line after the clients' wake-ups: it is not on anyone's path to the result.
        log.info("task %s %s %s in %.2f s: %s", task_id,
                 running.cmd_type if running else "?", status.value, duration,
                 log_text or result.get("message"))
        return doc

    def settle_pending(self, task_ids: Iterable[str], status: TaskStatus) -> None:
        """Pending tasks that a committed statement just made final (a sequence's
        remaining steps): out of the queue in memory, then reported."""
        ended = []
        with self.state.lock:
            for task_id in task_ids:
                if self.state.forget(task_id):
                    self.state.counts[TaskStatus.PENDING] -= 1
                    self.state.counts[status] += 1
                    ended.append(task_id)
        for task_id in ended:
            self.waiters.set_final(task_id)
            self.events.publish("task", self.get(task_id) or {"task_id": task_id})
