"""A robot that misbehaves cannot hurt the server: deep or huge results, floods of
progress, line noise, rows the store cannot decode.

The robot is the simulator in its hostile fault modes (robot/sim/hostile.py) on a real
pty; the floods and the noise run against a server in its own process so its memory
and its log are its own.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

from tests.conftest import Client, wait_until
from tests.proc import ServerProcess, SimulatorProcess

HOME = {"cmd_type": "HOME", "params": {}}


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_result_nested_too_deep_fails_cleanly_and_the_queue_goes_on(server) -> None:
    client, sim = Client(server), server.simulator
    sim.set_fault("deep_result")
    deep = client.wait_final(client.submit(HOME))
    assert deep["status"] == "failed"
    assert deep["result"]["code"] == "robot_result_too_deep", deep["result"]
    assert "64" in deep["result"]["message"]
    assert client.status()["paused"] is False  # the robot finished: its state is known
    sim.set_fault(None)
    assert client.wait_final(client.submit(HOME))["status"] == "completed"
    assert client.get(f"/task/{deep['task_id']}").status_code == 200
    assert client.get("/tasks").status_code == 200
    lines = client.get(f"/task/{deep['task_id']}/transcript").json()["transcript"]
    assert any("nested deeper than 64" in entry["line"] for entry in lines)


def test_a_result_line_over_the_limit_fails_at_once_not_by_timeout(make_server) -> None:
    server = make_server(robot_timeout=30.0)
    client, sim = Client(server), server.simulator
    sim.set_fault("deep_result")
    sim.deep_levels = 40_000  # an 80 kB line: over the 64 KiB line limit
    t0 = time.monotonic()
    doc = client.wait_final(client.submit(HOME))
    assert time.monotonic() - t0 < 10  # told apart from its head, not 30 s of silence
    assert doc["result"]["code"] == "robot_result_too_long", doc["result"]
    sim.set_fault(None)
    assert client.wait_final(client.submit(HOME))["status"] == "completed"
    lines = client.get(f"/task/{doc['task_id']}/transcript").json()["transcript"]
    assert any(entry["line"].startswith("<over-long line discarded") for entry in lines)


def test_rows_the_store_cannot_decode_do_not_break_reads(make_server, tmp_path) -> None:
    server = make_server()
    client = Client(server)
    ids = [client.submit(HOME) for _ in range(3)]
    for task_id in ids:
        assert client.wait_final(task_id)["status"] == "completed"
    db = server.settings.db
    server.stop()
    # What an older server or a broken disk may have left: cut-off JSON, a result nested
    # ~985 levels deep (it parsed once, and failed later in deeper threads), bad params.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE tasks SET result = ? WHERE task_id = ?", ('{"success": tr', ids[0]))
        conn.execute("UPDATE tasks SET result = ? WHERE task_id = ?",
                     ('{"success": true, "data": ' + "[" * 985 + "]" * 985 + "}", ids[1]))
        conn.execute("UPDATE tasks SET params = ?, progress = ? WHERE task_id = ?",
                     ("{", "[[", ids[2]))
    again = make_server(db=db)
    client = Client(again)
    for task_id in ids:
        r = client.get(f"/task/{task_id}")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "completed"
    assert "unreadable" in client.get(f"/task/{ids[0]}").json()["result"]
    assert "unreadable" in client.get(f"/task/{ids[1]}").json()["result"]
    page = client.get("/tasks", params={"limit": 10})
    assert page.status_code == 200 and {t["task_id"] for t in page.json()["tasks"]} >= set(ids)
    assert client.wait_final(client.submit(HOME))["status"] == "completed"


def test_a_waiting_task_whose_params_cannot_be_read_is_failed_not_run(make_server) -> None:
    server = make_server()
    Client(server).post("/queue/pause")
    task_id = Client(server).submit(HOME)
    db = server.settings.db
    server.stop()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE tasks SET params = ? WHERE task_id = ?", ('{"x": 1', task_id))
    again = make_server(db=db)
    client = Client(again)
    doc = client.task(task_id)
    assert doc["status"] == "failed" and doc["result"]["code"] == "params_unreadable", doc
    client.post("/queue/resume")
    assert client.wait_final(client.submit(HOME))["status"] == "completed"
    assert [c["cmd"] for c in again.simulator.received if c.get("cmd") == "HOME"] == ["HOME"]


def test_progress_is_recorded_at_a_bounded_rate_and_stays_current(make_server) -> None:
    server = make_server()
    client, sim = Client(server), server.simulator
    writes: list[float] = []
    original = server.store.set_progress

    def counting(*args: Any, **kwargs: Any) -> None:
        writes.append(time.monotonic())
        original(*args, **kwargs)

    # Counting the real store's writes (the store itself runs unchanged).
    server.store.set_progress = counting  # type: ignore[method-assign]
    sim.flood_rate, sim.flood_seconds, sim.flood_items = 1000.0, 3.0, True
    sim.set_fault("flood")
    task_id = client.submit(HOME)
    seen = wait_until(lambda: (client.task(task_id).get("progress") or {}).get("done"), 5,
                      message="progress while flooded")
    later = wait_until(lambda: (d := client.task(task_id).get("progress") or {}).get("done", 0)
                       > seen + 200 and d["done"], 5, message="progress moving")
    doc = client.wait_final(task_id, 20)
    assert doc["status"] == "completed" and doc["result"]["message"] == "HOME完成"
    progress = doc["progress"]
    lines = progress["done"]
    assert lines > later and lines >= 2500  # about 3,000 lines in 3 s
    assert [i["flood"] for i in progress["items"]] == list(range(1, lines + 1))
    # At most one write per 200 ms while the flood lasted, and the last before the end.
    assert len(writes) <= 3.0 / 0.2 + 4, len(writes)
    span = writes[-1] - writes[0]
    assert len(writes) <= span / 0.2 + 2
    with sqlite3.connect(server.settings.db) as conn:
        stored = conn.execute("SELECT count(*) FROM progress_items WHERE task_id = ?",
                              (task_id,)).fetchone()[0]
    assert stored == lines


def test_a_20_s_flood_does_not_stall_the_queue_or_grow_memory(tmp_path) -> None:
    sim = SimulatorProcess(tmp_path, 20.0, "--fault", "flood", "--flood-rate", "1000",
                           "--flood-seconds", "20", "--flood-items")
    server = ServerProcess(str(tmp_path / "tasks.db"), sim.link, "--log-level", "WARNING")
    try:
        server.wait_ready()
        wait_until(lambda: server.get("/health").json()["robot"]["connected"], 10,
                   message="robot connected")
        flooded = server.post("/", HOME).json()["task_id"]
        behind = server.post("/", {"cmd_type": "GET_STATUS", "params": {}}).json()["task_id"]
        peak, reads_ok = 0.0, True
        stop = threading.Event()

        def watch() -> None:
            nonlocal peak, reads_ok
            while not stop.wait(0.5):
                peak = max(peak, rss_mib(server.proc.pid))
                reads_ok &= server.get(f"/task/{flooded}").status_code == 200
                reads_ok &= server.get("/tasks").status_code == 200

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            doc = server.wait_final(flooded, timeout=60)
            ended = time.monotonic()
            after = server.wait_final(behind, timeout=20)
            waited = time.monotonic() - ended
        finally:
            stop.set()
            watcher.join()
        assert doc["status"] == "completed" and doc["result"]["message"] == "HOME完成", doc
        # 20,000 lines with an item each: 10,000 kept (the bound without a total), the
        # rest counted.
        assert doc["progress"]["done"] >= 18_000
        assert len(doc["progress"]["items"]) == 10_000
        assert doc["progress"]["items_dropped"] == doc["progress"]["done"] - 10_000
        assert doc["result"]["items_dropped"] == doc["progress"]["items_dropped"]
        assert after["status"] == "completed" and waited < 5, waited
        assert reads_ok
        assert peak < 100, f"server RSS peaked at {peak:.0f} MiB"
    finally:
        server.stop()
        sim.stop()


def test_five_seconds_of_line_noise_write_a_few_log_lines(tmp_path) -> None:
    sim = SimulatorProcess(tmp_path, 20.0, "--fault", "noise", "--noise-rate", "1000000",
                           "--noise-seconds", "5")
    log_file = tmp_path / "server.log"
    server = ServerProcess(str(tmp_path / "tasks.db"), sim.link, "--log-file", str(log_file))
    try:
        server.wait_ready()
        wait_until(lambda: server.get("/health").json()["robot"]["connected"], 10,
                   message="robot connected")
        before = server.get("/robot").json()["skipped_lines"]
        doc = server.wait_final(server.post("/", HOME).json()["task_id"], timeout=40)
        assert doc["status"] == "completed", doc
        skipped = server.get("/robot").json()["skipped_lines"] - before
        assert skipped > 1000  # it really was noisy
        code, _ = server.terminate()
        assert code == 0
        text = log_file.read_text(encoding="utf-8", errors="replace")
        robot_lines = [line for line in text.splitlines() if "robot.link" in line]
        assert len(robot_lines) < 300, len(robot_lines)
        # The lines not shown are summarised (here at shutdown, before 10 s are up).
        assert any("more in the last" in line and "not shown" in line for line in robot_lines)
    finally:
        server.stop()
        sim.stop()
