"""Server-Sent Events: completion, resume from Last-Event-ID, slow subscribers."""

from __future__ import annotations

import socket
import time

from tests.conftest import Client, wait_until
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


def test_stuck_subscriber_is_dropped_without_slowing_the_worker(make_server) -> None:
    # ~1 ms per bottle and progress recorded as often as it comes: hundreds of events
    # fast; a small per-subscriber buffer so the overflow does not depend on how much
    # the kernel's socket buffers absorb.
    server = make_server(sim_speed=20000.0, event_queue=50, progress_interval=0.0)
    client = Client(server)
    # A subscriber that never reads, with a tiny receive window and segment size set
    # before connecting: the server's writes to it block and its event queue overflows.
    # (Loopback's 64 KiB segments would let the server's send buffer grow to ~1 MB, more
    # than these small progress events fill.)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    stuck.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    stuck.settimeout(5)
    stuck.connect(server.address)
    stuck.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    wait_until(lambda: server.events.subscriber_count == 1, 5, message="subscribed")
    watcher = SSEReader(server.url)  # a healthy subscriber next to the stuck one
    try:
        t0 = time.monotonic()
        ids = [client.submit({"cmd_type": "SCAN_QRCODE",
                              "params": {"rack": "S", "positions": list(range(1, 97))}})
               for _ in range(8)]
        for task_id in ids:
            assert client.wait_final(task_id, timeout=60)["status"] == "completed"
        elapsed = time.monotonic() - t0
        # 768 bottles at ~1 ms each: the worker was never held up by the stuck reader.
        assert elapsed < 20
        watcher.wait_for(_final(ids[-1]), 20)  # the healthy one saw everything
        wait_until(lambda: server.events.subscriber_count == 1, 10,
                   message="the stuck subscriber to be dropped")
        assert client.get("/health").status_code == 200
    finally:
        stuck.close()
        watcher.close()
