"""The task queue: submit, look up, cancel, pause, and what the worker takes next.

State lives in the TaskStore; this object keeps only what must be fast or is
not history: the FIFO of pending ids (a queue.Queue), the counters per status,
the paused flag, per-task completion events and recent durations for ETAs.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, overload

from i18n import CodedError
from tasks.commands import CommandTable, default_table
from tasks.events import EventBus
from tasks.models import FINAL_STATUSES, TaskStatus, format_time, new_task_id
from tasks.reasons import CANCELLED, failure, pause_text, stored_pause
from tasks.store import NewTask, StoreWriteError, TaskStore
from tasks.store_rows import UNREADABLE

log = logging.getLogger("tasks")


FINAL_CACHE_SIZE = 2000  # finished task documents kept in memory for GET /task


class TaskError(CodedError):
    """A request about a task that cannot be honoured; carries an HTTP status."""

    def __init__(self, code: str, status: int, headers: dict[str, str] | None = None,
                 **params: object) -> None:
        super().__init__(code, params)  # the reply is in the client's language
        self.status = status
        self.headers = headers or {}


@dataclass
class SubmitResult:
    task: dict[str, Any]
    created: bool  # False when an Idempotency-Key replay returned the original task


class QueueBrief(NamedTuple):
    """What a 202 says about the queue, without the whole status document."""

    queue_size: int  # pending + running
    paused: bool
    pause_reason: str | None
    pause_code: str | None


def encode(doc: dict[str, Any]) -> bytes:
    """A document's reply body, byte for byte what the HTTP layer makes of the dict."""
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def body_hash(cmd_type: str, params: dict[str, Any]) -> str:
    canonical = json.dumps({"cmd_type": cmd_type, "params": params}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class TaskManager:
    def __init__(self, store: TaskStore, events: EventBus, *, max_queue: int = 1000,
                 auto_resume: bool = False, commands: CommandTable | None = None,
                 lang: str = "en") -> None:
        self.store = store
        self.commands = default_table() if commands is None else commands
        self.events = events
        self.max_queue = max_queue
        self.auto_resume = auto_resume
        self.lang = lang  # stored failure and pause reasons are in the server's language
        # Two locks, always taken in this order: `_lock` serialises operations
        # that write the store (start, cancel, pause, finish); `_state` guards the
        # in-memory order, counters and running task and is innermost: nothing
        # else is acquired while holding it. The store's commit callback (under
        # the store's write lock) takes only `_state`, which keeps FIFO = seq order
        # without a lock-order cycle.
        self._lock = threading.RLock()
        self._state = threading.Lock()
        self._queue: queue.Queue[str] = queue.Queue()  # task ids, FIFO
        self._pending: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._counts: collections.Counter[str] = collections.Counter()
        # Finished task -> [document, its reply bytes once a GET asked for them].
        self._final_docs: collections.OrderedDict[str, list[Any]] = collections.OrderedDict()
        # ((event version, recent), document, its reply bytes once asked for)
        self._status_cache: tuple[tuple[int, int], dict[str, Any], bytes | None] | None = None
        self._running: dict[str, Any] | None = None
        self._cancel_requested: dict[str, str] = {}  # running task id -> reason
        self._final_events: dict[str, threading.Event] = {}
        self._durations: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=20))
        self._runnable = threading.Condition(self._lock)
        self.paused = False
        self.pause_reason: str | None = None
        self.pause_code: str | None = None  # stable, for clients; the reason is for people
        # Called as on_finish(cmd_type, status, duration_s) when a task that ran ends
        # (metrics); never under a lock, and its errors never fail the task.
        self.on_finish: Callable[[str, str, float], None] | None = None

    # -- start-up -------------------------------------------------------------------------
    def recover(self, now: float | None = None) -> list[str]:
        """Load state after a (re)start; return the ids of interrupted tasks.

        A task that was `running` when the server died is failed, never re-run:
        a physical action is not idempotent. The queue then holds, because the
        robot's state is unknown.
        """
        now = time.time() if now is None else now
        interrupted: list[str] = []
        for task in self.store.unfinished():
            if task["status"] == TaskStatus.RUNNING:
                items = (task["progress"] or {}).get("items") or []
                result = {**failure("interrupted", self.lang),
                          **self.commands.partial_result(task["cmd_type"], items)}
                self.store.finish(task["task_id"], TaskStatus.FAILED.value, now, result)
                interrupted.append(task["task_id"])
                log.warning("task %s (%s) was running when the server stopped: marked failed, "
                            "not re-run", task["task_id"], task["cmd_type"])
            elif set(task["params"]) == {UNREADABLE}:
                # Never guess what a waiting task was to do: it is failed, not run.
                self.store.finish(task["task_id"], TaskStatus.FAILED.value, now,
                                  failure("params_unreadable", self.lang),
                                  only_if=("pending",))
                log.error("task %s (%s): its stored parameters cannot be read; failed, not run",
                          task["task_id"], task["cmd_type"])
            else:
                self._pending[task["task_id"]] = task["cmd_type"]
                self._queue.put(task["task_id"])
        self._counts.update(self.store.status_counts())
        for cmd_type, values in self.store.recent_durations().items():
            self._durations[cmd_type].extend(values)
        self.paused = self.store.get_meta("paused") == "1"
        if self.paused:
            self.pause_reason, self.pause_code = stored_pause(self.store, self.lang)
        if interrupted and not self.auto_resume:
            self.pause(code="hold_interrupted", params={"task_ids": ", ".join(interrupted)})
        return interrupted

    # -- submit and look up -----------------------------------------------------------
    def submit(self, cmd_type: str, params: dict[str, Any], *,
               idempotency_key: str | None = None, retry_of: str | None = None,
               quiet: bool = False) -> SubmitResult:
        """Commit a new task (or find an Idempotency-Key's first one) and queue it.

        ``quiet``: the caller reports the new task in a line of its own (the HTTP
        access line), so the "pending" line here is DEBUG, not a second INFO record."""
        with self._state:
            unfinished = self._counts[TaskStatus.PENDING] + self._counts[TaskStatus.RUNNING]
        # A replay of an accepted submit is answered even when the queue is full
        # (it adds nothing); a new task is not, whatever headers it carries.
        if unfinished >= self.max_queue and (
                idempotency_key is None or self.store.idempotent_task(idempotency_key) is None):
            raise TaskError("queue_full", 503, {"Retry-After": "5"}, limit=self.max_queue)
        now = time.time()
        new = NewTask(new_task_id(now), cmd_type, params, now, retry_of=retry_of,
                      idempotency_key=idempotency_key,
                      body_hash=body_hash(cmd_type, params) if idempotency_key else None)
        # The row is committed (durably) before anything is queued or answered.
        position: list[int] = []
        task_id, created = self.store.insert(
            new, lambda tid: position.append(self._enqueue(tid, cmd_type)))
        if created:
            log.log(logging.DEBUG if quiet else logging.INFO, "task %s %s pending",
                    task_id, cmd_type)
            # No ETA walk over the whole queue on the submit path: the position at
            # enqueue time is what the reply needs (GET /task has the full ETA).
            doc = self._doc_from_new(new)
            doc["queue_position"] = position[0]
            self.events.publish("task", doc)
            return SubmitResult(doc, True)
        task = self.get(task_id)
        assert task is not None
        return SubmitResult(task, False)

    def _enqueue(self, task_id: str, cmd_type: str) -> int:
        """Queue a committed task; its 1-based position. Runs in commit order under
        the store's write lock (see __init__)."""
        with self._state:
            self._counts[TaskStatus.PENDING] += 1
            self._pending[task_id] = cmd_type
            self._queue.put(task_id)
            return len(self._pending)

    def get(self, task_id: str) -> dict[str, Any] | None:
        return self._lookup(task_id)[0]

    def get_with_json(self, task_id: str) -> tuple[dict[str, Any] | None, bytes | None]:
        """The task's document and, for a finished task, its reply bytes (encoded at
        the first ask, then kept with the document); (None, None) for an unknown task."""
        doc, entry = self._lookup(task_id)
        if entry is None:
            return doc, None
        if entry[1] is None:
            # Two first readers may both encode: the same bytes, so no lock for it.
            entry[1] = encode(entry[0])
        return doc, entry[1]

    def _lookup(self, task_id: str) -> tuple[dict[str, Any] | None, list[Any] | None]:
        """The task's document, and its cache entry if the task is finished."""
        # A finished task never changes: serve it from memory (bounded, oldest out).
        entry = self._final_docs.get(task_id)
        if entry is not None:
            return entry[0], entry
        row = self.store.get(task_id)
        if row is None:
            return None, None
        doc = self._doc(row)
        if row["status"] in FINAL_STATUSES:
            return doc, self._cache_final(task_id, doc)
        return doc, None

    def _cache_final(self, task_id: str, doc: dict[str, Any]) -> list[Any]:
        entry = [doc, None]
        with self._state:
            self._final_docs[task_id] = entry
            if len(self._final_docs) > FINAL_CACHE_SIZE:
                self._final_docs.popitem(last=False)
        return entry

    def transcript(self, task_id: str) -> list[dict[str, Any]] | None:
        return self.store.transcript(task_id)

    def list_page(self, **filters: Any) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first, and the cursor (seq) of the last row for the next page."""
        rows = self.store.list(**filters)
        return [self._doc(row, eta=False) for row in rows], (rows[-1]["seq"] if rows else None)

    def count(self, *, status: str | None = None, cmd_type: str | None = None) -> int:
        if cmd_type is None:
            with self._state:
                if status is not None:
                    return self._counts.get(status, 0)
                return sum(self._counts.values())
        return self.store.count(status=status, cmd_type=cmd_type)

    def wait(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        """The task once final, or its current state after `timeout` seconds."""
        # `_state`, not `_lock`: a long-poll must not queue behind a store write.
        with self._state:
            event = self._final_events.get(task_id)
            if event is None:
                event = self._final_events[task_id] = threading.Event()
        doc = self.get(task_id)
        if doc is None or doc["status"] in FINAL_STATUSES:
            # Set, not just drop: another waiter may hold this event and the
            # finishing thread may already have looked for it.
            self._set_final(task_id)
            return doc
        event.wait(timeout)
        return self.get(task_id)

    def _doc_from_new(self, new: NewTask) -> dict[str, Any]:
        return self._doc(eta=False, row={"task_id": new.task_id, "cmd_type": new.cmd_type,
                          "params": new.params, "status": TaskStatus.PENDING.value,
                          "submitted": new.submitted, "started": None, "ended": None,
                          "result": None, "progress": None, "retry_of": new.retry_of})

    def _doc(self, row: dict[str, Any], *, eta: bool = True) -> dict[str, Any]:
        """The task as clients see it: the guide's keys first."""
        doc: dict[str, Any] = {
            "task_id": row["task_id"], "status": row["status"], "cmd_type": row["cmd_type"],
            "submit_time": format_time(row["submitted"]),
            "start_time": format_time(row["started"]),
            "end_time": format_time(row["ended"]),
            "result": row["result"], "params": row["params"],
        }
        if row["started"] is not None and row["ended"] is not None:
            doc["duration_s"] = round(row["ended"] - row["started"], 3)
        if row["progress"] is not None:
            doc["progress"] = row["progress"]
        if row["retry_of"]:
            doc["retry_of"] = row["retry_of"]
        if eta and row["status"] in (TaskStatus.PENDING, TaskStatus.RUNNING):
            doc.update(self._eta(row))
        return doc

    # -- ETA ----------------------------------------------------------------------------------
    def _mean(self, cmd_type: str) -> float | None:
        values = self._durations.get(cmd_type)
        return sum(values) / len(values) if values else None

    def _running_remaining(self, now: float) -> float | None:
        running = self._running
        if running is None:
            return 0.0
        mean = self._mean(running["cmd_type"])
        if mean is None:
            return None
        return max(0.0, running["started"] + mean - now)

    def _eta(self, row: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        out: dict[str, Any] = {}
        with self._state:
            if row["status"] == TaskStatus.RUNNING:
                mean = self._mean(row["cmd_type"])
                if mean is not None and row["started"] is not None:
                    out["estimated_end_time"] = format_time(max(now, row["started"] + mean))
                return out
            if row["task_id"] not in self._pending:
                return out
            position = 0
            ahead: float | None = self._running_remaining(now)
            for task_id, cmd_type in self._pending.items():
                position += 1
                if task_id == row["task_id"]:
                    break
                mean = self._mean(cmd_type)
                ahead = None if ahead is None or mean is None else ahead + mean
        out["queue_position"] = position
        if ahead is not None:
            out["estimated_start_time"] = format_time(now + ahead)
        return out

    # -- operator control ---------------------------------------------------------------
    def request_cancel(self, task_id: str, reason: str = CANCELLED) -> str:
        """Cancel a task. Returns "cancelled" (done now) or "aborting" (STOP needed).

        ``reason`` is a code (tasks/reasons.py): the cancelled result's, once the robot
        has stopped. Raises TaskError 404/409. For "aborting" the caller sends STOP.
        """
        with self._lock:
            with self._state:
                pending = task_id in self._pending
            if pending:
                ended = time.time()
                result = failure("cancelled_before_start", self.lang)
                # The worker moves a task out of _pending under this same lock, so
                # the row is still pending here.
                self.store.finish(task_id, TaskStatus.CANCELLED.value, ended, result,
                                  only_if=("pending",))
                with self._state:
                    del self._pending[task_id]
                    self._counts[TaskStatus.PENDING] -= 1
                    self._counts[TaskStatus.CANCELLED] += 1
                self._set_final(task_id)
                log.info("task %s cancelled while pending", task_id)
                self.events.publish("task", self.get(task_id) or {"task_id": task_id})
                return "cancelled"
            if self.running_task_id == task_id:
                with self._state:
                    self._cancel_requested.setdefault(task_id, reason)
                return "aborting"
        if self.store.get(task_id) is None:
            raise TaskError("task_not_found", 404, task_id=task_id)
        raise TaskError("task_finished", 409, task_id=task_id)

    def cancel_reason(self, task_id: str) -> str | None:
        with self._state:
            return self._cancel_requested.get(task_id)

    def pause(self, reason: str | None = None, *, code: str = "paused_by_operator",
              params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Hold the queue. ``code`` says why (tasks/reasons.py); ``reason`` is the text
        people read: an operator's own words, else made from the catalogue entry of
        ``code`` with ``params``, in the server's language."""
        rendered = reason is None
        if rendered:
            params = dict(params or {})
            reason = pause_text(code, self.lang, params)
        with self._lock:
            try:
                self.store.set_meta({
                    "paused": "1", "pause_reason": reason, "pause_code": code,
                    # Kept only for a reason made from the catalogue: made again on restart.
                    "pause_params": json.dumps(params, ensure_ascii=False) if rendered else None})
            except StoreWriteError:
                # Holding the robot matters more than remembering that we did.
                log.error("queue pause could not be saved; paused until restart only")
            self.paused, self.pause_reason, self.pause_code = True, reason, code
            # Logs stay English whatever the server speaks.
            log.warning("queue paused (%s): %s", code,
                        pause_text(code, "en", params) if rendered else reason)
            state = self.queue_state()
        self.events.publish("queue", state)
        return state

    def resume(self) -> dict[str, Any]:
        with self._lock:
            self.store.set_meta({"paused": "0", "pause_reason": None, "pause_code": None,
                                 "pause_params": None})
            self.paused, self.pause_reason, self.pause_code = False, None, None
            self._runnable.notify_all()
            log.info("queue resumed")
            state = self.queue_state()
        self.events.publish("queue", state)
        return state

    def queue_state(self) -> dict[str, Any]:
        return {"paused": self.paused, "pause_reason": self.pause_reason,
                "pause_code": self.pause_code}

    def queue_brief(self) -> QueueBrief:
        """queue_status()'s queue_size and pause fields, read now: the submit path's
        event bumps the version, so the whole document would be rebuilt every time."""
        with self._state:
            return QueueBrief(self._counts.get("pending", 0) + self._counts.get("running", 0),
                              self.paused, self.pause_reason, self.pause_code)

    @overload
    def queue_status(self, recent: int = ..., *,
                     encoded: Literal[False] = ...) -> dict[str, Any]: ...

    @overload
    def queue_status(self, recent: int = ..., *, encoded: Literal[True]) -> bytes: ...

    def queue_status(self, recent: int = 10, *, encoded: bool = False) -> dict[str, Any] | bytes:
        """The guide's queue counters and more; cached until the next event. With
        ``encoded``, the reply bytes of that document (cached alike).

        Every change of what this shows publishes an event, so the event version
        keys the cache: polls between changes (the guide's clients poll every 2 s,
        a lab has many) cost a dict copy (or nothing, for the bytes), not a query.
        """
        version = self.events.version  # read first: a later change bumps it past us
        cached = self._status_cache
        if cached is None or cached[0] != (version, recent):
            cached = ((version, recent), self._queue_status(recent, version), None)
            self._status_cache = cached
        if not encoded:
            return dict(cached[1])  # a copy: callers may add to it
        if cached[2] is None:
            # Racing readers may overwrite each other's entry: at worst a rebuild later,
            # never a wrong answer (the key is checked).
            cached = (cached[0], cached[1], encode(cached[1]))
            self._status_cache = cached
        return cached[2]

    def _queue_status(self, recent: int, version: int) -> dict[str, Any]:
        with self._state:
            counts = dict(self._counts)
            running = self._running["task_id"] if self._running else None
            pending = list(itertools.islice(self._pending, recent))
            paused, reason, code = self.paused, self.pause_reason, self.pause_code
        finished = sum(counts.get(s.value, 0) for s in FINAL_STATUSES)
        queue_size = counts.get("pending", 0) + counts.get("running", 0)
        return {
            "queue_size": queue_size,
            "total_tasks": finished + queue_size,
            "completed_tasks": counts.get("completed", 0),
            "failed_tasks": counts.get("failed", 0),
            "cancelled_tasks": counts.get("cancelled", 0),
            "pending_tasks": counts.get("pending", 0),
            "running_task": running,
            "paused": paused,
            "pause_reason": reason,
            "pause_code": code,
            "pending": pending,
            # Six columns, no JSON decoding of params/result: this runs on every poll.
            "recent_tasks": [
                {"task_id": task_id, "status": status, "cmd_type": cmd_type,
                 "submit_time": format_time(submitted), "start_time": format_time(started),
                 "end_time": format_time(ended)}
                for task_id, status, cmd_type, submitted, started, ended
                in self.store.recent(recent)],
            "version": version,
        }

    # -- worker side ---------------------------------------------------------------------
    def wait_runnable(self, stop: threading.Event, timeout: float) -> bool:
        """Block while the queue is paused; True when tasks may start."""
        with self._lock:
            if self.paused and not stop.is_set():
                self._runnable.wait(timeout)
            return not self.paused and not stop.is_set()

    def wake(self) -> None:
        """Wake a worker blocked in wait_runnable (used at shutdown)."""
        with self._lock:
            self._runnable.notify_all()
        self._queue.put("")  # a no-op id unblocks a worker waiting for a task

    def take(self, timeout: float) -> str | None:
        """The next queued task id, or None after timeout."""
        try:
            return self._queue.get(timeout=timeout) or None
        except queue.Empty:
            return None

    def put_back_first(self, task_id: str) -> None:
        """Return a task taken while the queue got paused: it stays first in line."""
        with self._state:  # no submit can slip in between
            rest = []
            while True:
                try:
                    rest.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for tid in [task_id, *rest]:
                self._queue.put(tid)

    def start(self, task_id: str) -> dict[str, Any] | None:
        """Commit `running` (before any byte goes to the robot); None if not runnable."""
        with self._lock:
            with self._state:
                pending = task_id in self._pending
            if not pending:
                return None  # cancelled while it waited
            if self.paused:
                # Paused between the worker's check and its take: keep its place.
                self.put_back_first(task_id)
                return None
            row = self.store.mark_running(task_id, time.time())
            if row is None:  # not pending on disk: nothing to run
                with self._state:
                    self._pending.pop(task_id, None)
                return None
            with self._state:
                del self._pending[task_id]
                self._counts[TaskStatus.PENDING] -= 1
                self._counts[TaskStatus.RUNNING] += 1
                self._running = row
        log.info("task %s %s running", task_id, row["cmd_type"])
        doc = self._doc(row)
        self.events.publish("task", doc)
        return row

    def requeue_unsent(self, task_id: str) -> bool:
        """Put a running task whose command never reached the robot back at the head
        of the queue (nothing happened on the robot, so nothing is repeated)."""
        with self._lock:
            if not self.store.unstart(task_id):
                return False
            with self._state:
                running = self._running
                self._running = None
                self._cancel_requested.pop(task_id, None)
                self._counts[TaskStatus.RUNNING] -= 1
                self._counts[TaskStatus.PENDING] += 1
                self._pending[task_id] = running["cmd_type"] if running else ""
                self._pending.move_to_end(task_id, last=False)
            self.put_back_first(task_id)
        log.warning("task %s was not sent (robot link down): back at the head of the queue",
                    task_id)
        doc = self.get(task_id)
        if doc is not None:
            self.events.publish("task", doc)
        return True

    def progress(self, task_id: str, progress: dict[str, Any],
                 new_items: list[Any] | None = None, first: int = 0) -> None:
        """The running task's progress now (without items) and its items from index
        ``first`` on: stored by appending, shown with all items so far."""
        new_items = list(new_items or [])
        self.store.set_progress(task_id, progress, new_items, first)
        with self._state:
            if self._running is not None and self._running["task_id"] == task_id:
                before = (self._running.get("progress") or {}).get("items") or []
                # A new list, not an append: a document already built keeps its own.
                progress = {**progress, "items": [*before[:first], *new_items]}
                self._running["progress"] = progress
            else:
                progress = {**progress, "items": new_items}
        self.events.publish("progress", {"task_id": task_id, "progress": progress})

    def finish(self, task_id: str, status: TaskStatus, result: dict[str, Any],
               transcript: list[dict[str, Any]] | None = None, *,
               log_text: str | None = None) -> dict[str, Any] | None:
        """Commit the final state, then report it (events, waiters, metrics).

        ``log_text``: the outcome in English for the log (the stored message is in the
        server's language). Raises StoreWriteError with nothing changed if the state
        cannot be saved."""
        ended = time.time()
        self.store.finish(task_id, status.value, ended, result, transcript,
                          only_if=("running",))
        with self._state:
            running = self._running
            self._running = None
            self._cancel_requested.pop(task_id, None)
            self._counts[TaskStatus.RUNNING] -= 1
            self._counts[status] += 1
            if status == TaskStatus.COMPLETED and running and running.get("started"):
                self._durations[running["cmd_type"]].append(ended - running["started"])
        if running is not None and running["task_id"] == task_id:
            # Built from memory, not read back: the row was just committed as this.
            doc = self._doc({**running, "status": status.value, "ended": ended,
                             "result": result})
            self._cache_final(task_id, doc)
        else:
            doc = self.get(task_id)
        duration = (ended - running["started"]) if running and running.get("started") else 0.0
        log.info("task %s %s %s in %.2f s: %s", task_id,
                 running["cmd_type"] if running else "?", status.value, duration,
                 log_text or result.get("message"))
        # Before waiters wake: whoever sees the task final also sees it in the metrics.
        if self.on_finish is not None and running is not None:
            try:
                self.on_finish(running["cmd_type"], status.value, duration)
            except Exception:
                log.exception("on_finish hook failed for task %s", task_id)
        self._set_final(task_id)
        if doc is not None:
            self.events.publish("task", doc)
        return doc

    def _set_final(self, task_id: str) -> None:
        with self._state:
            event = self._final_events.pop(task_id, None)
        if event is not None:
            event.set()

    @property
    def running_task_id(self) -> str | None:
        with self._state:
            return self._running["task_id"] if self._running else None
