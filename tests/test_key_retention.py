"""Idempotency keys live as long as their task (issue 27): a held queue over a weekend,
a forward clock correction, and which keys a prune deletes.

The server's own pruner first runs a minute after start-up, later than any test here
lasts; each test drives a `Pruner` on the running server's store with injected clocks
instead, so it can move the wall clock, the steady clock or both.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from typing import Any

import pytest

from server.runtime import RobotServer
from tasks.queue.manager import body_hash
from tasks.store import NewTask, TaskStore
from tasks.store.housekeeping import STEADY_S, Pruner
from tests.conftest import Client, wait_until

HOUR = 3600.0
DAY = 86400.0


class Clocks:
    """The pruner's clocks: real time plus what a test adds. `elapse` is time really
    passing (both clocks move); `set_wall` is someone changing the PC's clock."""

    def __init__(self) -> None:
        self.wall_offset = 0.0
        self.steady_offset = 0.0

    def wall(self) -> float:
        return time.time() + self.wall_offset

    def mono(self) -> float:
        return time.monotonic() + self.steady_offset

    def elapse(self, seconds: float) -> None:
        self.wall_offset += seconds
        self.steady_offset += seconds

    def set_wall(self, seconds: float) -> None:
        self.wall_offset += seconds


def scan(rack: str) -> dict[str, Any]:
    return {"cmd_type": "SCAN_QRCODE", "params": {"rack": rack, "positions": [1, 2]}}


def submit(client: Client, rack: str, key: str) -> tuple[str, bool]:
    """(task_id, replayed) of a submit with an Idempotency-Key."""
    r = client.post("/", scan(rack), headers={"Idempotency-Key": key})
    assert r.status_code == 202, r.text
    return r.json()["task_id"], r.headers.get("Idempotent-Replayed") == "true"


def scans_per_rack(server: RobotServer) -> Counter[str]:
    assert server.simulator is not None
    return Counter(c["params"]["rack"] for c in server.simulator.commands()
                   if c.get("cmd") == "SCAN_QRCODE")


def pruner_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "tasks.housekeeping" and r.levelno >= logging.WARNING]


def pruner_for(server: RobotServer, keep_days: float, clocks: Clocks) -> Pruner:
    assert server.store is not None
    return Pruner(server.store, keep_days, wall=clocks.wall, mono=clocks.mono)


def test_weekend_hold_keeps_the_keys_of_held_tasks(make_server, caplog) -> None:
    server = make_server(keep_days=1.0)
    client = Client(server)
    assert server.store is not None
    friday, _ = submit(client, "FRI", "friday-FRI")
    client.wait_final(friday)
    assert client.post("/queue/pause").status_code == 200
    racks = [f"R{n}" for n in range(1, 6)]
    held = {rack: submit(client, rack, f"weekend-{rack}")[0] for rack in racks}

    clocks = Clocks()
    pruner = pruner_for(server, 1.0, clocks)
    clocks.elapse(60 * HOUR)  # a real weekend: both clocks moved, no jump
    with caplog.at_level(logging.WARNING, logger="tasks.housekeeping"):
        assert pruner.run_once() == 1  # Friday's finished task, 60 h old
    assert not pruner_warnings(caplog)
    # The store, not GET /task: the views keep a bounded cache of finished documents.
    assert server.store.get(friday) is None
    assert server.store.idempotent_task("friday-FRI") is None

    # Monday: every client re-sends its submit; each gets its original task back.
    for rack in racks:
        assert submit(client, rack, f"weekend-{rack}") == (held[rack], True)
    assert client.status()["pending"] == list(held.values())

    assert client.post("/queue/resume").status_code == 200
    for task_id in held.values():
        assert client.wait_final(task_id)["status"] == "completed"
    assert scans_per_rack(server) == Counter({rack: 1 for rack in ["FRI", *racks]})


def test_clock_correction_holds_pruning_for_an_hour(make_server, caplog) -> None:
    server = make_server()
    client = Client(server)
    assert server.store is not None and server.simulator is not None
    done = {f"D{n}": submit(client, f"D{n}", f"key-D{n}")[0] for n in range(1, 4)}
    for task_id in done.values():
        client.wait_final(task_id)
    # A scan that takes 20 s, heartbeats keeping the link alive: running while we look.
    server.simulator.set_fault("heartbeat_only")
    running, _ = submit(client, "RUN", "key-RUN")
    wait_until(lambda: client.task(running)["status"] == "running", message="running")
    assert client.post("/queue/pause").status_code == 200
    pending = {f"P{n}": submit(client, f"P{n}", f"key-P{n}")[0] for n in range(1, 3)}
    live = {"RUN": running, **pending}

    clocks = Clocks()
    pruner = pruner_for(server, 30.0, clocks)  # the default --keep-days
    clocks.elapse(HOUR)
    assert pruner.run_once() == 0  # nothing is 30 days old yet
    clocks.set_wall(40 * DAY)  # the PC's clock, 40 days behind, is corrected
    with caplog.at_level(logging.WARNING, logger="tasks.housekeeping"):
        assert pruner.run_once() == 0
    warnings = pruner_warnings(caplog)
    assert len(warnings) == 1 and "jumped 960.0 h ahead" in warnings[0], warnings
    for rack, task_id in {**done, **live}.items():
        assert submit(client, rack, f"key-{rack}") == (task_id, True)
        assert server.store.get(task_id) is not None

    clocks.elapse(STEADY_S / 2)
    assert pruner.run_once() == 0  # still held: only half an hour of steady clock
    assert pruner.hold_remaining() == pytest.approx(STEADY_S / 2, abs=5)
    caplog.clear()
    clocks.elapse(STEADY_S / 2)
    with caplog.at_level(logging.WARNING, logger="tasks.housekeeping"):
        assert pruner.run_once() == len(done)  # the correction is now believed
    assert not pruner_warnings(caplog)
    for rack, task_id in done.items():
        assert server.store.get(task_id) is None
        assert server.store.idempotent_task(f"key-{rack}") is None
    for rack, task_id in live.items():
        assert server.store.idempotent_task(f"key-{rack}") == task_id
        assert submit(client, rack, f"key-{rack}") == (task_id, True)

    server.simulator.set_fault(None)
    assert client.post(f"/task/{running}/cancel").status_code in (200, 202)
    assert client.wait_final(running)["status"] == "cancelled"
    assert client.post("/queue/resume").status_code == 200
    for task_id in pending.values():
        assert client.wait_final(task_id)["status"] == "completed"
    assert scans_per_rack(server) == Counter({rack: 1 for rack in [*done, *live]})


def test_a_second_jump_restarts_the_hold_and_a_backward_one_prunes(tmp_path, caplog) -> None:
    store = TaskStore(str(tmp_path / "jumps.db"))
    store.open()
    try:
        old = time.time() - 40 * DAY
        _finished(store, "task_old", old, old)
        clocks = Clocks()
        pruner = Pruner(store, 30.0, wall=clocks.wall, mono=clocks.mono)
        clocks.set_wall(2 * HOUR)
        assert pruner.run_once() == 0
        clocks.elapse(STEADY_S - 60)
        clocks.set_wall(2 * HOUR)  # another jump inside the hold: a new hour starts
        assert pruner.run_once() == 0
        clocks.elapse(STEADY_S - 60)
        assert pruner.run_once() == 0 and pruner.hold_remaining() > 0
        clocks.elapse(60)
        clocks.set_wall(-3 * HOUR)  # backwards: logged, and pruning goes on
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tasks.housekeeping"):
            assert pruner.run_once() == 1
        assert ["went back 3.0 h" in w for w in pruner_warnings(caplog)] == [True]
        # A small step (NTP) is no jump.
        _finished(store, "task_old2", old, old)
        clocks.set_wall(30.0)
        assert pruner.run_once() == 1
    finally:
        store.close()


def test_the_background_thread_waits_out_the_hold(tmp_path, caplog) -> None:
    store = TaskStore(str(tmp_path / "thread.db"))
    store.open()
    clocks = Clocks()
    pruner = Pruner(store, 30.0, interval=0.02, wall=clocks.wall, mono=clocks.mono)
    try:
        yesterday = time.time() - DAY
        _finished(store, "task_recent", yesterday, yesterday)
        clocks.set_wall(40 * DAY)
        with caplog.at_level(logging.DEBUG, logger="tasks.housekeeping"):
            pruner.start()
            held = wait_until(lambda: pruner.hold_remaining() > 0, message="a held pass")
            wait_until(lambda: sum("held" in r.getMessage() for r in caplog.records) >= 3,
                       message="three held passes")
            assert held and store.get("task_recent") is not None
            clocks.elapse(STEADY_S)  # an hour of steady clock
            wait_until(lambda: store.get("task_recent") is None, message="the prune")
        assert len(pruner_warnings(caplog)) == 1  # one warning per jump, not per pass
    finally:
        pruner.stop()
        store.close()


def _insert(store: TaskStore, task_id: str, key: str, submitted: float) -> None:
    params = {"rack": task_id, "positions": [1]}
    assert store.insert(NewTask(task_id, "SCAN_QRCODE", params, submitted,
                                idempotency_key=key,
                                body_hash=body_hash("SCAN_QRCODE", params))).created


def _finished(store: TaskStore, task_id: str, submitted: float, ended: float,
              status: str = "completed") -> None:
    _insert(store, task_id, f"key-{task_id}", submitted)
    assert store.mark_running(task_id, submitted) is not None
    assert store.finish(task_id, status, ended, {"success": True, "message": "ok"})


def test_which_keys_a_prune_deletes(tmp_path) -> None:
    path = str(tmp_path / "keys.db")
    store = TaskStore(path)
    store.open()
    try:
        now = time.time()
        cutoff = now - 30 * DAY
        _finished(store, "old_done", now - 41 * DAY, now - 40 * DAY)
        _finished(store, "old_failed", now - 41 * DAY, now - 40 * DAY, "failed")
        # Held for six weeks, finished an hour ago: its finish time decides, not its age.
        _finished(store, "held_then_done", now - 42 * DAY, now - HOUR)
        _insert(store, "old_pending", "key-old_pending", now - 60 * DAY)
        _insert(store, "old_running", "key-old_running", now - 60 * DAY)
        assert store.mark_running("old_running", now - 59 * DAY) is not None
        # Keys whose tasks are gone (deleted outside the server): old, and recent.
        _insert(store, "gone_old", "key-gone_old", now - 2 * DAY)
        _insert(store, "gone_recent", "key-gone_recent", now - HOUR)
        with sqlite3.connect(path) as other:
            other.execute("DELETE FROM tasks WHERE task_id IN (?, ?)",
                          ("gone_old", "gone_recent"))
        other.close()

        assert store.prune(cutoff, now=now) == 2
        assert store.get("old_done") is None and store.get("old_failed") is None
        for gone in ("old_done", "old_failed", "gone_old"):
            assert store.idempotent_task(f"key-{gone}") is None, gone
        # Kept: a day after the task ended at least, and as long as the task.
        for kept in ("held_then_done", "old_pending", "old_running", "gone_recent"):
            assert store.idempotent_task(f"key-{kept}") == kept, kept

        # Even a cutoff in the far future (any clock) leaves unfinished tasks' keys.
        assert store.prune(now + 365 * DAY, now=now + 366 * DAY) == 1
        assert store.idempotent_task("key-held_then_done") is None
        assert store.idempotent_task("key-gone_recent") is None
        for kept in ("old_pending", "old_running"):
            assert store.idempotent_task(f"key-{kept}") == kept, kept
    finally:
        store.close()


def test_short_keep_days_keep_a_key_a_day_after_its_task_is_pruned(tmp_path) -> None:
    store = TaskStore(str(tmp_path / "short.db"))
    store.open()
    try:
        now = time.time()
        _finished(store, "t13h", now - 14 * HOUR, now - 13 * HOUR)
        assert store.prune(now - 0.5 * DAY, now=now) == 1  # --keep-days 0.5
        assert store.get("t13h") is None
        assert store.idempotent_task("key-t13h") == "t13h"  # a replay still answers
        later = now + 12 * HOUR  # the key is now 26 h old and its task gone
        assert store.prune(later - 0.5 * DAY, now=later) == 0
        assert store.idempotent_task("key-t13h") is None
    finally:
        store.close()
