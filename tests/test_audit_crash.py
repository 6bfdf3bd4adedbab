"""kill -9 during a burst of submits (issue 31): a task and its `task.submit` audit row
are one transaction, so after the crash every task has exactly one row naming it, every
row its task, the hash chain holds, and every 202 a client got names a stored task.
The server is `main.py serve` as a real process; the database is read afterwards with
sqlite3, read-only."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from typing import Any

import pytest
import requests

from tasks.store.audit import verify
from tests.conftest import SCAN, wait_until
from tests.proc import ServerProcess

pytestmark = pytest.mark.timeout(90)

TOKEN = "crash-test-token"
THREADS = 12
KILL_AFTER = 60  # 202s received before the kill; the threads are still sending
CHAIN_FIELDS = ("seq", "time", "principal", "role", "address", "action", "target", "before",
                "after", "reason", "request_id", "status")


def _start(servers: list[ServerProcess], db: str) -> ServerProcess:
    server = ServerProcess(db, "sim", "--sim-speed", "400", "--max-queue", "100000",
                           "--api-token", TOKEN)
    servers.append(server)
    server.wait_ready()
    return server


def _burst_then_kill(server: ServerProcess) -> tuple[list[str], int]:
    """Submits from THREADS threads until the server dies; it is killed (SIGKILL) once
    KILL_AFTER have been accepted. The task ids of the 202s, and how many requests got
    no answer (cut by the kill)."""
    accepted: list[str] = []
    other: list[str] = []  # any answer but a 202
    cut = [0]
    lock = threading.Lock()
    dead = threading.Event()

    def client() -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        while not dead.is_set():
            try:
                r = session.post(server.url + "/", json=SCAN, headers=headers, timeout=10)
            except requests.RequestException:
                with lock:
                    cut[0] += 1
                if server.proc.poll() is not None:
                    return
                continue
            with lock:
                if r.status_code == 202:
                    accepted.append(r.json()["task_id"])
                else:
                    other.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(THREADS)]
    for t in threads:
        t.start()
    wait_until(lambda: len(accepted) >= KILL_AFTER, 20, 0.002, "the burst")
    server.kill9()
    dead.set()
    for t in threads:
        t.join(15)
        assert not t.is_alive()
    assert other == [], other[:3]
    return list(accepted), cut[0]


def _chain_ok(rows: list[tuple[Any, ...]]) -> None:
    """The chain as docs/security.md defines it, recomputed here."""
    previous = "0" * 64
    for n, row in enumerate(rows, start=1):
        values, stored = list(row[:-1]), row[-1]
        assert values[0] == n, f"row {n} is missing"
        canonical = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
        assert hashlib.sha256((previous + canonical).encode("utf-8")).hexdigest() == stored, n
        previous = stored


def _check_database(db: str, accepted: list[str]) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tasks = {r[0] for r in conn.execute("SELECT task_id FROM tasks")}
        rows = conn.execute(f"SELECT {', '.join(CHAIN_FIELDS)}, hash FROM audit "
                            "ORDER BY seq").fetchall()
        submits: dict[str, int] = {}
        for row in rows:
            assert row[5] == "task.submit", row  # nothing else happened
            assert (row[2], row[3], row[8]) == ("admin", "admin", "pending"), row
            submits[row[6]] = submits.get(row[6], 0) + 1
        assert {t: n for t, n in submits.items() if n != 1} == {}
        assert set(submits) == tasks, (sorted(tasks - set(submits))[:5],
                                       sorted(set(submits) - tasks)[:5])
        missing = [t for t in accepted if t not in tasks]
        assert missing == [], missing[:5]
        assert len(set(accepted)) == len(accepted)
        _chain_ok(rows)
        checked = verify(conn)
        assert checked.ok and checked.rows == len(rows), checked
        return len(rows)
    finally:
        conn.close()


def test_kill9_in_a_burst_of_submits_keeps_tasks_and_rows_together(
        servers: list[ServerProcess], tmp_path: Any) -> None:
    db = str(tmp_path / "tasks.db")
    total = 0
    for cycle in (1, 2):
        server = _start(servers, db)
        if cycle == 2:  # the restarted server reads the same chain
            r = server.get("/audit/verify", headers={"X-API-Key": TOKEN})
            assert r.json() == {"ok": True, "rows": total}, r.text
        accepted, cut = _burst_then_kill(server)
        server.stop()
        rows = _check_database(db, accepted)
        assert rows >= total + len(accepted), (cycle, rows, total, len(accepted), cut)
        total = rows
