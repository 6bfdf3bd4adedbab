"""The SQLite store on disk: write failures, foreign files, pruning."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from tasks.errors import IdempotencyConflict, StoreError, StoreWriteError
from tasks.models import TaskStatus
from tasks.store import Inserted, NewTask, TaskStore
from tests.conftest import SCAN, Client, wait_until


def _task(n: int, submitted: float | None = None) -> NewTask:
    return NewTask(f"task_x_{n:06d}", "PING", {}, submitted or time.time())


def test_locked_database_answers_503_and_no_task_id(make_server, tmp_path) -> None:
    db = str(tmp_path / "locked.db")
    server = make_server(db=db, db_busy_timeout=0.3)
    client = Client(server)
    # Another program holds the write lock: a real SQLITE_BUSY for the server.
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        r = client.post("/", SCAN)
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["success"] is False and "task_id" not in body
        assert "Retry-After" in r.headers
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert client.status()["total_tasks"] == 0
    assert client.post("/", SCAN).status_code == 202


def test_read_only_file_is_refused_or_503(make_server, tmp_path) -> None:
    db = tmp_path / "ro.db"
    make_server(db=str(db)).stop()
    os.chmod(db, 0o444)
    if os.access(db, os.W_OK):
        pytest.skip("running as root: file modes do not stop writes (covered by the lock test)")
    server = make_server(db=str(db))
    r = Client(server).post("/", SCAN)
    assert r.status_code == 503 and "task_id" not in r.json()


def test_foreign_sqlite_file_is_refused(tmp_path) -> None:
    path = str(tmp_path / "other.db")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a robot task database"):
        TaskStore(path).open()


def test_corrupt_file_is_refused(tmp_path) -> None:
    path = tmp_path / "bad.db"
    path.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(StoreError, match=str(path)):
        TaskStore(str(path)).open()


def test_prune_keeps_unfinished_tasks(tmp_path) -> None:
    store = TaskStore(str(tmp_path / "p.db"))
    store.open()
    old = time.time() - 40 * 86400
    for n in range(3):
        store.insert(_task(n, old))
    store.mark_running("task_x_000000", old)
    store.finish("task_x_000000", "completed", old, {"success": True, "message": "ok"})
    store.mark_running("task_x_000001", old)  # still running: must survive
    assert store.prune(time.time() - 30 * 86400) == 1
    assert store.get("task_x_000000") is None
    running, pending = store.get("task_x_000001"), store.get("task_x_000002")
    assert running is not None and running.status is TaskStatus.RUNNING
    assert pending is not None and pending.status is TaskStatus.PENDING
    store.close()


def test_insert_answers_the_seq_and_a_replay_the_originals(tmp_path) -> None:
    store = TaskStore(str(tmp_path / "s.db"))
    store.open()
    try:
        first = store.insert(NewTask("task_x_a", "PING", {}, time.time(),
                                     idempotency_key="k", body_hash="h"))
        second = store.insert(_task(2))
        replay = store.insert(NewTask("task_x_b", "PING", {}, time.time(),
                                      idempotency_key="k", body_hash="h"))
        assert first == Inserted("task_x_a", True, first.seq) and second.seq > first.seq
        assert replay == Inserted("task_x_a", False, first.seq)
        with pytest.raises(IdempotencyConflict) as conflict:
            store.insert(NewTask("task_x_c", "PING", {}, time.time(),
                                 idempotency_key="k", body_hash="other"))
        assert conflict.value.task_id == "task_x_a"
        assert [(t.task_id, t.seq) for t in store.unfinished()] == [
            ("task_x_a", first.seq), ("task_x_000002", second.seq)]
        assert [t.seq for t in store.list()] == [second.seq, first.seq]
        started = store.mark_running("task_x_a", time.time())
        assert started is not None and started.status is TaskStatus.RUNNING
        assert store.count(status=TaskStatus.RUNNING) == store.count(status="running") == 1
        assert store.finish("task_x_a", TaskStatus.COMPLETED, time.time(), {"success": True},
                            only_if=(TaskStatus.RUNNING,))
        assert store.status_counts() == {"completed": 1, "pending": 1}
    finally:
        store.close()


def test_a_stored_status_that_is_no_status_reads_as_failed(tmp_path) -> None:
    path = str(tmp_path / "b.db")
    store = TaskStore(path)
    store.open()
    store.insert(_task(1))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("UPDATE tasks SET status = 'exploded'")
    other.close()
    try:
        task = store.get("task_x_000001")
        assert task is not None and task.status is TaskStatus.FAILED
    finally:
        store.close()


def test_closed_store_write_raises_store_write_error(tmp_path) -> None:
    store = TaskStore(str(tmp_path / "c.db"))
    store.open()
    store.close()
    with pytest.raises(StoreWriteError):
        store.insert(_task(1))


def test_unsaved_result_holds_the_queue_until_it_is_saved(make_server, tmp_path) -> None:
    db = str(tmp_path / "full.db")
    server = make_server(db=db, db_busy_timeout=0.2, sim_speed=20.0)
    client = Client(server)
    task_id = client.submit()
    after = client.submit({"cmd_type": "PING"})
    wait_until(lambda: client.task(task_id)["status"] == "running", 10, message="running")
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the disk is "full" for the server from now on
    try:
        status = wait_until(lambda: (s := client.status())["paused"] and s, 15,
                            message="the hold")
        assert "cannot be saved" in status["pause_reason"]
        assert client.task(after)["status"] == "pending"  # nothing new starts meanwhile
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert client.wait_final(task_id)["status"] == "completed"  # saved on a retry
    assert client.task(after)["status"] == "pending"  # still held until resumed
