"""The lean request path gives the stdlib's answers: the plain-head parser against
http.server's own parse_request, kernel socket timeouts on real sockets, and the same
reply over loopback whichever path a request takes."""

from __future__ import annotations

import io
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from server.http import MAX_HEADER_BYTES, MAX_REQUEST_LINE
from server.transport.reader import DeadlineReader, DeadlineWriter
from server.transport.requesthead import parse_head


class _StdlibParse(BaseHTTPRequestHandler):
    """http.server's parse_request on bytes, nothing else (no socket, no reply)."""

    protocol_version = "HTTP/1.1"

    def __init__(self, raw: bytes) -> None:  # noqa: D107 - no socketserver set-up
        self.rfile = io.BytesIO(raw)
        self.raw_requestline = self.rfile.readline(65537)
        self.expected = False
        self.ok = self.parse_request()

    def handle_expect_100(self) -> bool:
        self.expected = True
        return True

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        self.error = code


class _FastParse:
    """What server.http.Handler._take_head sets from a parsed head."""

    def __init__(self, raw: bytes) -> None:
        from server.http import Handler
        self.head = parse_head(raw, MAX_REQUEST_LINE, MAX_HEADER_BYTES)
        if self.head is None:
            return
        self.expected = False
        handler = Handler.__new__(Handler)
        handler.handle_expect_100 = self._expect  # type: ignore[method-assign]
        self.ok = Handler._take_head(handler, self.head)
        self.handler = handler

    def _expect(self) -> bool:
        self.expected = True
        return True


PLAIN = [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8090\r\n\r\n",
    b"GET /task/task_20261202_101010_abc123 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n"
    b"User-Agent: curl/7.88.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: lab-pc\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    b"GET /queue/status HTTP/1.0\r\n\r\n",
    b"GET /queue/status HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /health HTTP/1.1\r\nConnection: close\r\nhost: a\r\nHOST: b\r\n\r\n",
    b"POST /queue/pause HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"POST /queue/pause HTTP/1.0\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n",
    b"GET /tasks?status=pending&limit=5 HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n"
    b"X-Spaces:   inner  value  \r\nX-Tab:\tv\tw\r\n\r\n",
    b"OPTIONS / HTTP/1.1\r\nHost: a\r\nOrigin: http://a\r\n"
    b"Access-Control-Request-Method: POST\r\n\r\n",
    b"DELETE /task/t1 HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n"
    b"X-Forwarded-For: 10.0.0.2\r\n\r\n",
]

UNUSUAL = {  # heads the fast path leaves to the stdlib, and why
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n two\r\n\r\n",
    "bare LF": b"GET / HTTP/1.1\nHost: a\n\n",
    "bare LF inside": b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
    "stray CR": b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
    "non-ASCII value": "GET / HTTP/1.1\r\nHost: a\r\nX-Name: 机器人\r\n\r\n".encode(),
    "non-ASCII path": "GET /任务 HTTP/1.1\r\nHost: a\r\n\r\n".encode(),
    "control char in path": b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
    "double slash": b"GET //evil.example/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "absolute form": b"GET http://a/task/1 HTTP/1.1\r\nHost: a\r\n\r\n",
    "asterisk": b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    "HTTP/0.9": b"GET /\r\n\r\n",
    "HTTP/2.0": b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    "odd version": b"GET / HTTP/01.1\r\nHost: a\r\n\r\n",
    "two spaces": b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    "tab separator": b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
    "unknown method": b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n",
    "lower-case method": b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    "no colon": b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
    "empty name": b"GET / HTTP/1.1\r\n: a\r\n\r\n",
    "leading empty line": b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "incomplete head": b"GET / HTTP/1.1\r\nHost: a\r\n",
    "too many headers": b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i
                                                          for i in range(101)) + b"\r\n",
    "request line too long": b"GET /" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\n\r\n",
    "headers too long": b"GET / HTTP/1.1\r\nX: " + b"v" * MAX_HEADER_BYTES + b"\r\n\r\n",
}


def _same_as_stdlib(raw: bytes) -> None:
    fast, std = _FastParse(raw), _StdlibParse(raw)
    assert fast.head is not None, raw
    assert std.ok and fast.ok
    h = fast.handler
    assert (h.command, h.path, h.request_version, h.requestline, h.close_connection) == \
        (std.command, std.path, std.request_version, std.requestline, std.close_connection)
    assert fast.expected == std.expected
    assert h.headers.items() == std.headers.items()
    assert list(h.headers) == list(std.headers) and len(h.headers) == len(std.headers)
    names = {name for name, _ in std.headers.items()} | {"Absent", "host", "HOST"}
    for name in names:
        for spelling in (name, name.lower(), name.upper()):
            assert h.headers.get(spelling) == std.headers.get(spelling)
            assert h.headers.get(spelling, "dflt") == std.headers.get(spelling, "dflt")
            assert h.headers.get_all(spelling) == std.headers.get_all(spelling)
            assert h.headers[spelling] == std.headers[spelling]
            assert (spelling in h.headers) == (spelling in std.headers)
    # The head's size is where the body starts.
    assert raw[fast.head.size:] == std.rfile.read()


@pytest.mark.parametrize("raw", PLAIN, ids=range(len(PLAIN)))
def test_plain_heads_parse_as_the_stdlib_parses_them(raw: bytes) -> None:
    _same_as_stdlib(raw)


@pytest.mark.parametrize("name", list(UNUSUAL))
def test_unusual_heads_are_left_to_the_stdlib(name: str) -> None:
    assert parse_head(UNUSUAL[name], MAX_REQUEST_LINE, MAX_HEADER_BYTES) is None


def test_limits_are_exact() -> None:
    # The longest request line the stdlib serves (8192 bytes with CRLF) is plain too.
    line = b"GET /" + b"a" * (MAX_REQUEST_LINE - len(b"GET / HTTP/1.1\r\n")) + b" HTTP/1.1\r\n"
    assert len(line) == MAX_REQUEST_LINE
    assert parse_head(line + b"Host: a\r\n\r\n", MAX_REQUEST_LINE, MAX_HEADER_BYTES)
    assert parse_head(line[:5] + b"a" + line[5:] + b"\r\n", MAX_REQUEST_LINE,
                      MAX_HEADER_BYTES) is None
    # Header lines and the blank line together: exactly the budget is fine.
    filler = MAX_HEADER_BYTES - len(b"X: \r\n\r\n")
    head = b"GET / HTTP/1.1\r\nX: " + b"v" * filler + b"\r\n\r\n"
    assert parse_head(head, MAX_REQUEST_LINE, MAX_HEADER_BYTES)
    head = b"GET / HTTP/1.1\r\nX: " + b"v" * (filler + 1) + b"\r\n\r\n"
    assert parse_head(head, MAX_REQUEST_LINE, MAX_HEADER_BYTES) is None


def test_random_plain_heads_parse_as_the_stdlib_parses_them() -> None:
    rng = random.Random(18)
    names = ["Host", "Accept", "Content-Type", "X-API-Key", "Connection", "Expect",
             "Accept-Language", "Origin", "X-Forwarded-For", "Idempotency-Key", "x-a_b.c~"]
    values = ["", "a", " lead", "trail ", "\tt\t", "close", "keep-alive", "100-continue",
              "zh-CN,zh;q=0.9", "a: b", "text/html, */*;q=0.8"]
    for _ in range(500):
        method = rng.choice(["GET", "POST", "DELETE", "HEAD", "OPTIONS", "PUT", "PATCH"])
        target = rng.choice(["/", "/task/t_1", "/queue/status?wait=1", "/a/b%20c", "/x#f"])
        version = rng.choice(["HTTP/1.1", "HTTP/1.0"])
        lines = [f"{rng.choice(names)}:{rng.choice(['', ' ', '  '])}{rng.choice(values)}"
                 for _ in range(rng.randint(0, 12))]
        raw = "\r\n".join([f"{method} {target} {version}", *lines]) + "\r\n\r\nbody"
        _same_as_stdlib(raw.encode("ascii"))


# -- kernel socket timeouts ------------------------------------------------------------
class _CountingSocket(socket.socket):
    """A real socket that counts the option changes made on it."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.changes = 0

    def setsockopt(self, *args: object) -> None:  # type: ignore[override]
        self.changes += 1
        super().setsockopt(*args)  # type: ignore[arg-type]

    def settimeout(self, value: float | None) -> None:
        self.changes += 1
        super().settimeout(value)


def _pair() -> tuple[_CountingSocket, socket.socket]:
    a, b = socket.socketpair()
    counted = _CountingSocket(a.family, a.type, a.proto, fileno=a.detach())
    return counted, b


def test_requests_that_arrive_whole_cost_no_timeout_change() -> None:
    server_side, client = _pair()
    try:
        reader = DeadlineReader(server_side, idle=30.0, write=10.0)
        assert reader.kernel
        rfile = io.BufferedReader(reader, 65536)
        before = server_side.changes
        for _ in range(100):  # the handler's cycle: idle wait, then the request deadline
            client.sendall(b"GET / HTTP/1.1\r\n\r\n")
            reader.arm_idle(30.0)
            data = rfile.peek(1)
            reader.arm(15.0, 10.0)
            rfile.read(len(data))
            reader.disarm(10.0)
        assert server_side.changes == before
        assert server_side.gettimeout() is None  # blocking: no poll() per call
    finally:
        server_side.close()
        client.close()


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "poll"])
def test_a_silent_client_times_out_at_the_read_timeout(kernel: bool) -> None:
    server_side, client = _pair()
    try:
        reader = DeadlineReader(server_side, idle=0.3, write=1.0, kernel=kernel)
        assert reader.kernel is kernel
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            reader.readinto(bytearray(16))
        assert 0.25 <= time.monotonic() - t0 < 2.0
    finally:
        server_side.close()
        client.close()


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "poll"])
def test_a_trickling_client_is_cut_off_at_the_deadline(kernel: bool) -> None:
    server_side, client = _pair()
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.05):
            client.send(b"x")

    feeder = threading.Thread(target=trickle)
    feeder.start()
    try:
        reader = DeadlineReader(server_side, idle=5.0, write=1.0, kernel=kernel)
        reader.arm(0.5, 5.0)  # each byte comes in time; the whole request does not
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            while True:
                reader.readinto(bytearray(1))
        assert 0.45 <= time.monotonic() - t0 < 1.5
    finally:
        stop.set()
        feeder.join()
        server_side.close()
        client.close()


def test_a_reader_that_never_reads_makes_the_write_time_out() -> None:
    server_side, client = _pair()
    try:
        server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        assert DeadlineReader(server_side, idle=5.0, write=0.3).kernel
        writer = DeadlineWriter(server_side, total=0.3)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            for _ in range(1000):
                writer.write(b"x" * 65536)
        assert time.monotonic() - t0 < 3.0
    finally:
        server_side.close()
        client.close()


def test_partial_sends_complete_the_response() -> None:
    server_side, client = _pair()
    received = bytearray()
    payload = bytes(range(256)) * 8192  # 2 MiB: more than one send takes

    def drain() -> None:
        while len(received) < len(payload):
            chunk = client.recv(65536)
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        DeadlineReader(server_side, idle=5.0, write=5.0)
        assert DeadlineWriter(server_side, total=5.0).write(payload) == len(payload)
        reader.join(10)
        assert bytes(received) == payload
    finally:
        server_side.close()
        client.close()


# -- over loopback: either path, the same reply -----------------------------------------
def _exchange(address: tuple[str, int], raw: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length:
            body += conn.recv(65536)
    # Date and the request's own id differ between two exchanges; the rest may not.
    lines = [line for line in head.split(b"\r\n")
             if not line.startswith((b"Date:", b"X-Request-ID:"))]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.mark.parametrize("path", ["/queue/status", "/health", "/nope", "/task/none",
                                  "/queue/status?since=x", "/tasks?limit=1"])
def test_the_fast_path_and_the_stdlib_path_answer_alike(server, path: str) -> None:
    plain = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    # A folded header line sends the same request down the stdlib's path.
    folded = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
              f"X-Note: one\r\n two\r\n\r\n").encode()
    assert parse_head(plain, MAX_REQUEST_LINE, MAX_HEADER_BYTES) is not None
    assert parse_head(folded, MAX_REQUEST_LINE, MAX_HEADER_BYTES) is None
    if path == "/queue/status":  # nothing may change the document between the two
        server.manager.pause("fast path test")
    assert _exchange(server.address, plain) == _exchange(server.address, folded)


def test_keep_alive_requests_in_one_packet_are_answered_in_order(server) -> None:
    with socket.create_connection(server.address, timeout=10) as conn:
        conn.sendall(b"".join(f"GET /nope{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
                              for i in range(5)))
        data = b""
        deadline = time.monotonic() + 10
        while data.count(b"HTTP/1.1 404") < 5 and time.monotonic() < deadline:
            data += conn.recv(65536)
    assert [f"/nope{i}" in data.decode() for i in range(5)] == [True] * 5
    assert data.index(b"/nope0") < data.index(b"/nope4")


def test_fixed_paths_are_routed_as_the_ordered_scan_routes_them() -> None:
    from server.api.routes import build_router
    from server.errors import ApiError

    fast, scan = build_router(), build_router()
    scan._fixed.clear()
    assert fast._fixed  # the shortcut is in use
    paths = ["/", "/validate", "/tasks", "/queue/status", "/queue/pause", "/robot/stop",
             "/robot", "/health", "/commands", "/metrics", "/events", "/openapi.json",
             "/openapiXjson", "/task/t1", "/task/t1/retry", "/static/app.js", "/nope",
             "/queue/status/", "/health/"]
    for method in ("GET", "POST", "DELETE", "HEAD", "PUT", "OPTIONS"):
        for path in paths:
            outcomes = []
            for router in (fast, scan):
                try:
                    func, params = router.match(method, path)
                    outcomes.append((func, params))
                except ApiError as exc:
                    outcomes.append((exc.code, exc.status, exc.headers))
            assert outcomes[0] == outcomes[1], (method, path)


def test_timeout_values_for_the_kernel() -> None:
    import struct

    from server.transport import reader
    # POSIX: a struct timeval; never 0 (the kernel's "wait forever") for a deadline
    # that is nearly up; None is 0, no timeout.
    assert reader._timeval(2.5, windows=False) == struct.pack("ll", 2, 500000)
    assert reader._timeval(0.0, windows=False) == struct.pack("ll", 0, 1000)
    assert reader._timeval(None, windows=False) == struct.pack("ll", 0, 0)
    # Windows (the lab PC): a DWORD of milliseconds, with the same two rules.
    assert reader._timeval(2.5, windows=True) == 2500
    assert reader._timeval(0.0, windows=True) == 1
    assert reader._timeval(None, windows=True) == 0
