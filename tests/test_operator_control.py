"""Cancel, pause/resume, emergency stop, retry, progress and ETA, long-poll (issue 4)."""

from __future__ import annotations

import threading
import time

from tests.conftest import SCAN, Client, wait_until


def _running(client: Client, task_id: str) -> dict:
    return wait_until(lambda: (d := client.task(task_id))["status"] == "running" and d, 15,
                      message=f"{task_id} running")


def test_cancel_pending_never_reaches_the_robot(make_server) -> None:
    server = make_server(sim_speed=5.0)
    client = Client(server)
    first = client.submit()
    second = client.submit({"cmd_type": "PICK", "params": {"position": 42}})
    r = client.post(f"/task/{second}/cancel")
    assert r.status_code == 200
    assert r.json() == {**r.json(), "success": True, "task_id": second, "status": "cancelled"}
    assert client.task(second)["status"] == "cancelled"
    client.post(f"/task/{first}/cancel")
    client.wait_final(first)
    third = client.submit({"cmd_type": "PING"})
    client.wait_final(third)
    assert not [c for c in server.simulator.received if c.get("cmd") == "PICK"]
    status = client.status()
    assert status["cancelled_tasks"] == 2


def test_delete_cancels_too_and_finished_is_409(client: Client) -> None:
    task_id = client.submit({"cmd_type": "PING"})
    client.wait_final(task_id)
    r = client.session.delete(f"{client.url}/task/{task_id}", timeout=10)
    assert r.status_code == 409 and r.json()["success"] is False
    assert client.post("/task/task_20000101_000000_nothere/cancel").status_code == 404


def test_abort_running_sends_stop_keeps_partial_result_next_runs(make_server) -> None:
    server = make_server(sim_speed=20.0)  # one bottle per second
    client = Client(server)
    task_id = client.submit({"cmd_type": "SCAN_QRCODE",
                             "params": {"rack": "B", "positions": list(range(1, 11))}})
    nxt = client.submit({"cmd_type": "PING"})
    wait_until(lambda: (client.task(task_id).get("progress") or {}).get("done", 0) >= 2, 15,
               message="two bottles scanned")
    r = client.post(f"/task/{task_id}/cancel")
    assert r.status_code == 202
    assert server.simulator.wait_for_command(lambda c: c.get("cmd") == "STOP", 5)
    doc = client.wait_final(task_id)
    assert doc["status"] == "cancelled"
    result = doc["result"]
    assert result["success"] is False
    assert 2 <= result["scanned_count"] < 10
    assert len(result["scanned_bottles"]) == result["scanned_count"]
    assert client.wait_final(nxt)["status"] == "completed"
    assert client.status()["paused"] is False  # a cancel does not hold the queue


def test_pause_holds_and_resume_runs(client: Client) -> None:
    r = client.post("/queue/pause")
    assert r.status_code == 200 and r.json()["paused"] is True
    r = client.post("/", SCAN)
    assert r.status_code == 202
    body = r.json()
    assert body["queue_paused"] is True and "paused" in body["warning"]
    task_id = body["task_id"]
    # Nothing starts while paused: a long-poll of 0.5 s sees it still pending.
    assert client.get(f"/task/{task_id}", params={"wait": 0.5}).json()["status"] == "pending"
    status = client.status()
    assert status["paused"] is True and status["pause_reason"]
    r = client.post("/queue/resume")
    assert r.status_code == 200 and r.json()["paused"] is False
    assert client.wait_final(task_id)["status"] == "completed"


def test_emergency_stop_under_load(make_server) -> None:
    server = make_server(sim_speed=5.0)
    client = Client(server)
    task_id = client.submit()
    waiting = client.submit({"cmd_type": "HOME"})
    _running(client, task_id)
    stop_load = threading.Event()

    def load() -> None:
        c = Client(server)
        while not stop_load.is_set():
            c.get("/queue/status")

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        t0 = time.monotonic()
        r = client.post("/robot/stop")
        elapsed = time.monotonic() - t0
    finally:
        stop_load.set()
        for t in threads:
            t.join()
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stop_sent"] is True and body["running_task"] == task_id
    assert body["paused"] is True and body["pause_reason"] == "emergency stop"
    assert server.simulator.wait_for_command(lambda c: c.get("cmd") == "STOP", 5)
    assert elapsed < 2.0
    doc = client.wait_final(task_id)
    assert doc["status"] == "cancelled" and "emergency stop" in doc["result"]["message"]
    # The queue is held: the waiting task has not started.
    assert client.task(waiting)["status"] == "pending"
    assert client.status()["pause_reason"] == "emergency stop"


def test_emergency_stop_works_in_sync_mode_while_a_request_waits(make_server) -> None:
    server = make_server(mode="sync", sim_speed=5.0)
    client = Client(server)
    answer: dict = {}

    def sync_call() -> None:
        answer["r"] = Client(server).post("/", SCAN)

    t = threading.Thread(target=sync_call)
    t.start()
    wait_until(lambda: client.status()["running_task"], 10, message="sync task running")
    r = client.post("/robot/stop")
    assert r.status_code == 200 and r.json()["stop_sent"] is True
    t.join(20)
    assert answer["r"].status_code == 200
    assert answer["r"].json()["status"] == "cancelled"


def test_retry_makes_a_new_task_pointing_back(server, client: Client) -> None:
    server.simulator.set_fault("fail")
    failed = client.submit({"cmd_type": "HOME"})
    assert client.wait_final(failed)["status"] == "failed"
    server.simulator.set_fault(None)
    r = client.post(f"/task/{failed}/retry")
    assert r.status_code == 202
    new_id = r.json()["task_id"]
    assert new_id != failed
    doc = client.wait_final(new_id)
    assert doc["status"] == "completed" and doc["retry_of"] == failed
    assert client.post(f"/task/{new_id}/retry").status_code == 409


def test_progress_advances_during_a_scan(make_server) -> None:
    server = make_server(sim_speed=20.0)
    client = Client(server)
    task_id = client.submit({"cmd_type": "SCAN_QRCODE",
                             "params": {"rack": "C", "positions": [1, 2, 3, 4, 5]}})
    seen = set()

    def progressed() -> bool:
        progress = client.task(task_id).get("progress") or {}
        if progress.get("done") is not None:
            seen.add(progress["done"])
        return len(seen) >= 2

    wait_until(progressed, 15, message="progress to advance")
    doc = client.task(task_id)
    progress = doc["progress"]
    assert progress["total"] == 5 and 0 < progress["percent"] <= 100
    assert progress["items"][0]["position"] == 1
    assert client.wait_final(task_id)["progress"]["done"] == 5


def test_eta_fields_once_there_is_history(make_server) -> None:
    server = make_server(sim_speed=20.0)
    client = Client(server)
    client.wait_final(client.submit({"cmd_type": "HOME"}))
    client.post("/queue/pause")
    a = client.submit({"cmd_type": "HOME"})
    b = client.submit({"cmd_type": "HOME"})
    doc_b = client.task(b)
    assert doc_b["queue_position"] == 2
    assert "estimated_start_time" in doc_b
    client.post("/queue/resume")
    doc_a = _running(client, a)
    assert "estimated_end_time" in doc_a


def test_long_poll_returns_at_completion_and_after_timeout(make_server) -> None:
    server = make_server(sim_speed=20.0)
    client = Client(server)
    client.post("/queue/pause")
    task_id = client.submit({"cmd_type": "HOME"})
    t0 = time.monotonic()
    r = client.get(f"/task/{task_id}", params={"wait": 0.3})
    assert 0.25 <= time.monotonic() - t0 < 3
    assert r.json()["status"] == "pending"
    client.post("/queue/resume")
    r = client.get(f"/task/{task_id}", params={"wait": 30})
    assert r.json()["status"] == "completed"
    # Above the server's bound a wait is clamped, not refused; a final task answers at once.
    r = client.get(f"/task/{task_id}", params={"wait": 3600})
    assert r.status_code == 200 and r.json()["status"] == "completed"
    assert r.json()["timed_out"] is False
    assert client.get(f"/task/{task_id}", params={"wait": "x"}).status_code == 400


def test_queue_status_long_poll_wakes_on_change(client: Client) -> None:
    version = client.status()["version"]
    result: dict = {}

    def poll() -> None:
        result["doc"] = client.get("/queue/status", params={"wait": 20, "since": version}).json()

    t = threading.Thread(target=poll)
    t.start()
    task_id = Client(client.server).submit({"cmd_type": "PING"})
    t.join(20)
    assert result["doc"]["version"] > version
    client.wait_final(task_id)
