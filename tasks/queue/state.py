"""The queue as it is held in memory: the FIFO the worker takes from, the pending
tasks in order, the counts per status, the running task and the hold.

The store has the history; this has what must be fast. The manager changes it and
the views read it, both under ``lock``, which is innermost: nothing else is acquired
while it is held.
"""

from __future__ import annotations

import collections
import queue
import threading
from typing import NamedTuple

from tasks.models import Task, TaskStatus

# What a worker blocked in take() is woken with: sorts before every task.
WAKE = (-1, "")


class Hold(NamedTuple):
    paused: bool
    reason: str | None  # for people, in the server's language
    code: str | None  # stable, for clients (tasks/reasons.py)


NOT_HELD = Hold(False, None, None)


class QueueState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        # (seq, task id): the store's seq is the order of submission, so the FIFO is
        # that order even when two submits committed together are queued the other
        # way round, and a task put back (paused, link down) is first again.
        self.fifo: queue.PriorityQueue[tuple[int, str]] = queue.PriorityQueue()
        # task id -> (seq, cmd_type), in seq order: positions and ETAs walk it.
        self.pending: collections.OrderedDict[str, tuple[int, str]] = \
            collections.OrderedDict()
        self.counts: collections.Counter[str] = collections.Counter()
        self.running: Task | None = None
        self.hold = NOT_HELD  # replaced whole: readers without the lock see one state

    def add_pending(self, task_id: str, seq: int, cmd_type: str) -> int:
        """Queue a committed task (lock held); its 1-based position."""
        self.fifo.put((seq, task_id))
        # Out of seq order only when a submit committed in the same batch as a later
        # one got here second: step back over those few, not over the whole queue.
        later: list[tuple[str, tuple[int, str]]] = []
        while self.pending and next(reversed(self.pending.values()))[0] > seq:
            later.append(self.pending.popitem())
        self.pending[task_id] = (seq, cmd_type)
        position = len(self.pending)
        for entry in reversed(later):
            self.pending[entry[0]] = entry[1]
        return position

    def put_back(self, task_id: str) -> None:
        """A task taken but not started keeps its place (lock held; it is pending)."""
        self.fifo.put((self.pending[task_id][0], task_id))

    def requeue_first(self, task: Task) -> None:
        """A started task goes back to pending, at the head (lock held)."""
        assert task.seq is not None  # every stored task read back has its seq
        self.pending[task.task_id] = (task.seq, task.cmd_type)
        self.pending.move_to_end(task.task_id, last=False)
        self.fifo.put((task.seq, task.task_id))

    def queue_size(self) -> int:
        return self.counts.get(TaskStatus.PENDING, 0) + self.counts.get(TaskStatus.RUNNING, 0)
