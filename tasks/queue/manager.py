"""The task queue's state changes: submit, start, finish, cancel, pause, and what the
worker takes next.

State lives in the TaskStore; in memory (tasks/queue/state.py) is only what must be
fast or is not history. What clients read is tasks/queue/views.py; why the robot is being
stopped is one StopRecord (tasks/queue/stops.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks.commands import CommandTable, default_table
from tasks.errors import NotAccepted, QueueFull, StoreWriteError, TaskFinished, TaskNotFound
from tasks.models import TaskStatus, new_task_id
from tasks.queue import modes
from tasks.queue.events import EventBus
from tasks.queue.recovery import recover
from tasks.queue.running import Run, RunSide
from tasks.queue.shaping import ShapeSide
from tasks.queue.state import NOT_HELD, Hold, QueueState
from tasks.queue.stops import StopRecord
from tasks.queue.views import TaskViews
from tasks.queue.waiters import FinalWaiters
from tasks.reasons import CANCELLED, failure, pause_text
from tasks.store import NewTask, TaskStore
from tasks.store.audit import AuditEntry, attribution
from tasks.store.outbox import event_statement
from tasks.store.rows import Statement

log = logging.getLogger("tasks")


@dataclass
class SubmitResult:
    task: dict[str, Any]
    created: bool  # False when an Idempotency-Key replay returned the original task


def body_hash(cmd_type: str, params: dict[str, Any], external_id: str | None = None,
              not_before: float | None = None) -> str:
    body: dict[str, Any] = {"cmd_type": cmd_type, "params": params}
    if external_id is not None:  # absent: the hash of a body before external_id existed
        body["external_id"] = external_id
    if not_before is not None:  # likewise
        body["not_before"] = not_before
    canonical = json.dumps(body, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class TaskManager(RunSide, ShapeSide):
    def __init__(self, store: TaskStore, events: EventBus, *, max_queue: int = 1000,
                 auto_resume: bool = False, commands: CommandTable | None = None,
                 lang: str = "en", wall: Callable[[], float] = time.time) -> None:
        self.store = store
        # The guide's times (submit, start, end) are wall-clock readings; how long a
        # task ran is measured on time.monotonic() instead (tasks/models.py Task.run_s).
        self.wall = wall
        self._run_clocks: dict[str, float] = {}  # running task -> its monotonic start
        self.commands = default_table() if commands is None else commands
        self.events = events
        self.max_queue = max_queue
        self.auto_resume = auto_resume
        self.lang = lang  # stored failure and pause reasons are in the server's language
        # Two locks, always taken in this order: `_lock` serialises operations that
        # write the store (start, cancel, pause, finish); the state's lock guards the
        # in-memory queue and is innermost. Submits take only the state's lock, after
        # their commit: the store never calls back into the manager.
        self._lock = threading.RLock()
        self.state = QueueState()
        self.views = TaskViews(self.state, store, events, lang)
        # What clients read is the views' (tasks/queue/views.py); offered here too, because
        # a caller holding the manager asks it (get: RunSide's).
        self.get_with_json = self.views.get_with_json
        self.list_page = self.views.list_page
        self.count = self.views.count
        self.queue_brief = self.views.queue_brief
        self.queue_status = self.views.queue_status
        self.stops = StopRecord()
        self.waiters = FinalWaiters(self.state.lock)
        self._runnable = threading.Condition(self._lock)
        # Called as on_finish(cmd_type, status, duration_s) when a task that ran ends
        # (metrics); never under a lock, and its errors never fail the task.
        self.on_finish: Callable[[str, str, float], None] | None = None

    def transcript(self, task_id: str) -> list[dict[str, Any]] | None:
        return self.store.transcript(task_id)

    @property
    def pause_reason(self) -> str | None:
        return self.state.hold.reason

    @property
    def pause_code(self) -> str | None:
        return self.state.hold.code

    @property
    def running_task_id(self) -> str | None:
        with self.state.lock:
            return self.state.running.task_id if self.state.running else None

    # -- start-up -------------------------------------------------------------------------
    def recover(self, now: float | None = None) -> list[str]:
        """Load state after a (re)start (tasks/queue/recovery.py); the interrupted tasks' ids."""
        interrupted = recover(self.store, self.state, self.views, self.commands, self.lang,
                              self.wall() if now is None else now)
        self.state.mode = modes.load(self.store)
        if interrupted and not self.auto_resume:
            self.pause(code="hold_interrupted", params={"task_ids": ", ".join(interrupted)})
        return interrupted

    # -- submit -----------------------------------------------------------------------
    def submit(self, cmd_type: str, params: dict[str, Any], *,
               idempotency_key: str | None = None, retry_of: str | None = None,
               quiet: bool = False, audit: AuditEntry | None = None,
               external_id: str | None = None,
               not_before: float | None = None) -> SubmitResult:
        """Commit a new task (or find an Idempotency-Key's first one) and queue it.

        ``quiet``: the caller reports the new task in a line of its own (the HTTP
        access line), so the "pending" line here is DEBUG, not a second INFO record.
        ``audit``: the request's audit row, committed with the task (who submitted it).
        ``not_before``: it does not start before this time (it keeps its place)."""
        self.check_open(idempotency_key)
        with self.state.lock:
            unfinished = self.state.queue_size()
        # A replay of an accepted submit is answered even when the queue is full
        # (it adds nothing); a new task is not, whatever headers it carries.
        if unfinished >= self.max_queue and (
                idempotency_key is None or self.store.idempotent_task(idempotency_key) is None):
            raise QueueFull(self.max_queue)
        now = self.wall()
        new = NewTask(new_task_id(now), cmd_type, params, now, retry_of=retry_of,
                      idempotency_key=idempotency_key,
                      body_hash=(body_hash(cmd_type, params, external_id, not_before)
                                 if idempotency_key else None), external_id=external_id,
                      submitted_by=None if audit is None else audit.principal, audit=audit,
                      not_before=not_before)
        # The row is committed (durably) before anything is queued or answered.
        try:
            inserted = self.store.insert(new)
        except StoreWriteError as exc:
            raise NotAccepted(str(exc), reason=exc.reason) from None
        if not inserted.created:
            task = self.get(inserted.task_id)
            assert task is not None
            return SubmitResult(task, False)
        shared = self.views.shared_reasons()  # asks the link: not under the state lock
        with self.state.lock:
            self.state.counts[TaskStatus.PENDING] += 1
            position = self.state.add_pending(inserted.task_id, inserted.seq, cmd_type,
                                              not_before=not_before)
            waiting = self.views.submitted_waiting(inserted.task_id, position, shared)
        log.log(logging.DEBUG if quiet else logging.INFO, "task %s %s pending",
                inserted.task_id, cmd_type)
        # No ETA walk over the whole queue on the submit path: the position at
        # enqueue time is what the reply needs (GET /task has the full ETA).
        doc = self.views.doc_from_new(new)
        doc["queue_position"] = position
        doc["waiting_for"] = waiting
        self.events.publish("task", doc)
        return SubmitResult(doc, True)

    def wait(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        """The task once final, or its current state after `timeout` seconds."""
        return self.waiters.wait(task_id, self.get, timeout)

    # -- operator control ---------------------------------------------------------------
    def request_cancel(self, task_id: str, reason: str = CANCELLED,
                       audit: AuditEntry | None = None) -> str:
        """Cancel a task. Returns "cancelled" (done now) or "aborting" (STOP needed).

        ``reason`` is a code (tasks/reasons.py): the cancelled result's, once the robot
        has stopped. Raises TaskNotFound or TaskFinished. For "aborting" the caller
        sends STOP. ``audit``: the request's row, committed with `cancelled_by` (and,
        pending, with the cancel itself).
        """
        extra = [] if audit is None else attribution("tasks", "cancelled_by", task_id, audit)
        with self._lock:
            with self.state.lock:
                pending = task_id in self.state.pending
            if audit is not None:
                # Running: the row records the request; the task ends cancelled once
                # the robot has confirmed the STOP (the worker's commit).
                audit.before, audit.after = ("pending", None) if pending else \
                    ("running", "cancelling")
            if pending:
                ended = self.wall()
                result = failure("cancelled_before_start", self.lang)
                # The worker moves a task out of pending under this same lock, so
                # the row is still pending here.
                self.store.finish(task_id, TaskStatus.CANCELLED, ended, result,
                                  only_if=(TaskStatus.PENDING,), extra=extra)
                with self.state.lock:
                    self.state.forget(task_id)
                    self.state.counts[TaskStatus.PENDING] -= 1
                    self.state.counts[TaskStatus.CANCELLED] += 1
                self.waiters.set_final(task_id)
                log.info("task %s cancelled while pending", task_id)
                self.events.publish("task", self.get(task_id) or {"task_id": task_id})
                return "cancelled"
            if self.running_task_id == task_id:
                if extra:  # before STOP: the cancel is on record whatever follows
                    self.store.commit(extra)
                    with self.state.lock:  # the final document is made from memory
                        running = self.state.running
                        if running is not None and running.task_id == task_id:
                            running.cancelled_by = audit.principal if audit else None
                self.stops.cancel(task_id, reason)
                return "aborting"
        if self.store.get(task_id) is None:
            raise TaskNotFound(task_id)
        raise TaskFinished(task_id)

    def stop_reason(self, run: Run) -> str | None:
        """Why the task of ``run`` is being stopped: CANCELLED, EMERGENCY_STOP or SHUTDOWN
        (tasks/queue/stops.py), or None."""
        return self.stops.reason(run.task.task_id, run.stop_mark)

    def pause(self, reason: str | None = None, *, code: str = "paused_by_operator",
              params: dict[str, Any] | None = None,
              audit: AuditEntry | None = None) -> dict[str, Any]:
        """Hold the queue. ``code`` says why (tasks/reasons.py); ``reason`` is the text
        people read: an operator's own words, else made from the catalogue entry of
        ``code`` with ``params``, in the server's language. ``audit``: who asked, their
        row committed with the hold."""
        rendered = reason is None
        if reason is None:
            params = dict(params or {})
            reason = pause_text(code, self.lang, params)
        by = None if audit is None else audit.principal
        with self._lock:
            if audit is not None:
                audit.target, audit.after = audit.target or "queue", "paused"
                audit.before = "paused" if self.state.hold.paused else "running"
            extra: list[Statement] = [] if audit is None else [audit.statement()]
            if not self.state.hold.paused:  # the event is the change, not a new reason
                extra.append(event_statement("queue.paused", {
                    "paused": True, "reason": reason, "code": code, "by": by}, self.wall))
            try:
                self.store.set_meta({
                    "paused": "1", "pause_reason": reason, "pause_code": code, "paused_by": by,
                    # Kept only for a reason made from the catalogue: made again on restart.
                    "pause_params": json.dumps(params, ensure_ascii=False) if rendered else None},
                    extra=extra)
            except StoreWriteError:
                # Holding the robot matters more than remembering that we did.
                log.error("queue pause could not be saved; paused until restart only")
            self.state.hold = Hold(True, reason, code, by)
            self._runnable.notify_all()  # a sequence waiting at a boundary or CONFIRM
            # Logs stay English whatever the server speaks.
            log.warning("queue paused (%s): %s", code,
                        pause_text(code, "en", params) if rendered else reason)
            state = self.queue_state()
        self.events.publish("queue", state)
        return state

    def resume(self, audit: AuditEntry | None = None) -> dict[str, Any]:
        with self._lock:
            if audit is not None:
                audit.target, audit.after = "queue", "running"
                audit.before = "paused" if self.state.hold.paused else "running"
            extra: list[Statement] = [] if audit is None else [audit.statement()]
            if self.state.hold.paused:
                extra.append(event_statement("queue.resumed", {
                    "paused": False, "by": None if audit is None else audit.principal},
                    self.wall))
            self.store.set_meta({"paused": "0", "pause_reason": None, "pause_code": None,
                                 "pause_params": None, "paused_by": None}, extra=extra)
            self.state.hold = NOT_HELD
            self._runnable.notify_all()
            log.info("queue resumed")
            state = self.queue_state()
        self.events.publish("queue", state)
        return state

    def queue_state(self) -> dict[str, Any]:
        hold = self.state.hold
        return {"paused": hold.paused, "pause_reason": hold.reason, "pause_code": hold.code,
                "paused_by": hold.by, **self.mode_fields()}
