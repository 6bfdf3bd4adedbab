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
    by: str | None = None  # the principal who paused (None: the server itself)


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
        # Sequence id -> its key in the FIFO (tasks/sequences/): a sequence is one entry
        # there, its steps are in ``pending`` only (positions and ETAs count them).
        self.sequence_keys: dict[str, int] = {}
        # {sequence_id, status, current_step} of the sequence holding the robot, or None
        # (replaced whole, like the hold).
        self.active_sequence: dict[str, object] | None = None
        self.counts: collections.Counter[str] = collections.Counter()
        self.running: Task | None = None
        self.hold = NOT_HELD  # replaced whole: readers without the lock see one state

    def add_pending(self, task_id: str, seq: int, cmd_type: str, *, fifo: bool = True) -> int:
        """Queue a committed task (lock held); its 1-based position. ``fifo=False``: a
        sequence's step, which its sequence's entry runs."""
        if fifo:
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

    def put_back(self, entry: str) -> None:
        """An entry taken but not started keeps its place (lock held); one that is
        gone meanwhile (a cancelled task, an ended sequence) is dropped."""
        if entry in self.pending:
            self.fifo.put((self.pending[entry][0], entry))
        elif entry in self.sequence_keys:
            self.fifo.put((self.sequence_keys[entry], entry))

    def requeue_first(self, task: Task, *, fifo: bool = True) -> None:
        """A started task goes back to pending, at the head (lock held)."""
        assert task.seq is not None  # every stored task read back has its seq
        self.pending[task.task_id] = (task.seq, task.cmd_type)
        self.pending.move_to_end(task.task_id, last=False)
        if fifo:
            self.fifo.put((task.seq, task.task_id))

    def queue_size(self) -> int:
        return self.counts.get(TaskStatus.PENDING, 0) + self.counts.get(TaskStatus.RUNNING, 0)
