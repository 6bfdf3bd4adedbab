"""GET /events for many clients (issue 34): framing, admission, client libraries.

- HTTP/1.1 gets `Transfer-Encoding: chunked`, one chunk per event (and per keep-alive
  comment), `0\\r\\n\\r\\n` when the stream ends; HTTP/1.0 keeps close-delimited framing.
- sseclient-py and `requests`' iter_lines(), connected directly, get a task's completion
  at once (they read in blocks: a close-delimited stream reached them minutes late).
- Streams never take ordinary slots: with more streams than `max_connections` open,
  ordinary requests are served; past `max_streams` a stream gets 503 too_many_streams;
  an ordinary request past `max_connections` gets 503 too_many_connections while
  POST /robot/stop still gets through.
- One thread serves every stream (server/transport/streams.py): a client that leaves
  frees its slot at once; the server's stop ends each stream with its last chunk.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import sseclient

from server.api import routes
from server.transport import streams
from tasks.errors import TooManySubscribers
from tests.conftest import Client, wait_until
from tests.sse import SSEReader

FAST = 20000.0  # simulator speed: a MOVE_TO in a fraction of a millisecond
MOVE = {"cmd_type": "MOVE_TO", "params": {"x": 1, "y": 2, "z": 3}}
FINAL = ("completed", "failed", "cancelled")


def _final(task_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == "task" and e["data"].get("task_id") == task_id \
        and e["data"].get("status") in FINAL


# -- framing ------------------------------------------------------------------------------
def test_http11_stream_is_chunked_one_chunk_per_event(make_server, monkeypatch) -> None:
    monkeypatch.setattr(routes, "KEEPALIVE_S", 0.2)  # a keep-alive comment soon
    server = make_server(sim_speed=FAST)
    client = Client(server)
    reader = SSEReader(server.url)
    try:
        assert reader.status_line.startswith("HTTP/1.1 200")
        head = reader.headers.lower()
        assert "\r\ntransfer-encoding: chunked" in head
        assert "\r\nconnection: close" in head and "content-length" not in head
        task_id = client.submit(MOVE)
        reader.wait_for(_final(task_id))
        deadline = time.monotonic() + 5
        while b": keep-alive\n\n" not in reader.chunks:
            assert time.monotonic() < deadline, "no keep-alive chunk"
            with contextlib.suppress(TimeoutError):
                reader.next_event(0.3)
    finally:
        reader.close()
    # Every chunk is exactly one SSE block: the snapshot (with retry), each event, each
    # keep-alive comment.
    assert reader.chunks[0].startswith(b"retry: 2000\nevent: snapshot\n")
    for chunk in reader.chunks:
        assert chunk.endswith(b"\n\n") and chunk.count(b"\n\n") == 1, chunk
    kinds = [c.split(b"\n")[1] for c in reader.chunks[1:] if c.startswith(b"id: ")]
    assert b"event: task" in kinds


def test_stream_end_is_the_last_chunk(make_server) -> None:
    # A subscriber that falls behind (a queue of one event here) is dropped: its stream
    # ends, and an HTTP/1.1 reader sees the chunked body's end, then the close.
    server = make_server(sim_speed=FAST, event_queue=1)
    reader = SSEReader(server.url)
    try:
        wait_until(lambda: server.events.subscriber_count == 1, 5, message="subscribed")

        def burst() -> bool:
            for i in range(20):  # faster than the stream's thread takes them
                server.events.publish("queue", {"burst": i})
            return server.events.subscriber_count == 0

        wait_until(burst, 5, message="the subscriber dropped")
        with pytest.raises(EOFError):
            while True:  # what was queued before the drop, then the end
                reader.next_event(5)
    finally:
        reader.close()
    assert reader.ended and reader.raw == b""  # `0\r\n\r\n`, nothing after it


def test_streams_end_with_the_last_chunk_when_the_server_stops(make_server) -> None:
    server = make_server(sim_speed=FAST)
    reader = SSEReader(server.url)
    try:
        reader.next_event(5)  # the snapshot
        server.stop()  # a dashboard reconnects (EventSource) to whatever serves next
        with pytest.raises(EOFError):
            reader.next_event(5)
    finally:
        reader.close()
    assert reader.ended and reader.raw == b""


def test_streams_beyond_a_selectors_capacity_get_another_thread(make_server,
                                                                monkeypatch) -> None:
    # Windows' select() takes 512 sockets: there, each 500 streams get a thread.
    monkeypatch.setattr(streams, "CAPACITY", 3)
    server = make_server(sim_speed=FAST)
    client = Client(server)
    readers = [SSEReader(server.url) for _ in range(7)]
    try:
        wait_until(lambda: len(server.httpd._hubs) == 3, 5, message="three hubs")
        task_id = client.submit(MOVE)
        for reader in readers:
            reader.wait_for(_final(task_id))
    finally:
        for reader in readers:
            reader.close()
    wait_until(lambda: server.httpd.connection_counts == (1, 0), 5,
               message="every stream's slot free")  # (the test client's connection)


def test_an_event_that_cannot_be_sent_ends_only_the_streams(make_server, caplog) -> None:
    server = make_server(sim_speed=FAST)
    client = Client(server)
    reader = SSEReader(server.url)
    try:
        reader.next_event(5)
        server.events.publish("queue", {"not json": object()})  # a bug's event
        with pytest.raises(EOFError):
            reader.next_event(5)
    finally:
        reader.close()
    assert "event stream to" in caplog.text
    # The streams' thread lives on: a new stream is served.
    again = SSEReader(server.url)
    try:
        task_id = client.submit(MOVE)
        again.wait_for(_final(task_id))
    finally:
        again.close()


def test_http10_stream_is_close_delimited(make_server) -> None:
    server = make_server(sim_speed=FAST)
    client = Client(server)
    sock = socket.create_connection(server.address, timeout=10)
    try:
        sock.sendall(b"GET /events HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or b"\n\n" not in data.split(b"\r\n\r\n", 1)[1]:
            got = sock.recv(65536)
            assert got, data
            data += got
        head, body = data.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"transfer-encoding" not in head.lower()
        assert b"\r\nconnection: close" in head.lower()
        assert body.startswith(b"retry: 2000\nevent: snapshot\n")  # no chunk size line
        task_id = client.submit(MOVE)
        deadline = time.monotonic() + 10
        needle = f'"task_id": "{task_id}"'.encode()
        while not any(needle in b and b'"completed"' in b for b in body.split(b"\n\n")):
            assert time.monotonic() < deadline, body
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            got = sock.recv(65536)
            assert got, body
            body += got
        assert b"\r\n" not in body  # SSE lines as written, nothing in between
    finally:
        sock.close()


# -- client libraries connected directly ---------------------------------------------------
class Arrival(threading.Thread):
    """Reads a stream in a client library; stamps the arrival of ``task_id``'s final
    event (CLOCK_MONOTONIC). ``ready`` once the snapshot is in."""

    def __init__(self, events: Callable[[], Iterator[tuple[str, str]]]) -> None:
        super().__init__(daemon=True)
        self.events = events
        self.ready = threading.Event()
        self.task_id: str | None = None
        self.arrived: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for kind, data in self.events():
                if kind == "snapshot":
                    self.ready.set()
                elif kind == "task" and self.task_id is not None:
                    doc = json.loads(data)
                    if doc["task_id"] == self.task_id and doc["status"] in FINAL:
                        self.arrived = time.monotonic()
                        return
        except BaseException as exc:  # reported by the test
            self.error = exc


def _sseclient(url: str) -> Iterator[tuple[str, str]]:
    with requests.get(url + "/events", stream=True, timeout=30,
                      headers={"Accept": "text/event-stream"}) as r:
        for event in sseclient.SSEClient(r).events():
            yield event.event, event.data


def _iter_lines(url: str) -> Iterator[tuple[str, str]]:
    with requests.get(url + "/events", stream=True, timeout=30) as r:
        kind = "message"
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                yield kind, line[6:]
            elif not line:
                kind = "message"


def test_sseclient_and_iter_lines_get_a_completion_at_once(make_server) -> None:
    server = make_server(sim_speed=FAST)
    client = Client(server)
    readers = {"sseclient-py": Arrival(lambda: _sseclient(server.url)),
               "requests iter_lines": Arrival(lambda: _iter_lines(server.url))}
    for reader in readers.values():
        reader.start()
    for name, reader in readers.items():
        assert reader.ready.wait(10), f"{name}: no snapshot ({reader.error!r})"
    # A task's events are a few hundred bytes: a reader waiting for a block would sit on
    # them until the next keep-alive comments filled it (minutes).
    client.post("/queue/pause")
    task_id = client.submit(MOVE)
    for reader in readers.values():
        reader.task_id = task_id
    client.post("/queue/resume")
    doc = client.wait_final(task_id)
    ended = time.monotonic()  # the long-poll returned: the task is final
    assert doc["status"] == "completed"
    for name, reader in readers.items():
        reader.join(5)
        assert reader.arrived is not None, f"{name}: no completion ({reader.error!r})"
        assert reader.arrived - ended < 1.0, name


# -- admission -----------------------------------------------------------------------------
class Held:
    """A keep-alive connection that made one ordinary request: it holds an ordinary slot."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.conn = http.client.HTTPConnection(*address, timeout=10)
        self.conn.request("GET", "/health")
        response = self.conn.getresponse()
        response.read()
        assert response.status == 200 and not response.will_close

    def close(self) -> None:
        self.conn.close()


def test_streams_never_take_ordinary_slots(make_server) -> None:
    server = make_server(sim_speed=FAST, max_connections=4, max_streams=40)
    client = Client(server)
    threads = threading.active_count()
    streams: list[SSEReader] = []
    held: list[Held] = []
    try:
        # Ten times the ordinary cap in streams (one stream slot left for a long-poll),
        # all at once, as dashboards reconnecting after a restart: each is accepted
        # (undecided) and counted as a stream once routed. Ordinary requests are served.
        with ThreadPoolExecutor(39) as pool:
            streams += pool.map(lambda _: SSEReader(server.url), range(39))
        assert all(s.status_line.startswith("HTTP/1.1 200") for s in streams)
        # One thread serves them all: no thread per stream, and none left per request.
        wait_until(lambda: threading.active_count() <= threads + 2, 5,
                   message="the handler threads gone")
        wait_until(lambda: server.httpd.connection_counts == (39, 39), 5,
                   message="39 streams")
        assert client.get("/queue/status").status_code == 200
        task_id = client.submit(MOVE)
        assert client.wait_final(task_id)["status"] == "completed"
        assert all(s.wait_for(_final(task_id), 5) for s in streams[::13])
        # The 40th stream, and one past max_streams: 503, and its connection closes.
        streams.append(SSEReader(server.url))
        assert streams[-1].status_line.startswith("HTTP/1.1 200")
        r = requests.get(server.url + "/events", timeout=5)
        assert r.status_code == 503 and r.json()["code"] == "too_many_streams"
        assert r.headers["Connection"] == "close" and r.headers["Retry-After"]
        # Fill the ordinary slots (keep-alive connections that made a request).
        client.session.close()
        wait_until(lambda: server.httpd.connection_counts == (40, 40), 5,
                   message="the test client's connection released")
        held = [Held(server.address) for _ in range(4)]
        # 40 streams + 4 ordinary: every slot taken. A new connection is accepted only
        # on the stop reserve, for POST /robot/stop alone.
        r = requests.get(server.url + "/queue/status", timeout=5)
        assert r.status_code == 503 and r.json()["code"] == "too_many_connections"
        stop = requests.post(server.url + "/robot/stop", timeout=5)
        assert stop.status_code == 200 and stop.json()["stop_sent"] is True
        # A stream ends: a connection is accepted again, but an ordinary request on it
        # finds the ordinary slots taken (503 once routed).
        streams.pop().close()  # seen at once, not at the next write
        wait_until(lambda: server.httpd.connection_counts == (43, 39), 5,
                   message="a stream slot free")
        r = requests.get(server.url + "/queue/status", timeout=5)
        assert r.status_code == 503 and r.json()["code"] == "too_many_connections"
        assert r.headers["Retry-After"] == "1" and r.headers["Connection"] == "close"
        # An ordinary slot freed: ordinary requests are served again.
        held.pop().close()
        wait_until(lambda: requests.get(server.url + "/queue/status", timeout=5)
                   .status_code == 200, 5, message="an ordinary slot free again")
    finally:
        for s in streams:
            s.close()
        for h in held:
            h.close()


def test_a_connection_takes_an_ordinary_slot_once_its_request_is_routed(make_server) -> None:
    server = make_server(sim_speed=FAST, max_connections=2, max_streams=10)
    silent = [socket.create_connection(server.address, timeout=5) for _ in range(6)]
    try:
        # Six connections that sent nothing yet (undecided: each may still become a
        # stream) do not keep an ordinary request out.
        wait_until(lambda: server.httpd.connection_counts == (6, 0), 5, message="6 accepted")
        assert requests.get(server.url + "/queue/status", timeout=5).status_code == 200
        # A request routed on one of them takes its ordinary slot.
        silent[0].sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert silent[0].recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for sock in silent:
            sock.close()


def test_emergency_stop_on_a_connection_accepted_while_ordinary_slots_are_full(
        make_server) -> None:
    server = make_server(sim_speed=FAST, max_connections=2, max_streams=10)
    held = [Held(server.address) for _ in range(2)]
    try:
        # Accepted (stream slots are free), then routed: no ordinary slot for a GET,
        # but POST /robot/stop is served and its connection closes after it.
        r = requests.get(server.url + "/queue/status", timeout=5)
        assert r.status_code == 503 and r.json()["code"] == "too_many_connections"
        stop = requests.post(server.url + "/robot/stop", timeout=5)
        assert stop.status_code == 200 and stop.headers["Connection"] == "close"
    finally:
        for h in held:
            h.close()


def test_event_bus_takes_as_many_subscribers_as_streams(make_server) -> None:
    server = make_server(max_streams=300)
    subs = []
    try:
        # Every stream, and the console's reporter (main.py), may subscribe.
        for _ in range(301):
            subs.append(server.events.subscribe())
        with pytest.raises(TooManySubscribers):
            server.events.subscribe()
    finally:
        for sub in subs:
            sub.close()
