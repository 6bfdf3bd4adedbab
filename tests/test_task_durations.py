"""How long a task ran is measured on the monotonic clock, while its start and end times
stay the wall clock's readings (the user guide's format): a wall-clock step during a
task (NTP, an operator) no longer stores a negative duration with an end before its
start.

The wall clock is moved through the manager's injectable `wall`; everything else is
real: the server, HTTP on loopback, the simulator on a pty, the SQLite file.
"""

from __future__ import annotations

import math
import sqlite3
import time
from datetime import datetime
from typing import Any

import pytest

from tasks.models import TaskStatus
from tasks.queue.events import EventBus
from tasks.queue.manager import TaskManager
from tasks.store import TaskStore
from tests.conftest import Client, wait_until

STEP = -7200.0  # the wall clock set back two hours while the task runs
SCAN_9 = {"cmd_type": "SCAN_QRCODE", "params": {"rack": "D", "positions": list(range(1, 10))}}
PER_BOTTLE = 20.0 / 200.0  # robot/sim/engine.py SCAN_PER_BOTTLE at --sim-speed 200


class SteppedWall:
    """time.time(), plus an offset the test changes: a wall clock that can be stepped."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _parse(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").timestamp()


def _duration_metric(client: Client, cmd_type: str) -> tuple[float, float]:
    """(sum, count) of robot_task_duration_seconds for ``cmd_type``."""
    values: dict[str, float] = {}
    for line in client.get("/metrics").text.splitlines():
        for kind in ("sum", "count"):
            head = f'robot_task_duration_seconds_{kind}{{cmd_type="{cmd_type}"}} '
            if line.startswith(head):
                values[kind] = float(line[len(head):])
    return values["sum"], values["count"]


def test_a_wall_clock_step_during_a_task_keeps_its_duration_true(make_server) -> None:
    server = make_server()
    wall = SteppedWall()
    assert server.manager is not None
    server.manager.wall = wall
    client = Client(server)
    t0 = time.monotonic()
    task_id = client.submit(SCAN_9)
    wait_until(lambda: client.task(task_id)["status"] == "running", 10, message="running")
    wall.offset = STEP
    doc = client.wait_final(task_id)
    elapsed = time.monotonic() - t0
    assert doc["status"] == "completed", doc

    duration = doc["duration_s"]
    # What the robot took (nine bottles) at least, and no more than the test waited.
    assert 9 * PER_BOTTLE * 0.8 <= duration <= elapsed + 0.01, (duration, elapsed)
    # The guide's times are the wall clock's, step and all: the end reads before the start.
    shown = _parse(doc["end_time"]) - _parse(doc["start_time"])
    assert abs(shown - (STEP + duration)) <= 2.0, (doc["start_time"], doc["end_time"])
    assert set(doc["result"]) == {"success", "message", "scanned_count", "scanned_bottles"}
    # The metrics' histogram had it too (a negative duration used to be left out).
    total, count = _duration_metric(client, "SCAN_QRCODE")
    assert count == 1 and math.isclose(total, duration, abs_tol=0.001)

    # Stored: after a restart, read back from the file, not from the first server's memory.
    server.stop()
    again = Client(make_server())
    stored = again.task(task_id)
    assert stored["duration_s"] == duration and stored["end_time"] == doc["end_time"]
    assert stored["result"] == doc["result"]
    listed = again.get("/tasks").json()
    row = next(t for t in listed["tasks"] if t["task_id"] == task_id)
    assert row["duration_s"] == duration
    # The ETA learns the stored monotonic duration after a restart, not the negative
    # wall-clock difference.
    assert again.server.manager.views._mean("SCAN_QRCODE") == pytest.approx(duration, abs=0.001)


def test_a_task_interrupted_by_a_crash_never_gets_a_negative_duration(tmp_path) -> None:
    """Recovered after a restart there is no monotonic start: the wall-clock difference
    is kept, but a clock set back across the restart gives 0, never less."""
    db = str(tmp_path / "tasks.db")
    wall = SteppedWall()
    store = TaskStore(db)
    store.open()
    manager = TaskManager(store, EventBus(), wall=wall)
    manager.recover()
    task_id = manager.submit("HOME", {}).task["task_id"]
    assert manager.start(task_id, lambda: 0) is not None
    store.close()  # the process "dies" with the task running

    wall.offset = STEP
    store = TaskStore(db)
    store.open()
    try:
        again = TaskManager(store, EventBus(), wall=wall)
        assert again.recover() == [task_id]
        doc = again.get(task_id)
        assert doc is not None and doc["status"] == "failed"
        assert doc["result"]["code"] == "interrupted"
        assert doc["duration_s"] == 0.0
        assert _parse(doc["end_time"]) < _parse(doc["start_time"])  # as the clocks said
    finally:
        store.close()


def test_a_task_cancelled_while_running_is_timed_on_the_monotonic_clock(tmp_path) -> None:
    wall = SteppedWall()
    store = TaskStore(str(tmp_path / "tasks.db"))
    store.open()
    try:
        manager = TaskManager(store, EventBus(), wall=wall)
        manager.recover()
        task_id = manager.submit("HOME", {}).task["task_id"]
        began = time.monotonic()
        assert manager.start(task_id, lambda: 0) is not None
        wall.offset = -STEP  # forward this time: two hours that did not pass
        doc = manager.finish(task_id, TaskStatus.CANCELLED, {"success": False, "code": "x"})
        assert doc is not None
        assert 0 <= doc["duration_s"] <= time.monotonic() - began + 0.001
        assert manager.get(task_id) == doc
        row = store.get(task_id)
        assert row is not None and row.to_dict()["duration_s"] == doc["duration_s"]
    finally:
        store.close()


@pytest.mark.parametrize("stored", ["soon", -1, None])
def test_a_stored_run_time_that_is_no_duration_is_ignored(tmp_path, stored: Any) -> None:
    """tasks.run_s as a file might hold it (another writer, a hand edit): read back, a
    value that is no duration falls back to the wall-clock difference, never below 0."""
    db = str(tmp_path / "tasks.db")
    store = TaskStore(db)
    store.open()  # the schema, run_s included
    store.close()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO tasks(task_id, cmd_type, params, status, submitted, started, "
                     "ended, result, run_s) VALUES ('t', 'HOME', '{}', 'completed', 100, 200, "
                     "150, '{\"success\": true}', ?)", (stored,))
    conn.close()
    store = TaskStore(db)
    store.open()
    try:
        row = store.get("t")
        assert row is not None
        doc = row.to_dict()
        assert doc["duration_s"] == 0.0 and doc["result"] == {"success": True}, doc
    finally:
        store.close()
