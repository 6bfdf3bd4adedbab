"""Queue mode over real HTTP with the simulator robot on a pty."""

from __future__ import annotations

import re
import threading

from tests.conftest import SCAN, Client, wait_until

TASK_ID = re.compile(r"^task_\d{8}_\d{6}_[0-9a-z]{6}$")


def test_submit_answers_202_with_the_guides_keys(client: Client) -> None:
    r = client.post("/", SCAN)
    assert r.status_code == 202
    body = r.json()
    assert body["success"] is True
    assert body["message"] == "任务已加入队列"
    assert TASK_ID.match(body["task_id"])
    assert body["queue_size"] >= 1
    assert "GET /task/<task_id>" in body["note"]
    assert r.headers["Location"] == f"/task/{body['task_id']}"


def test_task_runs_to_completed_with_scan_result(client: Client) -> None:
    task_id = client.submit()
    doc = client.wait_final(task_id)
    assert doc["status"] == "completed"
    assert doc["cmd_type"] == "SCAN_QRCODE"
    for key in ("submit_time", "start_time", "end_time"):
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", doc[key]), doc
    result = doc["result"]
    assert result["success"] is True
    assert result["message"] == "SCAN_QRCODE完成"
    assert result["scanned_count"] == 3
    assert [b["position"] for b in result["scanned_bottles"]] == [1, 2, 3]


def test_pending_task_has_null_result(make_server) -> None:
    # Slow enough to look at it while it runs; at teardown the scan is still running.
    server = make_server(sim_speed=2.0, shutdown_grace=0.2)
    client = Client(server)
    first = client.submit()
    second = client.submit()
    doc = client.task(second)
    assert doc["status"] == "pending"
    assert doc["result"] is None
    assert doc["end_time"] is None
    assert doc["queue_position"] >= 1
    running = wait_until(lambda: client.task(first)["status"] == "running" and client.task(first))
    assert running["result"] is None and running["start_time"]
    status = client.status()
    assert status["running_task"] == first
    assert status["queue_size"] == 2


def test_unknown_task_is_404_json(client: Client) -> None:
    r = client.get("/task/task_20000101_000000_zzzzzz")
    assert r.status_code == 404
    assert r.json()["success"] is False


def test_queue_status_counters_add_up(client: Client) -> None:
    ids = [client.submit() for _ in range(3)]
    ids.append(client.submit({"cmd_type": "HOME"}))
    for task_id in ids:
        client.wait_final(task_id)
    status = client.status()
    assert status["queue_size"] == 0
    assert status["completed_tasks"] == 4
    assert status["failed_tasks"] == 0
    assert status["total_tasks"] == 4
    assert status["running_task"] is None
    recent = [t["task_id"] for t in status["recent_tasks"]]
    assert recent == list(reversed(ids))  # newest first: a forgotten task_id is found here


def test_fifty_concurrent_submitters_unique_ids_fifo(make_server) -> None:
    server = make_server()
    client = Client(server)
    client.post("/queue/pause")  # collect all submits first, then watch the order
    ids: list[str] = []
    lock = threading.Lock()
    errors: list[str] = []

    def submit(n: int) -> None:
        c = Client(server)
        r = c.post("/", {"cmd_type": "MOVE_TO", "params": {"x": n, "y": 0, "z": 0}})
        if r.status_code != 202:
            errors.append(r.text)
            return
        with lock:
            ids.append(r.json()["task_id"])

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(ids) == len(set(ids)) == 50
    status = client.status()
    assert status["queue_size"] == 50 and status["total_tasks"] == 50
    client.post("/queue/resume")
    docs = [client.wait_final(task_id) for task_id in ids]
    assert all(d["status"] == "completed" for d in docs)
    # FIFO: the robot ran them in submission (seq) order.
    listed = client.get("/tasks", params={"limit": 50}).json()["tasks"]
    submitted_order = [t["task_id"] for t in reversed(listed)]
    by_id = {d["task_id"]: d for d in docs}
    starts = [by_id[t]["start_time"] for t in submitted_order]
    assert starts == sorted(starts)
    sent = [c for c in server.simulator.received if c.get("cmd") == "MOVE_TO"]
    x_order = [c["params"]["x"] for c in sent]
    submit_x = [by_id[t]["params"]["x"] for t in submitted_order]
    assert x_order == submit_x
    status = client.status()
    assert status["completed_tasks"] == 50 and status["total_tasks"] == 50


def test_tasks_list_filters_and_pages(client: Client) -> None:
    ids = [client.submit({"cmd_type": "PING"}) for _ in range(5)]
    for task_id in ids:
        client.wait_final(task_id)
    page1 = client.get("/tasks", params={"limit": 2}).json()
    assert [t["task_id"] for t in page1["tasks"]] == ids[::-1][:2]
    page2 = client.get("/tasks", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    assert [t["task_id"] for t in page2["tasks"]] == ids[::-1][2:4]
    page_off = client.get("/tasks", params={"limit": 2, "offset": 2}).json()
    assert [t["task_id"] for t in page_off["tasks"]] == ids[::-1][2:4]
    done = client.get("/tasks", params={"status": "completed"}).json()
    assert done["total"] == 5
    assert client.get("/tasks", params={"status": "bogus"}).status_code == 400


def test_robot_failure_fails_task_and_worker_goes_on(server, client: Client) -> None:
    server.simulator.set_fault("fail")
    failed = client.submit({"cmd_type": "HOME"})
    doc = client.wait_final(failed)
    assert doc["status"] == "failed"
    assert doc["result"]["success"] is False
    assert doc["result"]["message"]
    assert client.status()["paused"] is False  # a robot-reported failure does not hold
    server.simulator.set_fault(None)
    ok = client.submit({"cmd_type": "HOME"})
    assert client.wait_final(ok)["status"] == "completed"
