"""What clients read about tasks: task documents with their ETA, pages of them, and
the queue status, with the caches that keep the polls cheap.

Nothing here changes a task. A finished task never changes, so its document (and its
reply bytes) are kept in memory, bounded; the queue status is rebuilt only when an
event says something changed.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, overload

from i18n import t
from tasks.models import FINAL_STATUSES, Task, TaskStatus, format_time
from tasks.queue.events import EventBus
from tasks.queue.modes import describe
from tasks.queue.state import MAINTENANCE, QueueState
from tasks.store import NewTask, TaskStore

# Why a pending task waits (docs/queue.md): code -> its text's catalogue key, most
# fundamental first.
WAITING_KEYS = {"maintenance": "waiting.maintenance", "paused": "waiting.paused",
                "robot_disconnected": "waiting.robot_disconnected",
                "sequence_held": "waiting.sequence_held", "not_before": "waiting.not_before",
                "queue_position": "waiting.queue_position"}
FINAL_CACHE_SIZE = 2000  # finished task documents kept in memory for GET /task
DURATIONS_KEPT = 20  # completed runs per command that its ETA averages


class QueueBrief(NamedTuple):
    """What a 202 says about the queue, without the whole status document."""

    queue_size: int  # pending + running
    paused: bool
    pause_reason: str | None
    pause_code: str | None


def encode(doc: dict[str, Any]) -> bytes:
    """A document's reply body, byte for byte what the HTTP layer makes of the dict."""
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


class TaskViews:
    def __init__(self, state: QueueState, store: TaskStore, events: EventBus,
                 lang: str = "en") -> None:
        self.state = state
        self.store = store
        self.events = events
        self.lang = lang  # of waiting_for's messages (a request's are made again in its own)
        # Is the robot link up? Wired by the server (the link is not the task layer's);
        # None: not known, not a reason to wait.
        self.link_ready: Callable[[], bool] | None = None
        # Finished task -> [document, its reply bytes once a GET asked for them].
        self._final_docs: collections.OrderedDict[str, list[Any]] = collections.OrderedDict()
        # ((event version, recent), document, its reply bytes once asked for)
        self._status_cache: tuple[tuple[int, int], dict[str, Any], bytes | None] | None = None
        self._durations: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=DURATIONS_KEPT))

    # -- durations (for ETAs) ----------------------------------------------------------
    def load_durations(self) -> None:
        for cmd_type, values in self.store.recent_durations().items():
            # The stored measures (wall-clock differences for older rows: one the clock
            # was stepped back in is no duration).
            self._durations[cmd_type].extend(v for v in values if v is not None and v >= 0)

    def record_duration(self, cmd_type: str, seconds: float) -> None:
        """A completed run (state lock held by the caller)."""
        self._durations[cmd_type].append(seconds)

    # -- one task ----------------------------------------------------------------------
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
        entry = self._final_docs.get(task_id)
        if entry is not None:
            return entry[0], entry
        with self.state.lock:
            running = self.state.running
            task = None
            if running is not None and running.task_id == task_id:
                # Its own copy of the items, which progress appends to in place.
                progress = running.progress
                if progress and isinstance(progress.get("items"), list):
                    progress = {**progress, "items": list(progress["items"])}
                task = dataclasses.replace(running, progress=progress)
        if task is None:
            task = self.store.get(task_id)
        if task is None:
            return None, None
        doc = self.doc(task)
        if task.is_final:
            return doc, self.cache_final(task_id, doc)
        return doc, None

    def cache_final(self, task_id: str, doc: dict[str, Any]) -> list[Any]:
        entry = [doc, None]
        with self.state.lock:
            self._final_docs[task_id] = entry
            if len(self._final_docs) > FINAL_CACHE_SIZE:
                self._final_docs.popitem(last=False)
        return entry

    def list_page(self, **filters: Any) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first, and the cursor (seq) of the last row for the next page; a
        pending task's document with its ``queue_position`` and ``waiting_for``."""
        tasks = self.store.list(**filters)
        docs = [self.doc(task, eta=False) for task in tasks]
        if any(task.status == TaskStatus.PENDING for task in tasks):
            shared, now = self.shared_reasons(), time.time()
            with self.state.lock:
                aheads = self._aheads(now)
                for doc in docs:
                    if doc["task_id"] in aheads:
                        position, ahead = aheads[doc["task_id"]]
                        doc["queue_position"] = position
                        doc["waiting_for"] = self._waiting(doc["task_id"], ahead, shared, now)
        return docs, (tasks[-1].seq if tasks else None)

    def count(self, *, status: str | None = None, cmd_type: str | None = None,
              sequence_id: str | None = None, external_id: str | None = None) -> int:
        if sequence_id is not None or external_id is not None:
            return self.store.count(status=status, cmd_type=cmd_type, sequence_id=sequence_id,
                                    external_id=external_id)
        if cmd_type is None:
            with self.state.lock:
                if status is not None:
                    return self.state.counts.get(status, 0)
                return sum(self.state.counts.values())
        return self.store.count(status=status, cmd_type=cmd_type)

    def doc_from_new(self, new: NewTask) -> dict[str, Any]:
        return self.doc(Task(new.task_id, new.cmd_type, new.params, TaskStatus.PENDING,
                             new.submitted, retry_of=new.retry_of,
                             submitted_by=new.submitted_by, external_id=new.external_id,
                             not_before=new.not_before), eta=False)

    def doc(self, task: Task, *, eta: bool = True) -> dict[str, Any]:
        """The task as clients see it: the guide's keys first, then its ETA."""
        doc = task.to_dict()
        if eta and not task.is_final:
            doc.update(self._eta(task))
        return doc

    # -- ETA ---------------------------------------------------------------------------
    def mean(self, cmd_type: str) -> float | None:
        """The mean of ``cmd_type``'s recent completed runs, None without history."""
        return self._mean(cmd_type)

    def _mean(self, cmd_type: str) -> float | None:
        values = self._durations.get(cmd_type)
        return sum(values) / len(values) if values else None

    def _running_remaining(self, now: float) -> float | None:
        running = self.state.running
        if running is None:
            return 0.0
        mean = self._mean(running.cmd_type)
        if mean is None or running.started is None:
            return None
        return max(0.0, running.started + mean - now)

    def _eta(self, task: Task) -> dict[str, Any]:
        now = time.time()
        out: dict[str, Any] = {}
        shared = self.shared_reasons() if task.status == TaskStatus.PENDING else []
        with self.state.lock:
            if task.status == TaskStatus.RUNNING:
                mean = self._mean(task.cmd_type)
                if mean is not None and task.started is not None:
                    out["estimated_end_time"] = format_time(max(now, task.started + mean))
                return out
            if task.task_id not in self.state.pending:
                return out
            position, waiting = 0, 0
            ahead: float | None = self._running_remaining(now)
            for task_id, (_key, cmd_type) in self.state.pending.items():
                position += 1
                if task_id == task.task_id:
                    break
                if self._not_yet(task_id, now) is not None:
                    continue  # skipped over: it does not start before this one
                waiting += 1
                mean = self._mean(cmd_type)
                ahead = None if ahead is None or mean is None else ahead + mean
            if self.state.running is not None:
                waiting += 1
            own = self._not_yet(task.task_id, now)
            out["waiting_for"] = self._waiting(task.task_id, waiting, shared, now)
        out["queue_position"] = position
        if ahead is not None:
            out["estimated_start_time"] = format_time(max(now + ahead, own or 0.0))
        elif own is not None:
            out["estimated_start_time"] = format_time(own)
        return out

    # -- why a task waits (docs/queue.md) -----------------------------------------------
    def _not_yet(self, task_id: str, now: float) -> float | None:
        """The not_before of the task's entry (its own, or its sequence's) while still
        ahead (state lock held)."""
        at = self.state.not_before.get(self.state.sequence_of.get(task_id, task_id))
        return at if at is not None and at > now else None

    def shared_reasons(self) -> list[tuple[str, dict[str, Any]]]:
        """The reasons every pending task shares; the link is asked before the state lock
        (which is innermost)."""
        reasons: list[tuple[str, dict[str, Any]]] = []
        mode, hold = self.state.mode, self.state.hold
        if mode.mode == MAINTENANCE:
            reasons.append(("maintenance", {"reason": mode.reason or ""}))
        if hold.paused and hold.code != "sequence_held":  # that one is sequence_held below
            reasons.append(("paused", {"reason": hold.reason or "", "code": hold.code or ""}))
        if self.link_ready is not None and not self.link_ready():
            reasons.append(("robot_disconnected", {}))
        active = self.state.active_sequence
        if active is not None and active.get("status") == "held":
            reasons.append(("sequence_held", {"sequence_id": active.get("sequence_id")}))
        return reasons

    def _aheads(self, now: float) -> dict[str, tuple[int, int]]:
        """Each pending task: its queue position, and how many tasks run before it
        (state lock held)."""
        out: dict[str, tuple[int, int]] = {}
        waiting = 1 if self.state.running is not None else 0
        for position, task_id in enumerate(self.state.pending, start=1):
            out[task_id] = (position, waiting)
            if self._not_yet(task_id, now) is None:
                waiting += 1
        return out

    def _waiting(self, task_id: str, ahead: int, shared: list[tuple[str, dict[str, Any]]],
                 now: float) -> list[dict[str, Any]]:
        """``waiting_for`` of a pending task, most fundamental first (state lock held)."""
        reasons = list(shared)
        at = self._not_yet(task_id, now)
        if at is not None:
            reasons.append(("not_before", {"time": format_time(at),
                                           "seconds": math.ceil(at - now)}))
        if ahead:
            reasons.append(("queue_position", {"ahead": ahead}))
        return [{"code": code, "message": t(WAITING_KEYS[code], self.lang, **params),
                 "params": params} for code, params in reasons]

    def submitted_waiting(self, task_id: str, position: int,
                          shared: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """``waiting_for`` of a task just queued, without a walk of the queue (the submit
        path; state lock held, the task added under it): every task ahead counted.
        ``shared``: _shared_reasons(), asked before the lock."""
        ahead = position - 1 + (1 if self.state.running is not None else 0)
        return self._waiting(task_id, ahead, shared, time.time())

    # -- the queue ---------------------------------------------------------------------
    def queue_brief(self) -> QueueBrief:
        """queue_status()'s queue_size and pause fields, read now: the submit path's
        event bumps the version, so the whole document would be rebuilt every time."""
        with self.state.lock:
            hold = self.state.hold
            return QueueBrief(self.state.queue_size(), hold.paused, hold.reason, hold.code)

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
        body = cached[2]
        if body is None:
            # Racing readers may overwrite each other's entry: at worst a rebuild later,
            # never a wrong answer (the key is checked).
            body = encode(cached[1])
            self._status_cache = (cached[0], cached[1], body)
        return body

    def _queue_status(self, recent: int, version: int) -> dict[str, Any]:
        with self.state.lock:
            counts = dict(self.state.counts)
            running = self.state.running.task_id if self.state.running else None
            pending = list(itertools.islice(self.state.pending, recent))
            hold = self.state.hold
            active_sequence = self.state.active_sequence
            mode = self.state.mode
        finished = sum(counts.get(s.value, 0) for s in FINAL_STATUSES)
        queue_size = counts.get(TaskStatus.PENDING, 0) + counts.get(TaskStatus.RUNNING, 0)
        return {
            "queue_size": queue_size,
            "total_tasks": finished + queue_size,
            "completed_tasks": counts.get(TaskStatus.COMPLETED, 0),
            "failed_tasks": counts.get(TaskStatus.FAILED, 0),
            "cancelled_tasks": counts.get(TaskStatus.CANCELLED, 0),
            "pending_tasks": counts.get(TaskStatus.PENDING, 0),
            "running_task": running,
            "paused": hold.paused,
            "pause_reason": hold.reason,
            "pause_code": hold.code,
            "paused_by": hold.by,
            "pending": pending,
            "active_sequence": active_sequence,
            "queue_mode": mode.mode,
            "maintenance": describe(mode),
            # Six columns, no JSON decoding of params/result: this runs on every poll.
            "recent_tasks": [
                {"task_id": task_id, "status": status, "cmd_type": cmd_type,
                 "submit_time": format_time(submitted), "start_time": format_time(started),
                 "end_time": format_time(ended)}
                for task_id, status, cmd_type, submitted, started, ended
                in self.store.recent(recent)],
            "version": version,
        }
