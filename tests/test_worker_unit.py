"""The worker one step at a time, as huey's tests drive ``loop()``: ``run_once()`` is
called in the test's thread against a fake robot port, so there are no threads and no
timing. The fake keeps the one rule of robot.RobotLink that matters here: a command
whose stop epoch is older than the link's is not written to the robot.

The fake port stands in for the robot only; the store is a real SQLite file and the
manager, stop record and worker are the real ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tasks.queue.events import EventBus
from tasks.queue.manager import TaskManager
from tasks.store import TaskStore
from tasks.worker import Worker


@dataclass
class FakeOutcome:
    success: bool
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    fault: str | None = None
    aborted: bool = False
    items: list[dict[str, Any]] = field(default_factory=list)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    sent: bool = True
    code: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


Script = Callable[[str, dict[str, Any]], FakeOutcome]


def _done(cmd: str, params: dict[str, Any]) -> FakeOutcome:
    return FakeOutcome(True, f"{cmd}完成", transcript=[{"dir": "tx", "line": cmd}])


def _stopped(cmd: str) -> FakeOutcome:
    """The robot confirmed a STOP of a command it had received."""
    return FakeOutcome(False, "aborted", aborted=True, code="robot_error",
                       params={"error": "aborted"}, transcript=[{"dir": "tx", "line": cmd}])


def _lost(*, sent: bool) -> FakeOutcome:
    """The link dropped, before (sent=False) or after the command went out."""
    return FakeOutcome(False, "link lost", fault="disconnected", sent=sent,
                       code="robot_disconnected", params={"error": "gone"})


class FakePort:
    """What the worker needs of a robot link (tasks.worker.RobotPort)."""

    handshake_timeout = 5.0

    def __init__(self) -> None:
        self.epoch = 0
        self.ready = True
        self.ready_answers: list[bool] = []  # answered first, one per call, then `ready`
        self.written: list[str] = []  # commands that reached the robot
        self.aborts = 0
        self.confirm_windows: list[float | None] = []  # each abort's confirm_within
        self.gave_up = 0
        self.before_send: Callable[[], None] | None = None  # runs as the bytes would go
        self.script: Script = _done

    @property
    def stop_epoch(self) -> int:
        return self.epoch

    def wait_ready(self, timeout: float | None) -> bool:
        return self.ready_answers.pop(0) if self.ready_answers else self.ready

    def execute(self, cmd: str, params: dict[str, Any] | None = None, *,
                on_progress: Any = None, timeout: float | None = None,
                stop_epoch: int | None = None) -> FakeOutcome:
        if self.before_send is not None:
            hook, self.before_send = self.before_send, None
            hook()
        if stop_epoch is not None and stop_epoch != self.epoch:
            return FakeOutcome(False, "aborted before it was sent", sent=False,
                               code="aborted_unsent")
        outcome = self.script(cmd, params or {})
        if outcome.sent:
            self.written.append(cmd)
        return outcome

    def abort(self, confirm_within: float | None = None) -> bool:
        self.aborts += 1
        self.confirm_windows.append(confirm_within)
        self.epoch += 1
        return True

    def give_up(self) -> bool:
        self.gave_up += 1
        return True

    def live_transcript(self) -> list[dict[str, Any]] | None:
        return None


@pytest.fixture
def rig(tmp_path: Any) -> Any:
    store = TaskStore(str(tmp_path / "tasks.db"))
    store.open()
    manager = TaskManager(store, EventBus())
    manager.recover()
    port = FakePort()
    worker = Worker(manager, port, poll_interval=0.01)
    yield manager, port, worker
    store.close()


def _submit(manager: TaskManager, cmd: str = "HOME") -> str:
    return manager.submit(cmd, {}).task["task_id"]


def _status(manager: TaskManager, task_id: str) -> dict[str, Any]:
    doc = manager.get(task_id)
    assert doc is not None
    return doc


def test_a_task_runs_once_and_completes(rig: Any) -> None:
    manager, port, worker = rig
    task_id = _submit(manager)
    assert worker.run_once() is True
    doc = _status(manager, task_id)
    assert doc["status"] == "completed" and doc["result"]["message"] == "HOME完成"
    assert port.written == ["HOME"]
    assert worker.run_once() is False  # nothing left: the step returns, nothing is sent
    assert port.written == ["HOME"]


def test_cancel_while_pending_never_reaches_the_robot(rig: Any) -> None:
    manager, port, worker = rig
    task_id = _submit(manager)
    assert worker.cancel(task_id) == "cancelled"
    assert worker.run_once() is False
    assert _status(manager, task_id)["status"] == "cancelled"
    assert port.written == [] and port.aborts == 0


def test_cancel_between_running_and_send_keeps_the_command_off_the_wire(rig: Any) -> None:
    manager, port, worker = rig
    task_id = _submit(manager)
    states: list[str] = []
    # The operator's cancel lands after `running` is committed, before the bytes go out.
    port.before_send = lambda: states.append(worker.cancel(task_id))
    assert worker.run_once() is True
    assert states == ["aborting"] and port.aborts == 1
    doc = _status(manager, task_id)
    assert doc["status"] == "cancelled" and doc["result"]["code"] == "cancelled"
    assert port.written == []  # the STOP epoch kept it off the wire
    assert not manager.paused  # nothing ran: the robot's state is known


def test_a_stop_before_the_task_started_does_not_stop_it(rig: Any) -> None:
    manager, port, worker = rig
    worker.emergency_stop()  # nothing running: only the hold remains
    assert manager.pause_code == "emergency_stop" and port.aborts == 1
    manager.resume()
    task_id = _submit(manager)
    assert worker.run_once() is True
    assert _status(manager, task_id)["status"] == "completed"
    assert port.written == ["HOME"]


def test_an_emergency_stop_during_the_run_cancels_and_holds(rig: Any) -> None:
    manager, port, worker = rig
    first, second = _submit(manager), _submit(manager, "SCAN_QRCODE")

    def stopped(cmd: str, params: dict[str, Any]) -> FakeOutcome:
        worker.emergency_stop()  # while the robot moves
        return _stopped(cmd)

    port.script = stopped
    assert worker.run_once() is True
    doc = _status(manager, first)
    assert doc["status"] == "cancelled" and doc["result"]["code"] == "emergency_stop"
    assert "note" not in doc["result"]  # the robot confirmed the stop
    assert manager.paused and manager.pause_code == "emergency_stop"
    port.script = _done
    assert worker.run_once() is False  # held: the next task waits for the operator
    assert _status(manager, second)["status"] == "pending"


def test_an_unsent_command_goes_back_to_the_head_and_runs_once(rig: Any) -> None:
    manager, port, worker = rig
    first, second = _submit(manager), _submit(manager, "SCAN_QRCODE")
    port.script = lambda cmd, params: _lost(sent=False)
    assert worker.run_once() is True
    doc = _status(manager, first)
    assert doc["status"] == "pending" and doc["start_time"] is None
    assert manager.queue_status()["pending"] == [first, second]  # first in line again
    assert not manager.paused and port.written == []
    port.script = _done
    assert worker.run_once() is True
    assert _status(manager, first)["status"] == "completed"
    assert port.written == ["HOME"]  # once, never repeated


def test_a_command_lost_after_it_was_sent_fails_and_holds(rig: Any) -> None:
    manager, port, worker = rig
    task_id = _submit(manager)
    port.script = lambda cmd, params: _lost(sent=True)
    assert worker.run_once() is True
    assert _status(manager, task_id)["status"] == "failed"  # never re-run behind anyone's back
    assert manager.pause_code == "hold_disconnected"


def test_an_unsent_command_cancelled_meanwhile_is_not_requeued(rig: Any) -> None:
    manager, port, worker = rig
    task_id = _submit(manager)

    def lost(cmd: str, params: dict[str, Any]) -> FakeOutcome:
        worker.cancel(task_id)
        return _lost(sent=False)

    port.script = lost
    assert worker.run_once() is True
    assert _status(manager, task_id)["status"] == "cancelled"
    assert manager.queue_status()["pending"] == []


def test_shutdown_abort_fails_the_task_and_holds_the_queue(rig: Any) -> None:
    manager, port, worker = rig
    task_id = _submit(manager)

    def outlived_the_grace(cmd: str, params: dict[str, Any]) -> FakeOutcome:
        worker.abort_for_shutdown()
        return _stopped(cmd)

    port.script = outlived_the_grace
    assert worker.run_once() is True
    doc = _status(manager, task_id)
    assert doc["status"] == "failed" and doc["result"]["code"] == "shutdown_aborted"
    assert manager.pause_code == "hold_shutdown_abort"


def test_an_operator_cancel_wins_over_a_later_shutdown(rig: Any) -> None:
    manager, port, worker = rig
    task_id = _submit(manager)

    def both(cmd: str, params: dict[str, Any]) -> FakeOutcome:
        worker.cancel(task_id)
        worker.abort_for_shutdown()
        return _stopped(cmd)

    port.script = both
    worker.run_once()
    assert _status(manager, task_id)["result"]["code"] == "cancelled"


def test_a_stopped_worker_takes_nothing_more(rig: Any) -> None:
    manager, port, worker = rig
    task_id = _submit(manager)
    worker.stop(grace=0)  # never started: returns at once, idle
    assert worker.run_once() is False
    assert _status(manager, task_id)["status"] == "pending" and port.written == []


def test_a_link_that_dropped_while_waiting_leaves_the_task_first(rig: Any) -> None:
    manager, port, worker = rig
    first, second = _submit(manager), _submit(manager)
    port.ready_answers = [True, False]  # up when the step began, down once it took a task
    assert worker.run_once() is False
    assert manager.queue_status()["pending"] == [first, second] and port.written == []
    assert worker.run_once() is True
    assert _status(manager, first)["status"] == "completed"
    assert _status(manager, second)["status"] == "pending"


def test_a_write_that_fails_changes_nothing_and_says_which_kind(rig: Any) -> None:
    from server.errors import from_task_error
    from tasks.errors import NotAccepted, StoreWriteError

    manager, port, worker = rig
    task_id = _submit(manager)
    manager.pause("for the test")
    manager.store.close()  # every write now fails as on a broken disk
    with pytest.raises(NotAccepted) as refused:
        manager.submit("HOME", {})
    assert refused.value.code == "not_accepted" and isinstance(refused.value, StoreWriteError)
    with pytest.raises(StoreWriteError) as failed:
        manager.resume()
    assert failed.value.code == "not_saved" and manager.paused  # still held
    with pytest.raises(StoreWriteError):
        manager.request_cancel(task_id)
    assert list(manager.state.pending) == [task_id]  # still queued
    for exc, code in ((refused.value, "not_accepted"), (failed.value, "not_saved")):
        reply = from_task_error(exc)
        assert (reply.status, reply.code, reply.headers) == (503, code, {"Retry-After": "5"})
        assert str(exc) in reply.text("en")
