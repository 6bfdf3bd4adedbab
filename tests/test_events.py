"""Server-Sent Events: completion, resume from Last-Event-ID, slow subscribers."""

from __future__ import annotations

import socket
import time

from tests.conftest import Client
from tests.sse import SSEReader


def _final(task_id: str):
    return lambda e: (e.get("event") == "task" and e["data"]["task_id"] == task_id
                      and e["data"]["status"] in ("completed", "failed", "cancelled"))


def test_sse_delivers_snapshot_progress_and_completion(server, client: Client) -> None:
    reader = SSEReader(server.url)
    try:
        assert reader.status_line.startswith("HTTP/1.1 200")
        assert "text/event-stream" in reader.headers
        snapshot = reader.next_event()
        assert snapshot["event"] == "snapshot" and "queue" in snapshot["data"]
        task_id = client.submit()
        progress = reader.wait_for(lambda e: e.get("event") == "progress")
        assert progress["data"]["task_id"] == task_id
        done = reader.wait_for(_final(task_id))
        assert done["data"]["status"] == "completed"
        assert done["data"]["result"]["scanned_count"] == 3
        assert int(done["id"]) > int(progress["id"])
    finally:
        reader.close()


def test_sse_resumes_from_last_event_id(server, client: Client) -> None:
    reader = SSEReader(server.url)
    first = client.submit({"cmd_type": "PING"})
    event = reader.wait_for(_final(first))
    reader.close()
    last_id = event["id"]
    second = client.submit({"cmd_type": "PING"})  # happens while nobody listens
    client.wait_final(second)
    resumed = SSEReader(server.url, {"Last-Event-ID": last_id})
    try:
        missed = resumed.wait_for(_final(second))
        assert int(missed["id"]) > int(last_id)
    finally:
        resumed.close()


def test_stuck_subscriber_does_not_slow_the_worker(server, client: Client) -> None:
    # A subscriber that never reads: its socket buffers fill, the server drops it.
    stuck = socket.create_connection(server.address, timeout=5)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        t0 = time.monotonic()
        ids = [client.submit({"cmd_type": "SCAN_QRCODE",
                              "params": {"rack": "S", "positions": list(range(1, 41))}})
               for _ in range(5)]
        for task_id in ids:
            assert client.wait_final(task_id, timeout=60)["status"] == "completed"
        elapsed = time.monotonic() - t0
        # 200 bottles at sim speed 200 is ~20 s of robot time / 200 = ~0.1 s each... the
        # point is that it finishes at all, well inside the deadline, while `stuck` never reads.
        assert elapsed < 45
        assert client.get("/health").status_code == 200
    finally:
        stuck.close()
