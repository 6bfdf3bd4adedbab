"""The queue as it is held in memory: the line the worker takes from, the pending
tasks in order, the counts per status, the running task, the hold and the mode.

The store has the history; this has what must be fast. The manager changes it and
the views read it, both under ``lock``, which is innermost: nothing else is acquired
while it is held.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from tasks.models import Task, TaskStatus


class Hold(NamedTuple):
    paused: bool
    reason: str | None  # for people, in the server's language
    code: str | None  # stable, for clients (tasks/reasons.py)
    by: str | None = None  # the principal who paused (None: the server itself)


NOT_HELD = Hold(False, None, None)


class Mode(NamedTuple):
    """Open, draining or in maintenance (tasks/queue/modes.py): replaced whole."""

    mode: str  # OPEN_MODE, DRAINING or MAINTENANCE
    window: int | None = None  # the maintenance record's id
    reason: str | None = None
    opened_by: str | None = None
    opened_at: float | None = None
    maintenance_at: float | None = None  # when the queue was found drained (or asked)


OPEN_MODE, DRAINING, MAINTENANCE = "open", "draining", "maintenance"
OPEN = Mode(OPEN_MODE)


class QueueState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._changed = threading.Condition(self.lock)  # the worker's take waits on it
        self._woken = False
        # The worker's line: entry (a task id, or a queued sequence's id) -> its key,
        # in key order. A key is the store's seq, or the rank an operator's move gave
        # (tasks/queue/shaping.py), so the line is that order even when two submits
        # committed together got here the other way round, and an entry put back
        # (paused, link down) is first again.
        self.entries: collections.OrderedDict[str, int] = collections.OrderedDict()
        # Entry -> the time before which it may not start (not_before): skipped over.
        self.not_before: dict[str, float] = {}
        # task id -> (key, cmd_type), in the queue's order: positions and ETAs walk it.
        self.pending: collections.OrderedDict[str, tuple[int, str]] = \
            collections.OrderedDict()
        # Pending task -> its sequence (steps and fix-its: its sequence's entry runs them).
        self.sequence_of: dict[str, str] = {}
        # Queued (not started) sequence id -> its key: a sequence is one entry in the
        # line, its steps are in ``pending`` only (positions and ETAs count them).
        self.sequence_keys: dict[str, int] = {}
        # {sequence_id, status, current_step} of the sequence holding the robot, or None
        # (replaced whole, like the hold).
        self.active_sequence: dict[str, object] | None = None
        self.counts: collections.Counter[str] = collections.Counter()
        self.running: Task | None = None
        self.hold = NOT_HELD  # replaced whole: readers without the lock see one state
        self.mode = OPEN  # replaced whole, like the hold

    # -- the line (lock held) ---------------------------------------------------------
    def _enter(self, entry: str, key: int) -> None:
        """Into the line at its key's place; from the end, since a new key is mostly
        the largest."""
        self.entries.pop(entry, None)
        later: list[tuple[str, int]] = []
        while self.entries and next(reversed(self.entries.values())) > key:
            later.append(self.entries.popitem())
        self.entries[entry] = key
        for name, k in reversed(later):
            self.entries[name] = k
        self._changed.notify_all()

    def add_pending(self, task_id: str, key: int, cmd_type: str, *,
                    sequence_id: str | None = None, not_before: float | None = None) -> int:
        """Queue a committed task (lock held); its 1-based position. A sequence's task
        (``sequence_id``) is not an entry of the line: its sequence's entry runs it."""
        if sequence_id is None:
            if not_before is not None:
                self.not_before[task_id] = not_before
            self._enter(task_id, key)
        else:
            self.sequence_of[task_id] = sequence_id
        # Out of key order only when a submit committed in the same batch as a later
        # one got here second: step back over those few, not over the whole queue.
        later: list[tuple[str, tuple[int, str]]] = []
        while self.pending and next(reversed(self.pending.values()))[0] > key:
            later.append(self.pending.popitem())
        self.pending[task_id] = (key, cmd_type)
        position = len(self.pending)
        for entry in reversed(later):
            self.pending[entry[0]] = entry[1]
        return position

    def queue_sequence(self, sequence_id: str, key: int, not_before: float | None) -> None:
        """A sequence whose steps are pending takes its place in the line (lock held)."""
        self.sequence_keys[sequence_id] = key
        if not_before is not None:
            self.not_before[sequence_id] = not_before
        self._enter(sequence_id, key)

    def unqueue_sequence(self, sequence_id: str) -> None:
        """Started or ended: no longer waiting in the line (lock held)."""
        self.sequence_keys.pop(sequence_id, None)
        self.entries.pop(sequence_id, None)
        self.not_before.pop(sequence_id, None)

    def forget(self, task_id: str) -> bool:
        """A pending task started or ended: out of pending and the line (lock held);
        False if it was not pending."""
        if self.pending.pop(task_id, None) is None:
            return False
        self.entries.pop(task_id, None)
        self.not_before.pop(task_id, None)
        self.sequence_of.pop(task_id, None)
        return True

    def put_back(self, entry: str) -> None:
        """An entry taken but not started keeps its place (lock held); one that is
        gone meanwhile (a cancelled task, an ended sequence) is dropped."""
        if entry in self.pending and entry not in self.sequence_of:
            self._enter(entry, self.pending[entry][0])
        elif entry in self.sequence_keys:
            self._enter(entry, self.sequence_keys[entry])

    def requeue_first(self, task: Task) -> None:
        """A started task goes back to pending, at the head (lock held)."""
        self.pending[task.task_id] = (task.key, task.cmd_type)
        self.pending.move_to_end(task.task_id, last=False)
        if task.sequence_id is not None:  # its sequence runs it next
            self.sequence_of[task.task_id] = task.sequence_id
            return
        if task.not_before is not None:
            self.not_before[task.task_id] = task.not_before
        self._enter(task.task_id, task.key)

    def take(self, timeout: float, now: Callable[[], float] = time.time) -> str | None:
        """The first entry of the line whose time has come, out of the line; None after
        ``timeout`` or when woken (shutdown). Entries waiting for their not_before are
        skipped over: they keep their place."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if self._woken:
                    self._woken = False
                    return None
                wall, soonest = now(), None
                for entry in self.entries:
                    at = self.not_before.get(entry)
                    if at is None or at <= wall:
                        del self.entries[entry]
                        return entry
                    soonest = at if soonest is None else min(soonest, at)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left if soonest is None else
                                   min(left, max(0.01, soonest - wall)))

    def wake(self) -> None:
        """Wake a worker blocked in take()."""
        with self._changed:
            self._woken = True
            self._changed.notify_all()

    def resort(self, keys: dict[str, int]) -> None:
        """New keys for pending tasks (an operator's move, committed): pending and the
        line in the new order (lock held)."""
        for task_id, key in keys.items():
            if task_id in self.pending:
                self.pending[task_id] = (key, self.pending[task_id][1])
        order = sorted(self.pending.items(), key=lambda item: item[1][0])
        self.pending = collections.OrderedDict(order)
        firsts: dict[str, int] = {}
        for task_id, (key, _cmd) in order:
            sequence_id = self.sequence_of.get(task_id)
            if sequence_id is not None and sequence_id not in firsts:
                firsts[sequence_id] = key
        for sequence_id in self.sequence_keys:
            if sequence_id in firsts:
                self.sequence_keys[sequence_id] = firsts[sequence_id]
        line = [(entry, self.sequence_keys.get(entry, self.pending.get(entry, (key, ""))[0]))
                for entry, key in self.entries.items()]
        self.entries = collections.OrderedDict(sorted(line, key=lambda item: item[1]))
        self._changed.notify_all()

    def queue_size(self) -> int:
        return self.counts.get(TaskStatus.PENDING, 0) + self.counts.get(TaskStatus.RUNNING, 0)
