"""Sync mode: the request is held until the robot is done; same queue underneath."""

from __future__ import annotations

import threading

from tests.conftest import SCAN, Client


def test_sync_returns_result_and_task_id(make_server) -> None:
    client = Client(make_server(mode="sync"))
    r = client.post("/", SCAN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    assert body["scanned_count"] == 3
    assert body["task_id"].startswith("task_")
    assert client.task(body["task_id"])["status"] == "completed"


def test_two_concurrent_sync_clients_are_serialised(make_server) -> None:
    server = make_server(mode="sync", sim_speed=20.0)
    results: dict[int, dict] = {}

    def call(n: int) -> None:
        r = Client(server).post("/", {"cmd_type": "PICK", "params": {"position": n + 1}})
        results[n] = {"code": r.status_code, **r.json()}

    threads = [threading.Thread(target=call, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r["code"] == 200 and r["success"] for r in results.values()), results
    client = Client(server)
    docs = [client.task(r["task_id"]) for r in results.values()]
    first, second = sorted(docs, key=lambda d: d["start_time"] + d["end_time"])
    # One after the other on the robot: the second started after the first ended.
    assert first["end_time"] <= second["start_time"]
    assert client.status()["completed_tasks"] == 2


def test_sync_failure_still_answers_with_result(make_server) -> None:
    server = make_server(mode="sync")
    server.simulator.set_fault("fail")
    r = Client(server).post("/", {"cmd_type": "HOME"})
    assert r.status_code == 200
    assert r.json()["success"] is False and r.json()["status"] == "failed"


def test_sync_submit_to_a_paused_queue_is_refused_at_once(make_server) -> None:
    client = Client(make_server(mode="sync"))
    client.post("/queue/pause")
    r = client.post("/", SCAN)
    assert r.status_code == 503 and "paused" in r.json()["message"]
    assert client.status()["total_tasks"] == 0
    client.post("/queue/resume")
    assert client.post("/", SCAN).json()["status"] == "completed"
