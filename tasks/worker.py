"""The one worker thread that runs tasks on the robot, one after another.

Modelled on huey's consumer: `run_once()` takes one task, records it, and
catches and logs every exception so one bad task cannot kill the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from i18n import t
from tasks.commands import CommandTable
from tasks.errors import StoreWriteError
from tasks.models import TaskStatus
from tasks.queue.manager import Run, TaskManager
from tasks.queue.stops import SHUTDOWN
from tasks.reasons import EMERGENCY_STOP, failure, fault_hold, outcome_code, progress_message
from tasks.store import Statement
from tasks.store.audit import AuditEntry

log = logging.getLogger("tasks.worker")

# A pause: (code, params) for manager.pause (tasks/reasons.py).
Hold = tuple[str, dict[str, Any]]


class Outcome(Protocol):
    success: bool
    message: str  # English (logs)
    data: dict[str, Any]
    @property
    def fault(self) -> str | None: ...  # read-only, so robot.Fault (a str) fits
    aborted: bool
    items: list[dict[str, Any]]
    transcript: list[dict[str, Any]]
    sent: bool  # the command's line reached the robot's port
    code: str | None  # a failure's code: its text is error.<code> (robot/link/outcome.py)
    params: dict[str, Any]


@dataclass
class Verdict:
    """How a task's run ended, before it is committed."""

    status: TaskStatus
    result: dict[str, Any]
    transcript: list[dict[str, Any]] | None
    hold: Hold | None  # the queue's pause: the robot's state is unknown
    log_text: str
    drop_items: bool = False
    stop: str | None = None  # why it was stopped: cancel, emergency stop, shutdown
    # The robot answered with an error (ERR): nothing unknown, a step's `retry` may
    # repeat it. Never set for a fault, an interruption or a stop.
    robot_error: bool = False


class SequencePort(Protocol):
    """The sequences' runner (tasks/sequences/runner.py), wired in by the server."""

    def holding(self) -> bool: ...  # a started sequence holds the robot
    def owns(self, entry: str) -> bool: ...  # a FIFO entry that is a sequence
    def run(self, entry: str | None, stop: threading.Event) -> None: ...


class RobotPort(Protocol):
    """What the worker needs from the robot link (robot.RobotLink)."""

    def wait_ready(self, timeout: float | None) -> bool: ...
    def execute(self, cmd: str, params: dict[str, Any] | None = None, *,
                on_progress: Any = None, timeout: float | None = None,
                stop_epoch: int | None = None) -> Outcome: ...
    def abort(self, confirm_within: float | None = None) -> bool: ...
    def give_up(self) -> bool: ...
    def live_transcript(self) -> list[dict[str, Any]] | None: ...
    @property
    def stop_epoch(self) -> int: ...
    # How long a STOP at shutdown may wait for the robot's confirmation.
    handshake_timeout: float


class Worker:
    def __init__(self, manager: TaskManager, link: RobotPort, *,
                 shutdown_grace: float = 10.0, poll_interval: float = 0.5,
                 commands: CommandTable | None = None) -> None:
        self.manager = manager
        # The manager's table by default: results must be shaped by the table that
        # validated the task.
        self.commands = manager.commands if commands is None else commands
        self.link = link
        # The manager's language: the results it stores speak one language.
        self.lang = manager.lang
        self.shutdown_grace = shutdown_grace
        self.poll_interval = poll_interval  # bounds how long a stop request waits
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._current: str | None = None  # the task whose command is on the robot
        self._thread: threading.Thread | None = None
        self.sequences: SequencePort | None = None

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="robot-worker", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """True from taking a task until its outcome is recorded."""
        return not self._idle.is_set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, grace: float | None = None) -> None:
        """Stop taking tasks; let the running one finish for `grace` s, then abort it.

        The abort waits for the robot's confirmation at most the link's handshake
        timeout, not the command's own silence limit (60 s for a scan): a service
        manager's stop timeout must be able to cover the whole shutdown."""
        grace = self.shutdown_grace if grace is None else grace
        self._stop.set()
        self.manager.wake()
        # In slices, so that the caller's signal handlers (a second Ctrl+C) can run:
        # an untimed wait is never woken by a signal that another thread received.
        deadline = time.monotonic() + grace
        while not self._idle.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                log.warning("shutdown: task %s still running after %.0f s; sending STOP",
                            self.manager.running_task_id, grace)
                self.abort_for_shutdown()
                break
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.2)

    def abort_for_shutdown(self, *, wait: bool = True) -> bool:
        """STOP the running task because the server is going down (recorded as such).

        The robot then has the link's handshake timeout to confirm; after that, or at
        once without ``wait`` (a second signal), the task ends unconfirmed: failed,
        with a note, and the queue held. True if a command's wait was cut short now."""
        self._stop.set()  # whatever comes next, no further task may start
        self.manager.wake()
        self.manager.stops.stop_all(SHUTDOWN)
        confirm = self.link.handshake_timeout
        sent = self.link.abort(confirm_within=confirm)
        if wait:
            if sent and not self._idle.is_set():
                log.warning("shutdown: waiting up to %g s for the robot to confirm STOP",
                            confirm)
            return False
        gave_up = self.link.give_up()
        if gave_up:
            log.warning("shutdown: not waiting for the robot to confirm STOP")
        return gave_up

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # keep the worker alive whatever one task does
                log.exception("worker: unexpected error")
                self._stop.wait(self.poll_interval)

    # -- one task ---------------------------------------------------------------------------
    def run_once(self) -> bool:
        """Run the next task if one may start now; True if a task ran."""
        self.manager.check_drained()  # a draining queue found empty: maintenance
        sequences = self.sequences
        if sequences is not None and sequences.holding():
            # A started sequence holds the robot, held or paused too: only its runner
            # may start anything (its steps, its fix-it commands).
            return self._run_sequence(sequences, None)
        if not self.manager.wait_runnable(self._stop, self.poll_interval):
            return False
        # A disconnected robot leaves tasks pending (not failed) until it is back.
        if not self.link.wait_ready(self.poll_interval):
            return False
        task_id = self.manager.take(self.poll_interval)
        if task_id is None:
            return False
        # take() may have waited while the link dropped: a task must not start (and
        # fail as "disconnected") on a link that is already down; it keeps its place.
        if self._stop.is_set() or not self.link.wait_ready(0):
            self.manager.put_back_first(task_id)
            return False
        if sequences is not None and sequences.owns(task_id):
            return self._run_sequence(sequences, task_id)
        self._idle.clear()
        try:
            # The manager reads the link's STOP count before `running` is committed: a
            # STOP (cancel, emergency stop) from then on keeps the command off the wire.
            run = self.manager.start(task_id, lambda: self.link.stop_epoch)
            if run is None:
                return False
            self._current = task_id
            self._execute(run)
            return True
        finally:
            self._current = None
            self._idle.set()

    def _run_sequence(self, sequences: SequencePort, entry: str | None) -> bool:
        self._idle.clear()
        try:
            sequences.run(entry, self._stop)
            return True
        finally:
            self._idle.set()

    def execute(self, run: Run) -> Verdict | None:
        """Run a started task on the robot (a sequence's step, a fix-it command), with
        ``_current`` set for its live transcript; None if it went back to the queue."""
        self._current = run.task.task_id
        try:
            return self.perform(run)
        finally:
            self._current = None

    def _execute(self, run: Run) -> None:
        verdict = self.perform(run)
        if verdict is not None:
            self.finish_verdict(run.task.task_id, verdict)

    def finish_verdict(self, task_id: str, verdict: Verdict, *, hold: Hold | None = None,
                       extra: Sequence[Statement] = (), settled: Iterable[str] = ()) -> None:
        """Commit a run's end (``hold``: the queue's pause instead of the verdict's)."""
        self._finish(task_id, verdict.status, verdict.result, verdict.transcript,
                     hold or verdict.hold, verdict.log_text, drop_items=verdict.drop_items,
                     extra=extra, settled=settled)

    def perform(self, run: Run) -> Verdict | None:
        """Send the task's command and judge its outcome; None if the command never
        reached the robot and the task went back to the queue."""
        task_id, cmd_type = run.task.task_id, run.task.cmd_type
        items: list[dict[str, Any]] = []

        def on_progress(event: dict[str, Any]) -> None:
            # robot.RobotLink hands over the items new since its last call, at most
            # every 200 ms; another RobotPort may still send one "item" per call.
            new = event.get("items")
            if new is None:
                new = [event["item"]] if isinstance(event.get("item"), dict) else []
            first = len(items)
            items.extend(new)
            done, total = event.get("done"), event.get("total")
            percent = None
            if isinstance(done, int) and isinstance(total, int) and total > 0:
                percent = round(100.0 * done / total, 1)
            progress = {"done": done, "total": total,
                        "message": progress_message(event, self.lang),
                        "percent": percent}
            if event.get("items_dropped"):
                progress["items_dropped"] = event["items_dropped"]
            try:
                self.manager.progress(task_id, progress, new, first)
            except StoreWriteError:
                log.warning("task %s: progress not saved", task_id)

        try:
            outcome = self.link.execute(cmd_type, run.task.params, on_progress=on_progress,
                                        stop_epoch=run.stop_epoch)
        except Exception as exc:  # a driver bug must not leave the task running forever
            log.exception("task %s: robot driver error", task_id)
            return Verdict(TaskStatus.FAILED,
                           {**failure("driver_error", self.lang, error=str(exc)),
                            **self.commands.partial_result(cmd_type, items)}, None,
                           ("hold_driver_error", {"task_id": task_id, "cmd_type": cmd_type}),
                           f"internal error: {exc}")
        if self._unsent(run, outcome):
            return None
        status, result, hold = self._judge(run, outcome)
        dropped = getattr(outcome, "items_dropped", 0)
        if dropped:
            result["items_dropped"] = dropped  # the items in the result are not all of them
        stop = self.manager.stop_reason(run)
        # Replies out of step may be another command's: none of its items are kept, not
        # even in its progress (robot/link/fit.py).
        return Verdict(status, result, outcome.transcript, hold, outcome.message,
                       drop_items=outcome.fault == "out_of_step", stop=stop,
                       robot_error=(status == TaskStatus.FAILED and stop is None
                                    and hold is None and outcome.fault is None
                                    and outcome.sent))

    def _unsent(self, run: Run, outcome: Outcome) -> bool:
        """A link that dropped before the command went out: the robot did nothing, so
        the task is not failed (and the queue not held) but goes back to the head of
        the queue, to run once the robot is back. True if it was put back."""
        if outcome.fault != "disconnected" or outcome.sent:
            return False
        if self.manager.stop_reason(run) is not None or self._stop.is_set():
            return False  # someone wants it stopped anyway: record that instead
        try:
            return self.manager.requeue_unsent(run.task.task_id)
        except StoreWriteError:
            return False

    def _finish(self, task_id: str, status: TaskStatus, result: dict[str, Any],
                transcript: list[dict[str, Any]] | None, hold: Hold | None,
                log_text: str, *, drop_items: bool = False,
                extra: Sequence[Statement] = (), settled: Iterable[str] = ()) -> None:
        # Hold first, then commit the final state: whoever sees the task failed
        # (a poll, a waiter, an event) also sees the queue paused, and a crash in
        # between leaves the task running, which recovery fails and holds anyway.
        if hold is not None and not self.manager.auto_resume:
            self.manager.pause(code=hold[0], params=hold[1])
        while True:
            try:
                self.manager.finish(task_id, status, result, transcript, log_text=log_text,
                                    drop_items=drop_items, extra=extra, settled=settled)
                return
            except StoreWriteError as exc:
                # Without a record of this result no further task may start: hold,
                # and keep trying (a full disk may be cleared). If the server stops
                # first, the task is still `running` on disk and recovery fails it.
                if not self.manager.paused:
                    self.manager.pause(code="hold_result_not_saved",
                                       params={"task_id": task_id,
                                               "error": exc.params["detail"]})
                if self._stop.wait(1.0):
                    log.error("task %s: result not saved at shutdown", task_id)
                    return

    def _judge(self, run: Run,
               outcome: Outcome) -> tuple[TaskStatus, dict[str, Any], Hold | None]:
        """Final status, result and (if the robot's state is unknown) a hold."""
        task_id, cmd_type = run.task.task_id, run.task.cmd_type
        data = self.commands.result_data(cmd_type, outcome.data, outcome.items)
        if outcome.success:
            # The robot's own words, or the guide's "<CMD>完成": never translated.
            return TaskStatus.COMPLETED, {"success": True, "message": outcome.message,
                                          **data}, None
        stop = self.manager.stop_reason(run)
        unknown = fault_hold(outcome.fault, task_id, cmd_type) if outcome.fault else None
        if stop is not None and stop != SHUTDOWN:
            result = {**failure(stop, self.lang), **data}
            if not outcome.aborted:
                result["note"] = t("info.abort_not_confirmed", self.lang,
                                   reason=self._failure_text(outcome))
            return TaskStatus.CANCELLED, result, unknown
        if stop is not None:
            result = {**failure("shutdown_aborted", self.lang), **data}
            if not outcome.aborted:
                # E.g. no answer to STOP within the shutdown's bound: the robot may
                # still be moving, which whoever resumes the queue must know.
                result["note"] = t("info.abort_not_confirmed", self.lang,
                                   reason=self._failure_text(outcome))
            return TaskStatus.FAILED, result, \
                ("hold_shutdown_abort", {"task_id": task_id, "cmd_type": cmd_type})
        code, params = outcome_code(outcome)
        return TaskStatus.FAILED, {**failure(code, self.lang, **params), **data}, unknown

    def _failure_text(self, outcome: Outcome) -> str:
        code, params = outcome_code(outcome)
        return t(f"error.{code}", self.lang, **params)

    def live_transcript(self, task_id: str) -> list[dict[str, Any]] | None:
        """The lines exchanged so far for ``task_id`` while it runs, else None."""
        if self._current != task_id:
            return None
        lines = self.link.live_transcript()
        # The command may have ended between the two reads: its lines are then stored.
        return lines if self._current == task_id else None

    # -- operator actions ---------------------------------------------------------------
    def cancel(self, task_id: str, audit: AuditEntry | None = None) -> str:
        """Cancel a task: "cancelled" now, or "aborting" after STOP was sent."""
        state = self.manager.request_cancel(task_id, audit=audit)
        if state == "aborting":
            self.link.abort()
        return state

    def emergency_stop(self, audit: AuditEntry | None = None) -> dict[str, Any]:
        """STOP first (nothing may delay it), then the bookkeeping."""
        t0 = time.perf_counter()
        # Recorded before STOP goes out, so the aborted result is recognised even if it
        # beats the bookkeeping below.
        self.manager.stops.stop_all(EMERGENCY_STOP)
        sent = self.link.abort()
        stop_ms = (time.perf_counter() - t0) * 1000
        running = self.manager.running_task_id
        if running is not None:
            try:
                self.manager.request_cancel(running, EMERGENCY_STOP)
            except Exception as exc:  # the task may have just finished
                log.info("emergency stop: %s", exc)
        state = self.manager.pause(code=EMERGENCY_STOP, audit=audit)
        log.warning("emergency stop: STOP %s in %.2f ms; running task %s",
                    "sent" if sent else "NOT sent (robot not connected)", stop_ms, running)
        return {"stop_sent": sent, "running_task": running, **state}
