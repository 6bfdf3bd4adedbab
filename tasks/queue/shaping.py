"""The queue as an operator shapes it (docs/queue.md): a waiting task or sequence moved,
the queue drained for maintenance, taken out of service, opened again.

``TaskManager`` extends this as it does RunSide, and shares its locks: every edit runs
under the manager's lock (so no task starts or is cancelled half-way through it) and is
one transaction with its audit row; memory follows the commit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from tasks.errors import MoveRefused, QueueClosed, StoreWriteError, TaskNotFound
from tasks.queue import modes, order
from tasks.queue.events import EventBus
from tasks.queue.state import OPEN, Mode, QueueState
from tasks.store import Statement, TaskStore
from tasks.store.audit import AuditEntry
from tasks.store.outbox import deferred_event, event_statement
from tasks.store.seqstore import SequenceStore

log = logging.getLogger("tasks")  # the manager's logger: these are its records

SHOWN_PENDING = 20  # how many pending ids a move's reply lists


class ShapeSide:
    # Set by TaskManager.__init__.
    store: TaskStore
    events: EventBus
    state: QueueState
    wall: Callable[[], float]
    _lock: threading.RLock
    _runnable: threading.Condition

    def queue_state(self) -> dict[str, Any]:  # TaskManager's
        raise NotImplementedError

    # -- move ------------------------------------------------------------------------------
    def move(self, item: str, *, sequence: bool = False, position: int | None = None,
             before: str | None = None, after: str | None = None,
             audit: AuditEntry | None = None) -> dict[str, Any]:
        """Move the waiting task (or, with ``sequence``, the queued sequence) ``item`` to
        queue position ``position`` or before/after another waiting item. Raises
        TaskNotFound, SequenceError (sequence_not_found) or MoveRefused."""
        with self._lock:
            with self.state.lock:
                keys = {task_id: key for task_id, (key, _cmd) in self.state.pending.items()}
                line = order.units(keys, self.state.sequence_of, set(self.state.sequence_keys))
            self._check_item(item, sequence, line)
            anchors = {u.id: u for u in line}
            target = before if before is not None else after
            if target is not None:
                sequence_id = self.state.sequence_of.get(target)
                unit = anchors.get(target) or (anchors.get(sequence_id) if sequence_id else None)
                if unit is None:
                    self._anchor_missing(target)
                if unit.id == item or not unit.movable:
                    raise MoveRefused(code="anchor_not_queued", anchor=target)
                before, after = (unit.id, None) if before is not None else (None, unit.id)
            moved = order.place(line, item, position=position, before=before, after=after)
            changed = order.new_keys(moved, keys)
            statements: list[Statement] = [
                ("UPDATE tasks SET rank = ? WHERE task_id = ? AND status = 'pending'",
                 (key, task_id)) for task_id, key in changed.items()]
            at = order.position_of(moved, item)
            if audit is not None:
                audit.target, audit.target_kind = item, "sequence" if sequence else "task"
                audit.before = str(order.position_of(line, item))
                audit.after = str(at)
                statements.append(audit.statement())
            self.store.commit(statements)
            with self.state.lock:
                self.state.resort(changed)
                shown = list(self.state.pending)[:SHOWN_PENDING]
        log.info("%s %s moved to queue position %d", "sequence" if sequence else "task",
                 item, at)
        self.events.publish("queue", self.queue_state())
        return {"queue_position": at, "pending": shown, "version": self.events.version}

    def _check_item(self, item: str, sequence: bool, line: list[order.Unit]) -> None:
        unit = next((u for u in line if u.id == item), None)
        if unit is not None and unit.movable:
            return
        if sequence:
            status = self._sequence_status(item)
            if status is None:
                raise MoveRefused(code="sequence_not_found", sequence_id=item)
            raise MoveRefused(code="sequence_not_pending", sequence_id=item, status=status)
        sequence_id = self.state.sequence_of.get(item)
        if sequence_id is not None:
            raise MoveRefused(code="task_in_sequence", task_id=item, sequence_id=sequence_id)
        task = self.store.get(item)
        if task is None:
            raise TaskNotFound(item)
        if task.sequence_id is not None:
            raise MoveRefused(code="task_in_sequence", task_id=item,
                              sequence_id=task.sequence_id)
        raise MoveRefused(code="task_not_pending", task_id=item, status=task.status.value)

    def _sequence_status(self, sequence_id: str) -> str | None:
        row = SequenceStore(self.store).get(sequence_id)
        return None if row is None else row.status

    def _anchor_missing(self, anchor: str) -> NoReturn:
        if self.store.get(anchor) is None and self._sequence_status(anchor) is None:
            raise MoveRefused(code="anchor_not_found", anchor=anchor)
        raise MoveRefused(code="anchor_not_queued", anchor=anchor)

    # -- drain, maintenance, open --------------------------------------------------------
    def check_open(self, idempotency_key: str | None = None) -> None:
        """Refuse new work while draining or in maintenance (QueueClosed); a replay of a
        submit accepted before is answered (it adds nothing)."""
        mode = self.state.mode
        if mode.mode == modes.OPEN_MODE:
            return
        if idempotency_key is not None and self.store.idempotent_task(idempotency_key):
            return
        raise QueueClosed(mode.mode, mode.reason or "")

    def drain(self, reason: str, audit: AuditEntry | None = None) -> tuple[dict[str, Any], bool]:
        """Take no new work; maintenance once the queue is empty. (state, changed)."""
        return self._close(modes.DRAINING, reason, audit)

    def maintenance(self, reason: str,
                    audit: AuditEntry | None = None) -> tuple[dict[str, Any], bool]:
        """Take no new work and start nothing (the running task ends). (state, changed)."""
        return self._close(modes.MAINTENANCE, reason, audit)

    def _close(self, mode: str, reason: str,
               audit: AuditEntry | None) -> tuple[dict[str, Any], bool]:
        by = None if audit is None else audit.principal
        with self._lock:
            current = self.state.mode
            if current.mode == modes.MAINTENANCE or current.mode == mode:
                return self.queue_state(), False  # already there (or beyond)
            now = self.wall()
            statements: list[Statement]
            ids: list[int] = []  # a new window's id, once its statement has run
            if current.mode == modes.DRAINING:  # maintenance asked while draining
                assert current.window is not None
                statements = [modes.entered(current.window, now)]
                new = current._replace(mode=modes.MAINTENANCE, maintenance_at=now)
            else:
                statements = [modes.opened("drain" if mode == modes.DRAINING else "maintenance",
                                           mode, reason, by, now, ids)]
                new = Mode(mode, None, reason, by, now,
                           now if mode == modes.MAINTENANCE else None)
            if audit is not None:
                audit.target, audit.before, audit.after = "queue", current.mode, mode
                statements.append(audit.statement())
            # Its webhook event, in the same transaction (a new window's id is known
            # only once the statement before has run).
            statements.append(deferred_event(f"queue.{mode}", lambda: {
                "queue_mode": mode, "reason": new.reason, "by": by,
                "window": ids[0] if ids else current.window}, self.wall))
            self.store.commit(statements)
            if current.mode != modes.DRAINING:
                new = new._replace(window=ids[0])
            self.state.mode = new
            log.warning("queue %s: %s", mode, reason)
            if mode == modes.DRAINING:
                self._drained(now)
            state = self.queue_state()
        self.events.publish("queue", state)
        return state, True

    def open_queue(self, reason: str | None = None,
                   audit: AuditEntry | None = None) -> tuple[dict[str, Any], bool]:
        """Back to normal: the window closed. (state, changed)."""
        with self._lock:
            current = self.state.mode
            if current.mode == modes.OPEN_MODE:
                return self.queue_state(), False
            by = None if audit is None else audit.principal
            statements: list[Statement] = [modes.closed(current.window, by, reason, self.wall())]
            if audit is not None:
                audit.target, audit.before, audit.after = "queue", current.mode, modes.OPEN_MODE
                statements.append(audit.statement())
            statements.append(event_statement("queue.opened", {
                "queue_mode": modes.OPEN_MODE, "reason": reason, "by": by,
                "window": current.window}, self.wall))
            self.store.commit(statements)
            self.state.mode = OPEN
            self._runnable.notify_all()
            log.warning("queue open again (was %s)", current.mode)
            state = self.queue_state()
        self.events.publish("queue", state)
        return state, True

    def check_drained(self) -> None:
        """A draining queue with nothing left enters maintenance (the worker asks when
        idle)."""
        if self.state.mode.mode != modes.DRAINING:
            return
        with self._lock:
            if self._drained(self.wall()):
                state = self.queue_state()
            else:
                return
        self.events.publish("queue", state)

    def _drained(self, now: float) -> bool:
        """Maintenance if draining and empty (manager lock held); True if it changed."""
        mode = self.state.mode
        with self.state.lock:
            empty = (self.state.queue_size() == 0 and self.state.running is None
                     and self.state.active_sequence is None)
        if mode.mode != modes.DRAINING or not empty or mode.window is None:
            return False
        try:
            self.store.commit([modes.entered(mode.window, now), event_statement(
                "queue.maintenance", {"queue_mode": modes.MAINTENANCE, "reason": mode.reason,
                                      "by": None, "window": mode.window}, self.wall)])
        except StoreWriteError:  # the worker's next idle turn tries again
            log.exception("maintenance could not be saved; still draining")
            return False
        self.state.mode = mode._replace(mode=modes.MAINTENANCE, maintenance_at=now)
        log.warning("queue drained: maintenance (%s)", mode.reason)
        return True

    def mode_fields(self) -> dict[str, Any]:
        mode = self.state.mode
        return {"queue_mode": mode.mode, "maintenance": modes.describe(mode)}

    def maintenance_windows(self, limit: int = 50) -> list[dict[str, Any]]:
        return modes.windows(self.store, limit)
