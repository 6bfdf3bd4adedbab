"""Issue 18, the submit path and pre-encoded replies: task ids from a bulk draw, the
store's group commit without an Event per submit, the 202 from the manager's counters,
one log record per submit, and the byte-identical cached bodies of GET /task and
GET /queue/status."""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import threading
import time
from typing import Any

import pytest

import tasks.queue.views as views_module
from i18n import t
from tasks.models import TaskStatus, format_time, new_task_id
from tasks.queue.events import EventBus
from tasks.queue.manager import TaskManager
from tasks.queue.state import QueueState
from tasks.store import NewTask, TaskStore
from tests.conftest import SCAN, Client, wait_until

TASK_ID = re.compile(r"^task_\d{8}_\d{6}_[0-9a-z]{6}$")


def _json(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


# -- task ids ----------------------------------------------------------------------------
def test_ids_from_many_threads_are_well_formed_and_unique_to_the_birthday_bound() -> None:
    ids: list[str] = []
    lock = threading.Lock()
    now = time.time()  # one second for all: only the suffix tells them apart

    def draw() -> None:
        mine = [new_task_id(now) for _ in range(25_000)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 100_000
    assert all(TASK_ID.match(i) for i in ids)
    assert {i[5:20] for i in ids} == {time.strftime("%Y%m%d_%H%M%S", time.localtime(now))}
    # 100k draws from 36**6 suffixes repeat about n**2 / (2 * 36**6) = 2.3 times by
    # chance; a pool handed out twice (a race, a refill bug) repeats thousands of times.
    assert len(ids) - len(set(ids)) < 20
    # Every character at every position about equally often (2778 expected each).
    for position in range(21, 27):
        counts = collections.Counter(i[position] for i in ids)
        assert len(counts) == 36
        assert all(2300 < n < 3300 for n in counts.values()), (position, counts)


def test_ids_and_guide_times_match_strftime_at_every_fraction() -> None:
    base = float(int(time.time()))
    for ts in (base, base + 0.001, base + 0.5, base + 0.999, base + 1.0, base - 0.25,
               1.5, 86399.9999):
        assert format_time(ts) == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
        assert new_task_id(ts)[5:20] == time.strftime("%Y%m%d_%H%M%S", time.localtime(ts))
    assert format_time(None) is None
    assert TASK_ID.match(new_task_id())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_does_not_reuse_the_parents_ids() -> None:
    new_task_id()  # the pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.write(write, "\n".join(new_task_id()[-6:] for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, encoding="ascii") as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_task_id()[-6:] for _ in range(50)}
    assert len(child) == 50 and not child & parent


# -- the store's group commit ---------------------------------------------------------------
def test_a_batch_commits_everyone_queued_behind_the_lock_once(tmp_path) -> None:
    store = TaskStore(str(tmp_path / "t.db"))
    store.open()
    seen: list[str] = []  # the COMMITs
    assert store._writer is not None
    store._writer.set_trace_callback(
        lambda sql: seen.append("COMMIT") if sql == "COMMIT" else None)
    results: dict[int, Any] = {}

    def submit(n: int) -> None:
        task = NewTask(f"task_batch_{n:02d}", "PING", {"n": n}, time.time())
        results[n] = store.insert(task)

    try:
        with store._write_lock:  # everyone queues up behind a commit in progress
            threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            wait_until(lambda: len(store._inserts.pending) == 8, 5, message="8 queued inserts")
        for thread in threads:
            thread.join(10)
        assert sorted(results) == list(range(8))
        assert all(results[n][:2] == (f"task_batch_{n:02d}", True) for n in range(8))
        # One transaction for all eight, and each submit told its row's seq.
        assert seen == ["COMMIT"]
        stored = {task.task_id: task.seq for task in store.list(limit=10)}
        assert stored == {results[n].task_id: results[n].seq for n in range(8)}
        assert len(set(stored.values())) == 8
    finally:
        store.close()


def test_submits_queued_out_of_commit_order_still_run_in_seq_order() -> None:
    # Two submits committed in one batch may reach the queue the other way round: the
    # FIFO and the pending list follow the store's seq, not the arrival.
    state = QueueState()
    with state.lock:
        assert state.add_pending("task_b", 6, "PING") == 1
        assert state.add_pending("task_a", 5, "PING") == 1
        assert state.add_pending("task_c", 7, "PING") == 3
    assert list(state.pending) == ["task_a", "task_b", "task_c"]
    assert [state.take(0) for _ in range(3)] == ["task_a", "task_b", "task_c"]
    with state.lock:
        state.put_back("task_b")  # taken, not started: first again
        state.add_pending("task_d", 8, "PING")
    assert state.take(0) == "task_b"


# -- the manager: cached documents and their bytes ------------------------------------------
@pytest.fixture
def manager(tmp_path) -> Any:
    store = TaskStore(str(tmp_path / "m.db"))
    store.open()
    mgr = TaskManager(store, EventBus())
    mgr.recover()
    yield mgr
    store.close()


def _run_to_end(mgr: TaskManager, n: int) -> str:
    task_id = mgr.submit("PING", {"n": n, "text": "完成"}).task["task_id"]
    assert mgr.take(1.0) == task_id and mgr.start(task_id, lambda: 0) is not None
    mgr.finish(task_id, TaskStatus.COMPLETED, {"success": True, "message": f"第{n}个完成"})
    return task_id


def test_finished_documents_and_bytes_stay_bounded_and_equal(manager, monkeypatch) -> None:
    monkeypatch.setattr(views_module, "FINAL_CACHE_SIZE", 3)
    ids = [_run_to_end(manager, n) for n in range(5)]
    for task_id in ids:
        doc, encoded = manager.get_with_json(task_id)
        assert doc is not None and doc["status"] == "completed"
        assert encoded == _json(doc) and "完成".encode() in encoded
        assert manager.get(task_id) == doc
        assert len(manager.views._final_docs) <= 3
    assert list(manager.views._final_docs) == ids[-3:]


def test_unfinished_and_unknown_tasks_have_no_bytes(manager) -> None:
    task_id = manager.submit("PING", {}).task["task_id"]
    doc, encoded = manager.get_with_json(task_id)
    assert doc is not None and doc["status"] == "pending" and encoded is None
    assert manager.get_with_json("task_20000101_000000_zzzzzz") == (None, None)


def test_queue_status_bytes_are_cached_per_version_and_recent(manager, monkeypatch) -> None:
    _run_to_end(manager, 1)
    manager.submit("PING", {})
    builds = []
    build = manager.views._queue_status
    monkeypatch.setattr(manager.views, "_queue_status",
                        lambda *a: builds.append(a) or build(*a))
    encoded = manager.queue_status(10, encoded=True)
    doc = manager.queue_status(10)
    assert encoded == _json(doc) and len(builds) == 1
    doc["queue_size"] = 99  # a caller's copy: the cache must not see it
    assert manager.queue_status(10, encoded=True) is encoded and len(builds) == 1
    assert manager.queue_status(0, encoded=True) == _json(manager.queue_status(0))
    manager.submit("PING", {})  # an event: a new version, a new document
    fresh = json.loads(manager.queue_status(10, encoded=True))
    assert fresh["version"] > json.loads(encoded)["version"] and fresh["queue_size"] == 2
    assert len(builds) == 3


def test_queue_brief_is_the_status_documents_fields(manager) -> None:
    manager.submit("PING", {})
    manager.pause("lunch")
    status = manager.queue_status(recent=0)
    brief = manager.queue_brief()
    assert brief == (status["queue_size"], status["paused"], status["pause_reason"],
                     status["pause_code"]) == (1, True, "lunch", "paused_by_operator")


def test_quiet_submit_logs_at_debug_only(manager, caplog) -> None:
    with caplog.at_level(logging.DEBUG, logger="tasks"):
        loud = manager.submit("PING", {}).task["task_id"]
        quiet = manager.submit("PING", {}, quiet=True).task["task_id"]
    levels = {r.getMessage(): r.levelno for r in caplog.records if r.name == "tasks"}
    assert levels[f"task {loud} PING pending"] == logging.INFO
    assert levels[f"task {quiet} PING pending"] == logging.DEBUG


# -- over HTTP ---------------------------------------------------------------------------------
def _old_accepted(status: dict[str, Any], task: dict[str, Any], created: bool) -> dict[str, Any]:
    """The 202 body as routes._accepted built it from queue_status(recent=0) before
    issue 18, in the suite's language (en)."""
    body: dict[str, Any] = {
        "success": True, "code": "queued", "message": "任务已加入队列",
        "task_id": task["task_id"], "queue_size": status["queue_size"],
        "note": "使用 GET /task/<task_id> 查询任务状态", "status": task["status"],
    }
    if not created:
        body["code"] = "idempotent_replay"
        body["message"] = t("info.idempotent_replay", "en")
    if status["paused"]:
        body["queue_paused"] = True
        body["pause_reason"] = status["pause_reason"]
        body["pause_code"] = status.get("pause_code")
        body["warning"] = t("reply.queued_while_paused", "en", reason=status["pause_reason"])
    if "queue_position" in task:
        body["queue_position"] = task["queue_position"]
    return body


def test_202_bodies_are_byte_identical_to_the_old_ones(server, client: Client) -> None:
    server.simulator.set_fault("fail")
    failed = client.submit({"cmd_type": "HOME"})
    assert client.wait_final(failed)["status"] == "failed"
    assert client.post("/queue/pause", {"reason": "lunch « break »"}).status_code == 200
    client.submit()  # one already waiting: positions and sizes above 1
    manager = server.manager

    r = client.post("/", SCAN, headers={"Idempotency-Key": "k-18"})
    assert r.status_code == 202
    task = manager.get(r.json()["task_id"])  # pending: its position is the enqueue one
    assert r.content == _json(_old_accepted(manager.queue_status(recent=0), task, True))

    again = client.post("/", SCAN, headers={"Idempotency-Key": "k-18"})
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == _json(_old_accepted(manager.queue_status(recent=0), task, False))

    retried = client.post(f"/task/{failed}/retry")
    assert retried.status_code == 202
    expected = _old_accepted(manager.queue_status(recent=0),
                             manager.get(retried.json()["task_id"]), True)
    expected["code"] = "requeued"
    expected["message"] = t("info.requeued", "en", task_id=failed)
    expected["retry_of"] = failed
    assert retried.content == _json(expected)


def test_202_keys_and_sizes_while_the_queue_runs(make_server) -> None:
    client = Client(make_server(sim_speed=5.0, shutdown_grace=0.2))
    for _ in range(3):
        body = client.post("/", SCAN).json()
        assert list(body) == ["success", "code", "message", "task_id", "queue_size", "note",
                              "status", "queue_position"]
        assert body["status"] == "pending"
        assert body["queue_size"] >= body["queue_position"] >= 1


def test_get_task_bytes_equal_the_dict_path_before_and_after_a_restart(
        make_server, tmp_path) -> None:
    db = str(tmp_path / "bytes.db")
    server = make_server(db=db)
    client = Client(server)
    task_id = client.submit()
    assert client.wait_final(task_id)["status"] == "completed"
    r = client.get(f"/task/{task_id}")
    assert r.content == _json(server.manager.get(task_id))
    assert "SCAN_QRCODE完成".encode() in r.content  # UTF-8, not \\u escapes
    server.stop()

    server = make_server(db=db)  # nothing cached: the first GET reads the store
    client = Client(server)
    first, second = client.get(f"/task/{task_id}"), client.get(f"/task/{task_id}")
    assert first.content == second.content == _json(server.manager.get(task_id))
    assert first.json()["status"] == "completed"
    client.post("/queue/pause")
    pending = client.get(f"/task/{client.submit()}")
    assert pending.json()["status"] == "pending"
    assert pending.headers["Content-Type"] == first.headers["Content-Type"] \
        == "application/json; charset=utf-8"
    # A pending task's waiting_for speaks the reader's language: it varies with it.
    assert sorted(pending.headers) == sorted([*first.headers, "Vary"])
    assert pending.headers["Vary"] == "Accept-Language"
    waited = client.get(f"/task/{task_id}", params={"wait": 1}).json()
    assert waited == {**first.json(), "timed_out": False}


def test_queue_status_bytes_equal_the_dict_path(server, client: Client) -> None:
    client.post("/queue/pause", {"reason": "überprüfen"})
    for _ in range(3):
        client.submit()
    manager, recent = server.manager, server.app.settings.recent_in_status

    def same_version_reply() -> tuple[bytes, bytes] | None:
        version = server.events.version
        r = client.get("/queue/status")
        expected = _json(manager.queue_status(recent))
        return (r.content, expected) if server.events.version == version else None

    got, expected = wait_until(same_version_reply, 10, message="a quiet queue")
    assert got == expected and "überprüfen".encode() in got
    assert client.get("/queue/status").content == got
    waited = client.get("/queue/status", params={"wait": 0.1}).json()
    assert waited == {**json.loads(got), "timed_out": True}


# -- one log record per submit -----------------------------------------------------------------
def _records(caplog, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name]


def test_a_queued_submit_is_one_access_line_with_its_task(server, client: Client,
                                                          caplog) -> None:
    client.post("/queue/pause")
    with caplog.at_level(logging.INFO):
        created = client.post("/", SCAN, headers={"Idempotency-Key": "log-1"}).json()
        replay = client.post("/", SCAN, headers={"Idempotency-Key": "log-1"}).json()
        task_id = created["task_id"]
        wait_until(lambda: len([m for m in _records(caplog, "server.access")
                                if '"POST / HTTP/1.1" 202' in m]) == 2, 5,
                   message="two access lines")
    assert replay["task_id"] == task_id
    posts = [m for m in _records(caplog, "server.access") if '"POST / HTTP/1.1" 202' in m]
    assert posts[0].endswith(f" task {task_id} SCAN_QRCODE pending"), posts
    assert posts[1].endswith(f" task {task_id} replayed"), posts
    assert not [m for m in _records(caplog, "tasks") if "pending" in m]


def test_a_retry_is_one_access_line_with_its_new_task(server, client: Client, caplog) -> None:
    server.simulator.set_fault("fail")
    failed = client.submit({"cmd_type": "HOME"})
    assert client.wait_final(failed)["status"] == "failed"
    client.post("/queue/pause")
    with caplog.at_level(logging.INFO):
        new_id = client.post(f"/task/{failed}/retry").json()["task_id"]
        line = f'"POST /task/{failed}/retry HTTP/1.1" 202'
        wait_until(lambda: any(line in m for m in _records(caplog, "server.access")), 5,
                   message="the retry's access line")
    access = next(m for m in _records(caplog, "server.access") if line in m)
    assert access.endswith(f" task {new_id} HOME pending")
    assert not [m for m in _records(caplog, "tasks") if new_id in m]


def test_sync_mode_still_logs_the_pending_line(make_server, caplog) -> None:
    client = Client(make_server(mode="sync"))
    with caplog.at_level(logging.INFO):
        r = client.post("/", SCAN)
    assert r.status_code == 200, r.text
    assert f"task {r.json()['task_id']} SCAN_QRCODE pending" in _records(caplog, "tasks")

