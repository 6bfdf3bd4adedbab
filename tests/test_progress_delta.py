"""Progress events as deltas (issue 34): each SSE `progress` event carries only the items
new since the previous one (`items_from`, `items_count`), at most 4 KB a frame (a burst
that does not fit is announced by `items_omitted`), while GET /task keeps them all.

The real server and simulator; the stream read raw over HTTP/1.0 (close-delimited), so
each event's exact bytes are measured.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

from tests.conftest import Client, wait_until

HOME = {"cmd_type": "HOME", "params": {}}
FRAME_LIMIT = 4096


class Stream:
    """GET /events over HTTP/1.0 (so the body is the events' bytes themselves, not chunked):
    its events as (frame bytes, fields) in order, read by a thread."""

    def __init__(self, url: str, last_event_id: str | None = None) -> None:
        host, port = url.split("//")[1].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        extra = "" if last_event_id is None else f"Last-Event-ID: {last_event_id}\r\n"
        self.sock.sendall(f"GET /events HTTP/1.0\r\nHost: {host}\r\n"
                          f"Accept: text/event-stream\r\n{extra}\r\n".encode())
        self.sock.settimeout(None)  # closing it ends the reader
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _frames(self) -> Iterator[bytes]:
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            buffer += self.sock.recv(65536) or b"\r\n\r\n"
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0], head
        while True:
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                yield frame + b"\n\n"
            data = self.sock.recv(65536)
            if not data:
                return
            buffer += data

    def _read(self) -> None:
        try:
            for frame in self._frames():
                fields: dict[str, Any] = {}
                for line in frame.decode("utf-8").split("\n"):
                    key, sep, value = line.partition(": ")
                    if sep and key in ("id", "event", "data"):
                        fields[key] = json.loads(value) if key == "data" else value
                if "data" in fields:
                    with self.lock:
                        self.events.append((len(frame), fields))
        except OSError:
            return  # closed by the test

    def progress(self, task_id: str) -> list[tuple[int, dict[str, Any]]]:
        with self.lock:
            return [(size, e) for size, e in self.events
                    if e["event"] == "progress" and e["data"]["task_id"] == task_id]

    def final(self, task_id: str) -> dict[str, Any] | None:
        with self.lock:
            return next((e for _, e in self.events
                         if e["event"] == "task" and e["data"]["task_id"] == task_id
                         and e["data"]["status"] in ("completed", "failed", "cancelled")),
                        None)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


def rebuilt(deltas: list[dict[str, Any]], known: list[Any] | None = None) -> list[Any]:
    """The items a client gets by appending each delta, checking that every one starts
    where the one before ended (items_omitted: a gap the client would fill from GET /task,
    here filled with None)."""
    items = list(known or [])
    for delta in deltas:
        omitted = delta.get("items_omitted", 0)
        assert delta["items_from"] - omitted == len(items), (delta, len(items))
        items += [None] * omitted + delta["items"]
        assert delta["items_count"] == len(items)
    return items


def test_scan_deltas_add_up_to_the_final_items(make_server) -> None:
    server = make_server(sim_speed=400.0)  # a bottle per 50 ms: several per event
    stream = Stream(server.url)
    try:
        client = Client(server)
        task_id = client.submit({"cmd_type": "SCAN_QRCODE",
                                 "params": {"rack": "A", "positions": list(range(1, 21))}})
        doc = client.wait_final(task_id)
        assert doc["status"] == "completed"
        wait_until(lambda: stream.final(task_id), 10, message="the final event")
        events = stream.progress(task_id)
        deltas = [e["data"]["progress"] for _, e in events]
        assert len(deltas) >= 3 and deltas[0]["items_from"] == 0
        assert any(len(d["items"]) > 1 for d in deltas)  # deltas, not one item per event
        assert rebuilt(deltas) == doc["progress"]["items"]
        assert [i["position"] for i in doc["progress"]["items"]] == list(range(1, 21))
        assert all(size <= FRAME_LIMIT for size, _ in events)
        assert deltas[-1]["done"] == 20 and deltas[-1]["total"] == 20
    finally:
        stream.close()


def test_a_flood_keeps_every_frame_small_and_get_task_whole(make_server) -> None:
    server = make_server()
    client, sim = Client(server), server.simulator
    sim.flood_rate, sim.flood_seconds, sim.flood_items = 2000.0, 1.5, True
    sim.set_fault("flood")
    stream = Stream(server.url)
    try:
        task_id = client.submit(HOME)
        reads = 0

        def whole_so_far() -> bool:
            # Read while it runs: every item so far, in order, as many as counted.
            nonlocal reads
            doc = client.task(task_id)
            progress = doc.get("progress") or {}
            items = progress.get("items") or []
            assert items == [{"flood": k} for k in range(1, len(items) + 1)]
            if doc["status"] == "running" and items:
                assert len(items) == progress["done"]
                reads += 1
            return reads >= 3 and len(items) >= 1000

        wait_until(whole_so_far, 10, interval=0.05, message="GET /task during the flood")
        doc = client.wait_final(task_id)
        assert doc["status"] == "completed" and len(doc["progress"]["items"]) == 3000
        wait_until(lambda: stream.final(task_id), 10, message="the final event")
        events = stream.progress(task_id)
        sizes = [size for size, _ in events]
        assert max(sizes) <= FRAME_LIMIT, max(sizes)
        deltas = [e["data"]["progress"] for _, e in events]
        assert any(d.get("items_omitted") for d in deltas)  # 400 items per 200 ms: too many
        assert all(d["items"] == [] for d in deltas if d.get("items_omitted"))
        items = rebuilt(deltas)
        assert len(items) == 3000
        assert all(item in (None, {"flood": k}) for k, item in enumerate(items, start=1))
    finally:
        stream.close()


def test_a_reconnect_with_last_event_id_replays_the_missed_deltas(make_server) -> None:
    server = make_server()  # a bottle per 100 ms
    client = Client(server)
    stream = Stream(server.url)
    task_id = client.submit({"cmd_type": "SCAN_QRCODE",
                             "params": {"rack": "B", "positions": list(range(1, 13))}})
    try:
        wait_until(lambda: len(stream.progress(task_id)) >= 2, 10, message="two deltas")
    finally:
        stream.close()
    seen = stream.progress(task_id)
    doc = client.wait_final(task_id)  # the rest happens while nobody listens
    assert doc["status"] == "completed"
    last = seen[-1][1]
    resumed = Stream(server.url, last_event_id=last["id"])
    try:
        wait_until(lambda: resumed.final(task_id), 10, message="the replayed final event")
        replayed = resumed.progress(task_id)
        assert replayed and int(replayed[0][1]["id"]) > int(last["id"])
        known = rebuilt([e["data"]["progress"] for _, e in seen])
        assert rebuilt([e["data"]["progress"] for _, e in replayed], known) \
            == doc["progress"]["items"]
        assert len(doc["progress"]["items"]) == 12
    finally:
        resumed.close()
