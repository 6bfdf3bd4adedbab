"""The WAL's checkpoints run in a thread of their own (tasks/store/housekeeping.py), never
inside a COMMIT: the WAL stays bounded and its frames reach the database file, an idle
server starts its WAL again from the beginning, a commit goes on while a large checkpoint
copies, and the webhook dispatcher writes nothing while nobody is subscribed. Real SQLite
files on disk; the real server where it matters."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tasks.store import TaskStore
from tasks.store.audit import AuditEntry
from tasks.store.housekeeping import Checkpointer, wal_frames
from tasks.store.webhooks import WebhookStore
from tests.conftest import Client, wait_until
from tests.webhook_receiver import Receiver

PING = {"cmd_type": "PING", "params": {}}
PAGE = 4096


@pytest.fixture
def store(tmp_path: Any) -> Iterator[TaskStore]:
    s = TaskStore(str(tmp_path / "t.db"))
    s.open()
    yield s
    s.close()


def _fill(store: TaskStore, tag: str, commits: int, size: int) -> None:
    """``commits`` COMMITs, each one row of ``size`` bytes (a transcript)."""
    for i in range(commits):
        store.commit([("INSERT INTO transcripts(task_id, lines) VALUES (?, ?)",
                       (f"{tag}{i}", "x" * size))])


def _writer_autocheckpoint(store: TaskStore) -> int:
    assert store._writer is not None
    return int(store._writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def _to_copy(store: TaskStore) -> int:
    """Frames in the WAL not yet copied into the database file."""
    frames = wal_frames(store.path)
    return 10**9 if frames is None else frames[0] - frames[1]


def _backfill_attempted(path: str) -> int:
    """nBackfillAttempted of the WAL-index: set when a checkpoint starts copying."""
    with open(path + "-shm", "rb") as f:
        return int(struct.unpack_from("=I", f.read(136), 128)[0])


def test_checkpoints_keep_the_wal_bounded_and_no_commit_copies(store, tmp_path):
    bound = 4 << 20
    ck = Checkpointer(store, pages=100, idle_s=60.0, wal_limit=bound, look_s=0.005)
    ck.start()
    try:
        assert _writer_autocheckpoint(store) == 0  # no COMMIT ever checkpoints
        sizes = []
        for r in range(30):  # ~6,000 frames (24 MiB) in all
            _fill(store, f"r{r}-", 40, 16_000)
            wait_until(lambda: _to_copy(store) < 100, 10, 0.002,
                       message="the checkpointer to catch up with 40 commits")
            sizes.append(store.wal_bytes())
        assert ck.done["settle"] >= 1
        assert max(sizes) <= bound, [s >> 10 for s in sizes]
    finally:
        ck.stop()
        ck.release()
    assert _writer_autocheckpoint(store) == 1000  # SQLite's own again once it stopped
    # The database file alone (no WAL beside it) holds the rows the checkpoints copied.
    alone = str(tmp_path / "alone.db")
    shutil.copyfile(store.path, alone)
    with contextlib.closing(sqlite3.connect(alone)) as conn:
        rows = conn.execute("SELECT count(*) FROM transcripts").fetchone()[0]
    assert 29 * 40 <= rows <= 30 * 40, rows  # all but the last few frames


def test_an_idle_store_starts_its_wal_again(store):
    ck = Checkpointer(store, pages=10**6, idle_s=0.2, wal_limit=64 << 20)
    ck.start()
    try:
        _fill(store, "a", 60, 12_000)
        restarts, frames = ck.done["restart"], wal_frames(store.path)
        size = store.wal_bytes()
        assert frames is not None and frames[0] >= 180 and frames[1] < frames[0]
        wait_until(lambda: ck.done["restart"] > restarts, 10, message="an idle restart")
        after_idle = wal_frames(store.path)
        assert after_idle is not None and after_idle[1] == after_idle[0]  # all copied
        _fill(store, "b", 5, 12_000)  # written from the WAL's beginning: no growth
        now = wal_frames(store.path)
        assert now is not None and now[0] < 40, now
        assert store.wal_bytes() == size
    finally:
        ck.stop()
        ck.release()


def test_a_commit_goes_on_while_a_large_wal_is_checkpointed(store):
    # The WAL is filled with no checkpoint (the writer's autocheckpoint is off), then a
    # commit wakes the checkpointer, whose PASSIVE copies ~32 MiB; a commit made while it
    # copies must end long before the copy does.
    store.checkpoints_by(threading.Event())
    for attempt in range(3):
        _fill(store, f"big{attempt}-", 32, 1 << 20)
        ck = Checkpointer(store, pages=1000, idle_s=60.0, wal_limit=256 << 20, look_s=0.001)
        ck.start()
        try:
            store.set_meta({"wake": str(attempt)})
            wait_until(lambda: _backfill_attempted(store.path) > 0, 10, 0.0002,
                       message="the checkpoint to start copying")
            began = time.monotonic()
            t0 = time.monotonic()
            store.set_meta({"during": str(attempt)})
            committed = time.monotonic()
            target = _backfill_attempted(store.path)
            wait_until(lambda t=target: (wal_frames(store.path) or (0, 0))[1] >= t, 20, 0.0002,
                       message="the checkpoint to end")
            ended = time.monotonic()
        finally:
            ck.stop()
            ck.release()
        if committed < ended and ended - began > 0.01:
            break  # else the copy was too quick to compare with: again, on a larger WAL
        store.checkpoints_by(threading.Event())
    copy_s, commit_s = ended - began, committed - t0
    assert committed < ended, (commit_s, copy_s)
    assert commit_s < copy_s / 2, (commit_s, copy_s)


def _data_version(path: str) -> Iterator[int]:
    """PRAGMA data_version of a connection of its own: it changes when another
    connection commits."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        while True:
            yield conn.execute("PRAGMA data_version").fetchone()[0]


def _outbox(path: str, n: int) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for _ in range(n):
            conn.execute("INSERT INTO outbox(type, subject, time) VALUES "
                         "('task.completed', 't', ?)", (time.time(),))


def test_fan_out_commits_nothing_without_an_enabled_subscription(store):
    hooks = WebhookStore(store)
    _outbox(store.path, 5)
    version = _data_version(store.path)
    first = next(version)
    assert hooks.fan_out("http://x") == 0
    assert next(version) == first  # no COMMIT: the cursor is not written
    assert store.get_meta("outbox_fanned") is None
    audit = AuditEntry("test", "admin", "local", "webhook.add")
    hook = hooks.add("http://127.0.0.1:9/", ["*"], None, "whsec_AAAA", audit=audit)
    assert hook.from_seq == 5
    # A disabled subscription is like none; enabled again, it hears of what comes after.
    hooks.change(hook.id, audit=None, enabled=False, disabled_reason="by_operator")
    _outbox(store.path, 3)
    first = next(version)
    assert hooks.fan_out("http://x") == 0 and next(version) == first
    again = hooks.change(hook.id, audit=None, enabled=True)
    assert again.from_seq == 8
    assert hooks.fan_out("http://x") == 0
    _outbox(store.path, 2)
    assert hooks.fan_out("http://x") == 2  # starts after from_seq, not at the cursor (0)
    assert store.get_meta("outbox_fanned") == "10"
    assert [d["event_seq"] for d in _deliveries(store, hook.id)] == [9, 10]
    # Pruning: what no enabled subscription will fan out goes, old enough.
    hooks.prune(older_than=time.time() + 1)
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


def _deliveries(store: TaskStore, hook_id: str) -> list[dict[str, Any]]:
    with store._reader() as conn:
        rows = conn.execute("SELECT event_seq FROM deliveries WHERE webhook_id = ? "
                            "ORDER BY id", (hook_id,)).fetchall()
    return [{"event_seq": r[0]} for r in rows]


def test_a_server_with_no_subscriber_writes_no_cursor_and_a_later_one_hears(make_server):
    server = make_server()
    client = Client(server)
    assert server.webhooks is not None and server.store is not None
    sender_store = server.webhooks.store
    calls = [0]
    fan_out = sender_store.fan_out

    def counted(base_url: str, limit: int = 200) -> int:
        calls[0] += 1
        return fan_out(base_url, limit)

    sender_store.fan_out = counted
    early = [client.submit(PING) for _ in range(3)]
    for task_id in early:
        assert client.wait_final(task_id)["status"] == "completed"
    seen = calls[0]
    wait_until(lambda: calls[0] > seen, 5, message="the dispatcher to look at the outbox")
    assert server.store.get_meta("outbox_fanned") is None  # nothing committed for them
    rx = Receiver()
    try:
        r = requests.post(server.url + "/webhooks",
                          json={"url": rx.url, "events": ["task.completed"]}, timeout=10)
        assert r.status_code == 201, r.text
        later = client.submit(PING)
        (got,) = rx.wait_count(1)
        assert got.json["data"]["task_id"] == later
        wait_until(lambda: server.store.get_meta("outbox_fanned") is not None, 5)
        assert [g.json["data"]["task_id"] for g in rx.received] == [later]
    finally:
        rx.close()


def test_an_idle_server_starts_its_wal_again_and_metrics_tell_its_size(make_server):
    server = make_server()
    client = Client(server)
    store, ck = server.store, server.checkpointer
    assert store is not None and ck is not None
    assert _writer_autocheckpoint(store) == 0
    client.post("/queue/pause")
    for _ in range(40):
        client.submit(PING)
    frames = wal_frames(store.path)
    assert frames is not None and frames[0] > 40
    restarts = ck.done["restart"]
    wait_until(lambda: ck.done["restart"] > restarts, 10, message="an idle restart")
    size = store.wal_bytes()
    client.submit(PING)
    now = wal_frames(store.path)
    assert now is not None and now[0] < frames[0] and store.wal_bytes() == size

    def gauge() -> float | None:
        text = client.get("/metrics").text
        line = next((x for x in text.splitlines()
                     if x.startswith("robot_server_db_wal_bytes ")), None)
        return None if line is None else float(line.split()[1])

    assert "# TYPE robot_server_db_wal_bytes gauge" in client.get("/metrics").text
    wait_until(lambda: gauge() == os.path.getsize(store.path + "-wal"), 5,
               message="the gauge to show the WAL file's size")
