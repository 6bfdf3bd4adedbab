"""The sequence that holds the robot, run step by step on the worker's thread.

The worker hands a sequence taken from the FIFO to ``run()``, and calls it again
first thing while a started sequence holds the robot, so nothing else starts until it
ends: not while it runs, is held, waits at a CONFIRM, or waits for a paused queue. Each
step's end and the sequence's next state are one transaction (``extra``); the
operator's requests (tasks/sequences/active.py) are answered between steps.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from i18n import t
from tasks.models import TaskStatus, new_task_id
from tasks.queue.manager import Run, TaskManager
from tasks.queue.stops import SHUTDOWN
from tasks.reasons import CANCELLED, EMERGENCY_STOP, failure
from tasks.sequences.active import Active, Request, StepState
from tasks.sequences.service import (
    OPERATOR_PAUSE,
    SEQUENCE_HELD,
    SequenceError,
    SequenceService,
)
from tasks.sequences.views import ended_summary
from tasks.store import Statement
from tasks.store.seqstore import at_step, cancel_rest, cancel_task, ended, held, running, skip
from tasks.worker import Hold, Verdict

log = logging.getLogger("tasks.sequences")


class WorkerPort(Protocol):
    link: Any  # wait_ready(timeout), stop_epoch
    poll_interval: float

    def execute(self, run: Run) -> Verdict | None: ...
    def finish_verdict(self, task_id: str, verdict: Verdict, *, hold: Hold | None = None,
                       extra: Any = (), settled: Any = ()) -> None: ...


class SequenceRunner:
    def __init__(self, service: SequenceService, worker: WorkerPort) -> None:
        self.service = service
        self.worker = worker
        self.manager: TaskManager = service.manager
        self.lang = service.lang
        self.wall = service.wall

    # -- the worker's side ---------------------------------------------------------------
    def holding(self) -> bool:
        return self.service.active is not None

    def owns(self, entry: str) -> bool:
        return entry.startswith("seq_")

    def run(self, entry: str | None, stop: threading.Event) -> None:
        """Run the sequence ``entry`` (or the one holding the robot) until it ends or
        the worker stops."""
        active = self.service.active if entry is None else self.service.activate(entry)
        if active is None:
            return
        while not stop.is_set() and self.service.active is active:
            if self._answer(active):
                continue
            if active.fixits and self._ready():
                self._fixit(active)
                continue
            if active.status == "held" or self.manager.blocked or not self._ready():
                self.manager.wait_change(self.worker.poll_interval,
                                         unless=lambda: bool(active.requests))
                continue
            self._step(active, stop)
        if self.service.active is not active:
            self._answer(active)  # requests made as it ended: a cancel is then done

    def _ready(self) -> bool:
        return bool(self.worker.link.wait_ready(0))

    def _start(self, task_id: str, extra: list[Statement], hold_ok: bool = False) -> Run | None:
        return self.manager.start(task_id, lambda: self.worker.link.stop_epoch, extra=extra,
                                  hold_ok=hold_ok, put_back=False)

    # -- steps -----------------------------------------------------------------------------
    def _step(self, active: Active, stop: threading.Event) -> None:
        step = active.step
        if step.status != "pending":
            # Its task ended while nothing ran it (a crash between two commits): hold,
            # never guess.
            self._hold_only(active, "interrupted", step)
            return
        now = self.wall()
        run = self._start(step.task_id, [running(active.sequence_id, step.step, now)])
        if run is None:
            if not self.manager.blocked:
                self._hold_only(active, "interrupted", step)
            return
        active.status, step.status = "running", "running"
        active.started = active.started or now
        step.attempts += 1
        if step.is_confirm:
            self._confirm(active, step, run, stop)
            return
        active.running_task = step.task_id
        self.service.publish(active)
        try:
            verdict = self.worker.execute(run)
        finally:
            active.running_task = None
        if verdict is None:  # never reached the robot: pending again, run it once ready
            step.status = "pending"
            step.attempts -= 1
            return
        self._settle(active, step, verdict)

    def _settle(self, active: Active, step: StepState, verdict: Verdict) -> None:
        """Commit the step's end with the sequence's next state, by the step's rule."""
        step.status = verdict.status.value
        params = {"sequence_id": active.sequence_id, "step": step.step,
                  "error": str(verdict.result.get("message") or "")}
        if active.cancel_requested:
            self._end(active, verdict, step, "cancelled", "sequence_cancelled")
        elif verdict.status == TaskStatus.COMPLETED:
            self._advance(active, step.task_id, verdict)
        elif verdict.stop in (EMERGENCY_STOP, CANCELLED):
            self._hold(active, step, verdict, "emergency_stop", params, None)
        elif verdict.stop == SHUTDOWN:
            self._hold(active, step, verdict, "interrupted", params, verdict.hold)
        elif verdict.hold is not None:
            self._hold(active, step, verdict, "robot_fault", params, verdict.hold)
        elif verdict.robot_error and step.attempts <= step.retry:
            self.worker.finish_verdict(step.task_id, verdict)
            log.info("sequence %s step %d failed (%s): attempt %d of %d", active.sequence_id,
                     step.step, verdict.log_text, step.attempts + 1, step.retry + 1)
            self._new_attempt(active, step)
        elif step.rule == "hold":
            self._hold(active, step, verdict, "step_failed", params, (SEQUENCE_HELD, params))
        elif step.rule == "abort":
            self._end(active, verdict, step, "failed", "sequence_step_failed")
        else:  # continue
            self._advance(active, step.task_id, verdict)

    def _advance(self, active: Active, task_id: str, verdict: Verdict | None) -> None:
        """The current step is done (completed, failed under continue, or skipped):
        on to the next, or the sequence ends."""
        sid, k, now = active.sequence_id, active.current, self.wall()
        last = k >= len(active.steps)
        status = "completed"
        if last:
            failed = any(s.status == "failed" for s in active.steps)
            status = "failed" if failed else "completed"
            extra = [ended(sid, status, now)]
        else:
            extra = [at_step(sid, k + 1)]
        extra += self._audit(active)
        if verdict is not None:
            self.worker.finish_verdict(task_id, verdict, extra=extra)
        else:
            self.service.store.commit(extra)
        if last:
            self._release(active, status, now)
        else:
            if active.step.status == "failed":
                active.failed.append(k)
            active.current = k + 1
            self.service.publish(active)

    def _hold(self, active: Active, step: StepState, verdict: Verdict, code: str,
              params: dict[str, Any], queue_hold: Hold | None) -> None:
        extra = [held(active.sequence_id, step.step, code, params), *self._audit(active)]
        self.worker.finish_verdict(step.task_id, verdict, hold=queue_hold, extra=extra)
        active.status, active.hold = "held", (code, params)
        log.warning("sequence %s held at step %d (%s)", active.sequence_id, step.step, code)
        self.service.publish(active)

    def _hold_only(self, active: Active, code: str, step: StepState) -> None:
        params = {"sequence_id": active.sequence_id, "step": step.step}
        self.service.store.commit([held(active.sequence_id, step.step, code, params)])
        if not self.manager.paused:
            self.manager.pause(code=SEQUENCE_HELD, params=params)
        active.status, active.hold = "held", (code, params)
        self.service.publish(active)

    def _end(self, active: Active, verdict: Verdict | None, step: StepState | None,
             status: str, code: str) -> None:
        """End the sequence ``status``: every task not yet run is cancelled (``code``
        says why), with the step's own end if it just ran."""
        sid, now = active.sequence_id, self.wall()
        result = failure(code, self.lang, step=active.current)
        extra = [cancel_rest(sid, now, result), ended(sid, status, now), *self._audit(active)]
        if status == "cancelled":  # the cancel's row, even if the runner has not taken it
            with self.manager.control_lock:
                extra += active.cancel_audit
                active.cancel_audit = []
        current = step.task_id if step is not None and verdict is not None else None
        settled = [tid for tid in active.pending_ids() if tid != current] + active.fixits
        if verdict is not None and step is not None:
            self.worker.finish_verdict(step.task_id, verdict, extra=extra, settled=settled)
        else:
            self.service.store.commit(extra)
            self.manager.settle_pending(settled, TaskStatus.CANCELLED)
        for s in active.steps:
            if s.status == "pending":
                s.status = "cancelled"
        active.fixits = []
        self._release(active, status, now)

    def _release(self, active: Active, status: str, now: float) -> None:
        log.info("sequence %s %s", active.sequence_id, status)
        summary = ended_summary(active, status, now, self.lang)
        self.service.release(active)
        self.manager.events.publish("sequence", summary)

    def _new_attempt(self, active: Active, step: StepState) -> None:
        now = self.wall()
        task_id = new_task_id(now)
        seq = self.service.store.add_task(active.sequence_id, step.step, task_id,
                                          step.cmd_type, step.params, now,
                                          extra=[at_step(active.sequence_id, step.step),
                                                 *self._audit(active)])
        state = self.manager.state
        with state.lock:
            state.counts[TaskStatus.PENDING] += 1
            state.add_pending(task_id, seq, step.cmd_type, sequence_id=active.sequence_id)
            state.pending.move_to_end(task_id, last=False)  # it runs next
        step.task_id, step.status = task_id, "pending"
        active.status, active.hold = "running", None
        self.manager.events.publish("task", self.manager.get(task_id) or {"task_id": task_id})
        self.service.publish(active)

    # -- CONFIRM ---------------------------------------------------------------------------
    def _confirm(self, active: Active, step: StepState, run: Run, stop: threading.Event) -> None:
        timeout = step.params.get("timeout_s")
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        active.confirm = {"step": step.step, "message": step.params.get("message"),
                          "deadline": None if timeout is None else self.wall() + float(timeout)}
        self.service.publish(active)
        log.info("sequence %s step %d waits for confirmation", active.sequence_id, step.step)
        verdict = None
        answered: list[Request] = []  # answered once the step's end is committed
        while verdict is None:
            if stop.is_set():
                return  # still running on disk: recovery fails it and holds the sequence
            for request in self._take(active):
                if verdict is not None or request.kind == "recover":
                    self._refuse(request, "sequence_not_held", active)
                    continue
                if request.kind == "cancel":
                    active.cancel_requested = True
                verdict = self._confirm_verdict(request.kind)
                active.audit = request.audit  # committed with the step's end
                answered.append(request)
            if verdict is None and self.manager.stop_reason(run) is not None:
                verdict = Verdict(TaskStatus.CANCELLED, failure(EMERGENCY_STOP, self.lang),
                                  None, None, "stopped", stop=EMERGENCY_STOP)
            if verdict is None and deadline is not None and time.monotonic() >= deadline:
                verdict = Verdict(TaskStatus.FAILED, failure("confirm_timeout", self.lang),
                                  None, None, "no confirmation in time")
            if verdict is None:
                left = self.worker.poll_interval if deadline is None else \
                    max(0.0, min(self.worker.poll_interval, deadline - time.monotonic()))
                self.manager.wait_change(left, unless=lambda: bool(active.requests))
        active.confirm = None
        try:
            self._settle(active, step, verdict)
            for request in answered:
                active.by.update(request.by)
        finally:
            active.audit = []
            for request in answered:
                request.done.set()

    def _confirm_verdict(self, kind: str) -> Verdict:
        if kind == "confirm":
            return Verdict(TaskStatus.COMPLETED, {"success": True, "code": "confirmed",
                                                  "message": t("info.confirmed", self.lang)},
                           None, None, "confirmed")
        return Verdict(TaskStatus.CANCELLED, failure("sequence_cancelled", self.lang),
                       None, None, "sequence cancelled", stop=CANCELLED)

    # -- the operator's requests -------------------------------------------------------------
    @staticmethod
    def _audit(active: Active) -> list[Statement]:
        """The request's attribution and audit row, once: with the change it caused."""
        rows, active.audit = active.audit, []
        return rows

    def _take(self, active: Active) -> list[Request]:
        with self.manager.control_lock:
            requests, active.requests = active.requests, []
        return requests

    def _refuse(self, request: Request, code: str, active: Active) -> None:
        request.error = SequenceError(code=code, sequence_id=active.sequence_id)
        request.done.set()

    def _answer(self, active: Active) -> bool:
        """Answer the requests made meanwhile; True if there were any."""
        requests = self._take(active)
        for request in requests:
            if self.service.active is not active:
                if request.kind != "cancel" or not active.cancel_requested:
                    self._refuse(request, "sequence_ended", active)
                request.done.set()
                continue
            active.audit = request.audit
            try:
                self._do(active, request)
                active.by.update(request.by)
            except Exception as exc:  # the request fails, the runner goes on
                log.exception("sequence %s: %s failed", active.sequence_id, request.kind)
                request.error = exc
            active.audit = []  # refused: no change, so no row
            request.done.set()
        return bool(requests)

    def _do(self, active: Active, request: Request) -> None:
        if request.kind == "cancel":
            self._end(active, None, None, "cancelled", "sequence_cancelled")
            self._lift_pause(only=SEQUENCE_HELD)
            return
        if request.kind == "confirm":
            raise SequenceError(code="not_waiting_confirm", sequence_id=active.sequence_id)
        if active.status != "held":
            raise SequenceError(code="sequence_not_held", sequence_id=active.sequence_id)
        step = active.step
        log.info("sequence %s step %d: operator chose %s", active.sequence_id, step.step,
                 request.action)
        if request.action == "abort":
            self._end(active, None, None, "failed", "sequence_aborted")
        elif request.action == "skip":
            now = self.wall()
            statements = [skip(active.sequence_id, step.step)]
            if step.status == "pending":
                statements.append(cancel_task(step.task_id, now,
                                              failure("step_skipped", self.lang)))
            self.service.store.commit(statements + self._audit(active))
            if step.status == "pending":
                self.manager.settle_pending([step.task_id], TaskStatus.CANCELLED)
            step.status = "skipped"
            active.status, active.hold = "running", None
            self._advance(active, step.task_id, None)
        elif step.status == "pending":  # retry of a step that never ran
            self.service.store.commit([at_step(active.sequence_id, step.step),
                                       *self._audit(active)])
            active.status, active.hold = "running", None
            self.service.publish(active)
        else:
            self._new_attempt(active, step)
        self._lift_pause()

    def _lift_pause(self, only: str | None = None) -> None:
        """The operator decided about the held sequence: the queue's hold for it ends
        (an operator's own pause stays until resumed)."""
        code = self.manager.pause_code
        if not self.manager.paused or code == OPERATOR_PAUSE:
            return
        if only is None or code == only:
            self.manager.resume()

    # -- fix-it commands -----------------------------------------------------------------------
    def _fixit(self, active: Active) -> None:
        task_id = active.fixits[0]
        run = self._start(task_id, [], hold_ok=True)
        with self.manager.control_lock:
            active.fixits.pop(0)
        if run is None:
            return
        active.running_task = task_id
        try:
            verdict = self.worker.execute(run)
        finally:
            active.running_task = None
        if verdict is None:
            with self.manager.control_lock:
                active.fixits.insert(0, task_id)
            return
        self.worker.finish_verdict(task_id, verdict)
        self.service.publish(active)
