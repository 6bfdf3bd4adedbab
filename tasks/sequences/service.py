"""Sequences on the queue's side: submit (one block in the FIFO), start-up after a
crash, the operator's requests, and the sequence that holds the robot (``active``).

What runs the steps is tasks/sequences/runner.py; what clients read is views.py.
Locks: the manager's control lock (``manager.control_lock``) guards ``active`` and its
requests; the runner waits on the manager's condition, which requests notify.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from tasks.errors import NotAccepted, QueueFull, StoreWriteError, TaskError
from tasks.models import TaskStatus, new_task_id
from tasks.queue.manager import TaskManager, body_hash
from tasks.reasons import failure
from tasks.sequences.active import Active, Request, StepState
from tasks.sequences.plan import Plan
from tasks.sequences.views import document, live_summary, summary
from tasks.store import NewSequence, SequenceStore, Statement
from tasks.store.audit import AuditEntry, attribution
from tasks.store.seqstore import NewStep, cancel_rest, ended, held

log = logging.getLogger("tasks.sequences")

RECOVER_ACTIONS = ("retry", "skip", "abort")
# The queue's pause while a sequence is held; an operator's own pause is not lifted
# by a decision about the sequence.
SEQUENCE_HELD = "sequence_held"
OPERATOR_PAUSE = "paused_by_operator"
FINAL = ("completed", "failed", "cancelled")
# The sequence's column that names who asked (docs/security.md); a cancel's is
# cancelled_by, committed with the end (cancel()).
_BY_COLUMN = {"recover": "recovered_by", "confirm": "resumed_by"}


class SequenceError(TaskError):
    """A request a sequence in its state cannot take (HTTP 409 or 404)."""


class SequenceService:
    def __init__(self, manager: TaskManager, *, wall: Any = time.time) -> None:
        self.manager = manager
        self.store = SequenceStore(manager.store)
        self.lang = manager.lang
        self.wall = wall
        self.active: Active | None = None  # under manager.control_lock
        # Sends STOP to the robot (the worker's link); wired once the link exists.
        self.abort_robot: Callable[[], object] = lambda: False

    # -- submit ---------------------------------------------------------------------------
    def submit(self, plan: Plan, *, idempotency_key: str | None = None,
               audit: AuditEntry | None = None) -> tuple[str, bool, list[str], int | None]:
        """Commit the sequence and its steps as pending tasks, then queue it as one
        entry: (sequence id, created, step task ids, queue position of its first
        step). Raises QueueFull, QueueClosed, IdempotencyConflict, NotAccepted."""
        self.manager.check_open(idempotency_key)
        state = self.manager.state
        with state.lock:
            unfinished = state.queue_size()
        if unfinished + len(plan.steps) > self.manager.max_queue and (
                idempotency_key is None
                or self.manager.store.idempotent_task(idempotency_key) is None):
            raise QueueFull(self.manager.max_queue)
        now = self.wall()
        sequence_id = new_task_id(now, "seq")
        steps = [NewStep(s.step, s.cmd_type, s.params, new_task_id(now), s.label, s.on_error,
                         s.retry) for s in plan.steps]
        digest = None
        if idempotency_key is not None:
            body = plan.as_body()
            digest = body_hash("sequence", body)
        new = NewSequence(sequence_id, plan.on_error, now, steps, plan.name, plan.external_id,
                          idempotency_key, digest, audit, plan.not_before)
        try:
            sequence_id, created, seqs = self.store.insert(new)
        except StoreWriteError as exc:
            raise NotAccepted(str(exc), reason=exc.reason) from None
        if not created:
            ids = [a.task_id for s in self.store.details(sequence_id)[0] for a in s.attempts]
            return sequence_id, False, ids, None
        with state.lock:
            state.counts[TaskStatus.PENDING] += len(steps)
            position = None
            for step, seq in zip(steps, seqs, strict=True):
                at = state.add_pending(step.task_id, seq, step.cmd_type,
                                       sequence_id=sequence_id)
                position = at if position is None else position
        log.info("sequence %s of %d steps pending", sequence_id, len(steps))
        # Its "pending" event before the worker can take it: no "running" overtakes it.
        # One event for the sequence stands for its steps' (a thousand task events
        # would push every SSE client over its queue).
        self.publish_row(sequence_id)
        with state.lock:
            state.queue_sequence(sequence_id, seqs[0], plan.not_before)
        return sequence_id, True, [s.task_id for s in steps], position

    # -- start-up -------------------------------------------------------------------------
    def recover(self) -> None:
        """After manager.recover(): queue the pending sequences again, and hold the one
        that was running (its running step was failed as interrupted, never re-run)."""
        state = self.manager.state
        for row in self.store.unfinished():
            if row.status == "pending":
                pending = self.store.pending_tasks(row.sequence_id)
                key = pending[0][1] if pending else 0
                with state.lock:
                    state.queue_sequence(row.sequence_id, key, row.not_before)
                continue
            active = self._load(row.sequence_id)
            if active is None:
                continue
            if row.status == "running" or row.hold_code is None:
                params = {"sequence_id": row.sequence_id, "step": active.current}
                self.store.commit([held(row.sequence_id, active.current, "interrupted",
                                        params)])
                active.status, active.hold = "held", ("interrupted", params)
                log.warning("sequence %s was running when the server stopped: held at "
                            "step %d", row.sequence_id, active.current)
            if not self.manager.paused:
                self.manager.pause(code=SEQUENCE_HELD, params={
                    "sequence_id": row.sequence_id, "step": active.current})
            with self.manager.control_lock:
                self.active = active
            with state.lock:
                state.active_sequence = {"sequence_id": active.sequence_id,
                                         "status": active.status,
                                         "current_step": active.current}

    def _load(self, sequence_id: str) -> Active | None:
        """The sequence as its runner keeps it, from the store; None once ended."""
        row = self.store.get(sequence_id)
        if row is None or row.status in FINAL:
            return None
        steps, fixits = self.store.details(sequence_id)
        states = []
        for s in steps:
            states.append(StepState(s.step, s.cmd_type, s.params, s.on_error or row.on_error,
                                    s.retry, s.task_id, s.label, s.started, s.status))
        current = row.current_step or next(
            (s.step for s in states if s.status not in ("completed", "skipped")), len(states))
        active = Active(sequence_id, states, "held" if row.status == "held" else "running",
                        current, row.name, row.external_id, row.on_error, row.submitted,
                        row.started, by=dict(row.by))
        active.failed = [s.step for s in states if s.status == "failed" and s.step < current]
        if row.hold_code is not None:
            active.hold = (row.hold_code, row.hold_params or {})
        active.fixits = [f.task_id for f in fixits if f.status == "pending"]
        return active

    def activate(self, sequence_id: str) -> Active | None:
        """The sequence taken from the FIFO becomes the one that holds the robot;
        None if it ended (cancelled) meanwhile. Under the control lock: a cancel of a
        pending sequence and its start are one or the other."""
        with self.manager.control_lock:
            if self.active is not None:
                return self.active if self.active.sequence_id == sequence_id else None
            active = self._load(sequence_id)
            with self.manager.state.lock:
                self.manager.state.unqueue_sequence(sequence_id)
            self.active = active
            return active

    def release(self, active: Active) -> None:
        """The sequence ended: the robot is free for the queue."""
        with self.manager.control_lock:
            if self.active is active:
                self.active = None
                with self.manager.state.lock:
                    self.manager.state.active_sequence = None
            self.manager.notify_runnable()

    # -- operator requests ----------------------------------------------------------------
    def ask(self, sequence_id: str, kind: str, action: str | None = None,
            timeout: float = 10.0, audit: AuditEntry | None = None) -> bool:
        """Hand a request to the runner and wait for its answer; False if it has not
        answered within ``timeout`` (it then still will). Raises the refusal.
        ``audit``: who asked; their row is committed with the change the runner makes."""
        request = Request(kind, action)
        column = _BY_COLUMN.get(kind)
        if audit is not None and column is not None:
            request.audit = attribution("sequences", column, sequence_id, audit)
            request.by = {column: audit.principal}
        with self.manager.control_lock:
            active = self.active
            if active is None or active.sequence_id != sequence_id:
                raise self._not_active(sequence_id, kind)
            self._check(active, request)
            active.requests.append(request)
            self.manager.notify_runnable()
        if not request.done.wait(timeout):
            return False
        if request.error is not None:
            raise request.error
        return True

    def _check(self, active: Active, request: Request) -> None:
        if request.kind == "recover":
            if request.action not in RECOVER_ACTIONS:
                raise SequenceError(code="recover_action_invalid",
                                    actions=", ".join(RECOVER_ACTIONS))
            if active.status != "held":
                raise SequenceError(code="sequence_not_held", sequence_id=active.sequence_id)
            if active.fixits or active.running_task is not None:
                raise SequenceError(code="fixit_running", sequence_id=active.sequence_id)
        elif request.kind == "confirm" and active.confirm is None:
            raise SequenceError(code="not_waiting_confirm", sequence_id=active.sequence_id)

    def _not_active(self, sequence_id: str, kind: str) -> SequenceError:
        row = self.store.get(sequence_id)
        if row is None:
            return SequenceError(code="sequence_not_found", sequence_id=sequence_id)
        if row.status in FINAL:
            return SequenceError(code="sequence_ended", sequence_id=sequence_id,
                                 status=row.status)
        if kind == "confirm":
            return SequenceError(code="not_waiting_confirm", sequence_id=sequence_id)
        return SequenceError(code="sequence_not_held", sequence_id=sequence_id)

    def cancel(self, sequence_id: str, timeout: float = 5.0,
               audit: AuditEntry | None = None) -> bool:
        """Cancel a sequence: True once it has ended cancelled, False while its
        running step's STOP is still being confirmed. ``audit``: committed with the end."""
        rows = [] if audit is None else attribution("sequences", "cancelled_by", sequence_id,
                                                    audit)
        with self.manager.control_lock:
            active = self.active
            if active is None or active.sequence_id != sequence_id:
                self._cancel_pending(sequence_id, rows)
                return True
            active.cancel_requested = True
            active.cancel_audit = rows
            if audit is not None:
                active.by["cancelled_by"] = audit.principal
            running = active.running_task
        if running is not None:
            # As a task cancel: STOP now, the runner records the outcome.
            self.manager.stops.cancel(running)
            self.abort_robot()
        try:
            return self.ask(sequence_id, "cancel", timeout=timeout)
        except SequenceError as exc:
            # The runner may have ended it between the two steps above, for this cancel.
            row = self.store.get(sequence_id)
            if exc.code == "sequence_ended" and row is not None and row.status == "cancelled":
                return True
            raise

    def _cancel_pending(self, sequence_id: str, rows: list[Statement]) -> None:
        """A sequence not started: every step cancelled at once (control lock held)."""
        row = self.store.get(sequence_id)
        if row is None:
            raise SequenceError(code="sequence_not_found", sequence_id=sequence_id)
        if row.status != "pending":
            raise SequenceError(code="sequence_ended", sequence_id=sequence_id,
                                status=row.status)
        now = self.wall()
        ids = [task_id for task_id, _seq, _step in self.store.pending_tasks(sequence_id)]
        result = failure("sequence_cancelled", self.lang)
        self.store.commit([cancel_rest(sequence_id, now, result),
                           ended(sequence_id, "cancelled", now), *rows])
        with self.manager.state.lock:
            self.manager.state.unqueue_sequence(sequence_id)
        self.manager.settle_pending(ids, TaskStatus.CANCELLED)
        log.info("sequence %s cancelled while pending", sequence_id)
        self.publish_row(sequence_id)

    def fixit(self, sequence_id: str, cmd_type: str, params: dict[str, Any],
              audit: AuditEntry | None = None) -> str:
        """Queue a fix-it command for the held sequence: its runner runs it at once."""
        with self.manager.control_lock:
            active = self.active
            if active is None or active.sequence_id != sequence_id:
                raise self._not_active(sequence_id, "fixit")
            if active.status != "held":
                raise SequenceError(code="sequence_not_held", sequence_id=sequence_id)
            now = self.wall()
            task_id = new_task_id(now)
            try:
                rows = []
                if audit is not None:
                    audit.target, audit.target_kind = task_id, "task"
                    rows = [audit.statement()]
                seq = self.store.add_task(sequence_id, None, task_id, cmd_type, params, now,
                                          rows, None if audit is None else audit.principal)
            except StoreWriteError as exc:
                raise NotAccepted(str(exc), reason=exc.reason) from None
            with self.manager.state.lock:
                self.manager.state.counts[TaskStatus.PENDING] += 1
                self.manager.state.add_pending(task_id, seq, cmd_type,
                                               sequence_id=sequence_id)
                # Ahead of everything: first in line for positions too.
                self.manager.state.pending.move_to_end(task_id, last=False)
            active.fixits.append(task_id)
            self.manager.notify_runnable()
        log.info("sequence %s: fix-it %s %s queued", sequence_id, task_id, cmd_type)
        self.manager.events.publish("task", self.manager.get(task_id) or {"task_id": task_id})
        return task_id

    # -- events ---------------------------------------------------------------------------
    def publish_row(self, sequence_id: str) -> None:
        """The sequence's summary as stored (not the one holding the robot: its runner
        publishes from memory)."""
        row = self.store.get(sequence_id)
        if row is not None:
            steps, fixits = self.store.details(sequence_id)
            self.manager.events.publish("sequence", summary(row, steps, fixits, None,
                                                            self.lang))

    def publish(self, active: Active) -> None:
        with self.manager.state.lock:
            self.manager.state.active_sequence = {
                "sequence_id": active.sequence_id, "status": active.status,
                "current_step": active.current}
        self.manager.events.publish("sequence", live_summary(active, self.lang))

    # -- reads ----------------------------------------------------------------------------
    def document(self, sequence_id: str) -> dict[str, Any] | None:
        row = self.store.get(sequence_id)
        if row is None:
            return None
        steps, fixits = self.store.details(sequence_id)
        with self.manager.control_lock:
            active = self.active
        return document(row, steps, fixits, active, self.lang, self.manager.views.mean)

    def list_page(self, *, status: str | None, limit: int,
                  before_seq: int | None) -> tuple[list[dict[str, Any]], int | None]:
        rows = self.store.page(status=status, limit=limit, before_seq=before_seq)
        with self.manager.control_lock:
            active = self.active
        out = []
        for row in rows:
            steps, fixits = self.store.details(row.sequence_id)
            out.append(summary(row, steps, fixits, active, self.lang))
        return out, (rows[-1].seq if rows else None)

    def plan_estimate(self, plan: Plan) -> dict[str, Any]:
        """?dry_run=1: the validated plan with each step's estimated seconds."""
        steps, total = [], 0.0
        known = True
        for s in plan.steps:
            mean = None if s.is_confirm else self.manager.views.mean(s.cmd_type)
            known = known and mean is not None
            total += mean or 0.0
            steps.append({"step": s.step, "label": s.label, "cmd_type": s.cmd_type,
                          "params": s.params, "on_error": s.on_error, "retry": s.retry,
                          "estimated_s": None if mean is None else round(mean, 3)})
        return {"name": plan.name, "external_id": plan.external_id, "on_error": plan.on_error,
                "steps": steps, "estimated_s": round(total, 3) if known else None}
