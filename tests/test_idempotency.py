"""Idempotency-Key: replay, replay after restart, different body, concurrent duplicates."""

from __future__ import annotations

import threading

from tests.conftest import SCAN, Client


def test_replay_returns_the_original_task(server, client: Client) -> None:
    headers = {"Idempotency-Key": "scan-rack-A-0001"}
    first = client.post("/", SCAN, headers=headers)
    again = client.post("/", SCAN, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    client.wait_final(first.json()["task_id"])
    assert client.status()["total_tasks"] == 1
    scans = [c for c in server.simulator.received if c.get("cmd") == "SCAN_QRCODE"]
    assert len(scans) == 1


def test_same_key_different_body_is_422(client: Client) -> None:
    headers = {"Idempotency-Key": "k-1"}
    assert client.post("/", SCAN, headers=headers).status_code == 202
    r = client.post("/", {"cmd_type": "HOME"}, headers=headers)
    assert r.status_code == 422 and "Idempotency-Key" in r.json()["message"]
    assert client.status()["total_tasks"] == 1


def test_bad_keys_are_400(client: Client) -> None:
    for key in ("x" * 256, "tab\there", "é"):
        r = client.post("/", SCAN, headers={"Idempotency-Key": key.encode("utf-8")})
        assert r.status_code == 400, key
    assert client.status()["total_tasks"] == 0


def test_concurrent_duplicates_make_exactly_one_task(server, client: Client) -> None:
    client.post("/queue/pause")
    ids: list[str] = []
    lock = threading.Lock()

    def send() -> None:
        r = Client(server).post("/", SCAN, headers={"Idempotency-Key": "same-key"})
        assert r.status_code == 202
        with lock:
            ids.append(r.json()["task_id"])

    threads = [threading.Thread(target=send) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 20 and len(set(ids)) == 1
    assert client.status()["total_tasks"] == 1


def test_replay_after_restart(make_server, tmp_path) -> None:
    db = str(tmp_path / "idem.db")
    first = make_server(db=db)
    r1 = Client(first).post("/", SCAN, headers={"Idempotency-Key": "survives"})
    task_id = r1.json()["task_id"]
    Client(first).wait_final(task_id)
    first.stop()
    second = make_server(db=db)
    client = Client(second)
    r2 = client.post("/", SCAN, headers={"Idempotency-Key": "survives"})
    assert r2.status_code == 202 and r2.json()["task_id"] == task_id
    assert client.status()["total_tasks"] == 1
    assert not [c for c in second.simulator.received if c.get("cmd") == "SCAN_QRCODE"]
