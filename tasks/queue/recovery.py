"""Start-up after a stop or a crash: the stored queue loaded into memory.

A task that was `running` when the server died is failed, never re-run: a physical
action is not idempotent. The queue then holds, because the robot's state is unknown.
"""

from __future__ import annotations

import logging

from tasks.commands import CommandTable
from tasks.models import TaskStatus
from tasks.queue.state import Hold, QueueState
from tasks.queue.views import TaskViews
from tasks.reasons import failure, stored_pause
from tasks.store.rows import UNREADABLE
from tasks.store.taskstore import TaskStore

log = logging.getLogger("tasks")  # the manager's logger: these are its records


def recover(store: TaskStore, state: QueueState, views: TaskViews, commands: CommandTable,
            lang: str, now: float) -> list[str]:
    """Load the queue's state from ``store`` into ``state``; the ids of interrupted tasks.

    Holding the queue for them is the caller's (the manager's pause), so this module
    needs none of the manager."""
    interrupted: list[str] = []
    for task in store.unfinished():
        if task.status == TaskStatus.RUNNING:
            items = (task.progress or {}).get("items") or []
            result = {**failure("interrupted", lang),
                      **commands.partial_result(task.cmd_type, items)}
            store.finish(task.task_id, TaskStatus.FAILED, now, result)
            interrupted.append(task.task_id)
            log.warning("task %s (%s) was running when the server stopped: marked failed, "
                        "not re-run", task.task_id, task.cmd_type)
        elif set(task.params) == {UNREADABLE}:
            # Never guess what a waiting task was to do: it is failed, not run.
            store.finish(task.task_id, TaskStatus.FAILED, now,
                         failure("params_unreadable", lang), only_if=(TaskStatus.PENDING,))
            log.error("task %s (%s): its stored parameters cannot be read; failed, not run",
                      task.task_id, task.cmd_type)
        else:
            assert task.seq is not None  # unfinished() reads it
            # A sequence's step runs from its sequence's entry (tasks/sequences/).
            with state.lock:
                state.add_pending(task.task_id, task.key, task.cmd_type,
                                  sequence_id=task.sequence_id, not_before=task.not_before)
    state.counts.update(store.status_counts())
    views.load_durations()
    if store.get_meta("paused") == "1":
        state.hold = Hold(True, *stored_pause(store, lang), store.get_meta("paused_by"))
    return interrupted
