"""The HTTP layer against hostile clients, through real sockets.

Raw bytes where a client library would refuse to send them. Every refusal must
be JSON, create no task and leave the server healthy. Deadlines are shortened
through settings so slow-client cases finish in about a second.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, SCAN, Client, wait_until
from tests.proc import free_port, sigterm, wait_healthy

SCAN_BODY = json.dumps(SCAN).encode()


class Raw:
    """One client connection speaking bytes; reads responses exactly as framed."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.host = f"{address[0]}:{address[1]}"
        self.buffer = b""

    def send(self, data: bytes) -> Raw:
        self.sock.sendall(data)
        return self

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no response in time")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill(deadline):
                raise EOFError(f"connection closed; got {self.buffer!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in
                   (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if not self._fill(deadline):
                raise EOFError("body cut short")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed(self, timeout: float = 3.0) -> bool:
        """True once the server has closed the connection (EOF or reset)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.buffer = b""
                if not self._fill(deadline):
                    return True
        except (ConnectionError, OSError) as exc:
            return not isinstance(exc, TimeoutError)

    def close(self) -> None:
        self.sock.close()


def _ordinary(address: tuple[str, int]) -> Raw:
    """A keep-alive connection holding an ordinary slot: a connection takes one once a
    request on it is routed (until then it might still become a stream)."""
    conn = Raw(address)
    assert conn.send(_request("GET", "/health", conn.host)).response()[0] == 200
    return conn


def _request(method: str, path: str, host: str, *, headers: dict[str, str] | None = None,
             body: bytes = b"", length: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if length and body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _total_tasks(client: Client) -> int:
    return client.status()["total_tasks"]


def _assert_json_error(status: int, body: bytes, expected: int) -> None:
    assert status == expected, body
    doc = json.loads(body)
    assert doc["success"] is False and isinstance(doc["message"], str), doc
    assert isinstance(doc["code"], str) and doc["code"].isidentifier(), doc


# -- the hostile corpus ---------------------------------------------------------------------
JSON_HEADERS = "Content-Type: application/json\r\n"
POST = "POST / HTTP/1.1\r\nHost: {host}\r\n"
CORPUS: list[tuple[str, bytes, int]] = [
    # A well-formed chunked body is accepted (tests/test_http_transport.py); these are not.
    ("chunked with a non-hex size", (POST + JSON_HEADERS + "Transfer-Encoding: chunked\r\n\r\n")
     .encode() + b"zz\r\n" + SCAN_BODY + b"\r\n0\r\n\r\n", 400),
    ("chunked under another coding", (POST + JSON_HEADERS + "Transfer-Encoding: gzip, chunked"
                                      "\r\n\r\n").encode()
     + b"%x\r\n" % len(SCAN_BODY) + SCAN_BODY + b"\r\n0\r\n\r\n", 501),
    ("CL and TE", (POST + JSON_HEADERS + f"Content-Length: {len(SCAN_BODY)}\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n").encode() + SCAN_BODY, 400),
    ("duplicate CL", (POST + JSON_HEADERS + f"Content-Length: {len(SCAN_BODY)}\r\n"
                      f"Content-Length: {len(SCAN_BODY)}\r\n\r\n").encode() + SCAN_BODY, 400),
    ("negative CL", (POST + JSON_HEADERS + "Content-Length: -1\r\n\r\n").encode() + SCAN_BODY,
     400),
    ("non-numeric CL", (POST + JSON_HEADERS + "Content-Length: 12abc\r\n\r\n").encode(), 400),
    ("non-ASCII digit CL", (POST + JSON_HEADERS).encode() + b"Content-Length: \xb2\r\n\r\n",
     400),
    ("CL with sign", (POST + JSON_HEADERS + "Content-Length: +5\r\n\r\n").encode(), 400),
    ("CL of 30 digits", (POST + JSON_HEADERS + "Content-Length: " + "9" * 30 + "\r\n\r\n")
     .encode(), 400),
    ("body over 64 KiB", (POST + JSON_HEADERS + "Content-Length: 70000\r\n\r\n").encode(), 413),
    ("POST without CL", (POST + JSON_HEADERS + "\r\n").encode(), 411),
    ("text/plain", (POST + "Content-Type: text/plain\r\n"
                    f"Content-Length: {len(SCAN_BODY)}\r\n\r\n").encode() + SCAN_BODY, 415),
    ("not JSON", (POST + JSON_HEADERS + "Content-Length: 5\r\n\r\n{nope").encode(), 400),
    ("not UTF-8", (POST + JSON_HEADERS + "Content-Length: 4\r\n\r\n").encode() + b'"\xff\xfe"',
     400),
    ("deep nesting", (POST + JSON_HEADERS + "Content-Length: 2000\r\n\r\n").encode()
     + b"[" * 1000 + b"]" * 1000, 400),
    ("NaN", (POST + JSON_HEADERS + "Content-Length: 3\r\n\r\nNaN").encode(), 400),
    ("Infinity in params", (POST + JSON_HEADERS + "Content-Length: 55\r\n\r\n").encode()
     + b'{"cmd_type":"MOVE_TO","params":{"x":1e999,"y":0,"z":0}}', 400),
    ("5000-digit integer", (POST + JSON_HEADERS + "Content-Length: 5000\r\n\r\n").encode()
     + b"9" * 5000, 400),
    ("request line too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: {host}\r\n\r\n",
     414),
    ("header too large", b"GET /health HTTP/1.1\r\nHost: {host}\r\nX-Big: " + b"b" * 40000
     + b"\r\n\r\n", 431),
    ("too many headers", b"GET /health HTTP/1.1\r\nHost: {host}\r\n"
     + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431),
    ("garbage request line", b"HELLO\r\n\r\n", 400),
    ("bad version", b"GET /health HTTP/1.1x\r\nHost: {host}\r\n\r\n", 400),
    ("HTTP/2 version", b"GET /health HTTP/2.0\r\nHost: {host}\r\n\r\n", 505),
    # On the API: /health skips the Host check (monitors use any name).
    ("no Host on HTTP/1.1", b"GET /queue/status HTTP/1.1\r\n\r\n", 400),
    ("two Host headers", b"GET /queue/status HTTP/1.1\r\nHost: {host}\r\nHost: {host}\r\n\r\n",
     400),
    ("foreign Host (DNS rebinding)", (POST.replace("{host}", "evil.example") + JSON_HEADERS
                                      + f"Content-Length: {len(SCAN_BODY)}\r\n\r\n").encode()
     + SCAN_BODY, 421),
    ("cross-origin text/plain POST", (POST + "Origin: http://evil.example\r\n"
                                      "Content-Type: text/plain\r\n"
                                      f"Content-Length: {len(SCAN_BODY)}\r\n\r\n").encode()
     + SCAN_BODY, 403),
    ("unknown method", (f"BREW / HTTP/1.1\r\nHost: {{host}}\r\n{JSON_HEADERS}"
                        f"Content-Length: {len(SCAN_BODY)}\r\n\r\n").encode() + SCAN_BODY, 405),
    ("NUL in path", b"GET /\x00 HTTP/1.1\r\nHost: {host}\r\n\r\n", 404),
]

KEEPS_CONNECTION = {"POST without CL", "text/plain", "not JSON", "not UTF-8", "deep nesting",
                    "NaN", "Infinity in params", "5000-digit integer", "NUL in path"}


@pytest.mark.timeout(60)
def test_hostile_corpus_is_refused_with_json_and_runs_nothing(server, client) -> None:
    host = f"{server.address[0]}:{server.address[1]}"
    for name, template, expected in CORPUS:
        conn = Raw(server.address)
        try:
            conn.send(template.replace(b"{host}", host.encode()))
            status, headers, body = conn.response()
            assert status == expected, (name, status, body)
            _assert_json_error(status, body, expected)
            assert headers["content-type"] == "application/json; charset=utf-8", name
            if name in KEEPS_CONNECTION:  # the body was read: the connection is in step
                assert headers.get("connection") != "close", name
            else:  # framing, limits, foreign Host/Origin: the connection ends
                assert headers.get("connection") == "close", name
                assert conn.closed(), name
        finally:
            conn.close()
    assert _total_tasks(client) == 0
    assert client.get("/health").status_code == 200


@pytest.mark.timeout(30)
def test_body_on_an_endpoint_that_ignores_it_cannot_smuggle_a_request(server, client) -> None:
    host = f"{server.address[0]}:{server.address[1]}"
    smuggled = _request("POST", "/", host, headers={"Content-Type": "application/json"},
                        body=SCAN_BODY)
    conn = Raw(server.address)
    try:
        # Endpoints that ignore bodies still consume them: the connection stays in step.
        for method, path in (("POST", "/queue/resume"), ("GET", "/health")):
            conn.send(_request(method, path, host, body=smuggled))
            status, headers, _ = conn.response()
            assert status == 200 and headers.get("connection") != "close"
        conn.send(_request("GET", "/queue/status", host))
        status, _, body = conn.response()
        assert status == 200 and json.loads(body)["total_tasks"] == 0
        # A refusal before the body is read (unknown path) closes instead.
        conn.send(_request("POST", "/nowhere", host, body=smuggled))
        status, headers, _ = conn.response()
        assert status == 404 and headers.get("connection") == "close"
        assert conn.closed()
    finally:
        conn.close()
    # CL+TE with a chunked body hiding a second request: refused, nothing runs.
    chunk = b"0\r\n\r\n" + smuggled
    conn = Raw(server.address)
    try:
        conn.send((f"POST /queue/resume HTTP/1.1\r\nHost: {host}\r\nContent-Length: "
                   f"{len(chunk)}\r\nTransfer-Encoding: chunked\r\n\r\n").encode() + chunk)
        status, _, body = conn.response()
        _assert_json_error(status, body, 400)
        assert json.loads(body)["code"] == "length_and_chunked"
        assert conn.closed()
    finally:
        conn.close()
    assert _total_tasks(client) == 0


@pytest.mark.timeout(30)
def test_unauthorized_request_with_body_closes_the_connection(make_server) -> None:
    server = make_server(api_token="t0ken-for-tests-0001")
    host = f"{server.address[0]}:{server.address[1]}"
    smuggled = _request("POST", "/", host, headers={"Content-Type": "application/json",
                                                    "X-API-Key": "t0ken-for-tests-0001"},
                        body=SCAN_BODY)
    conn = Raw(server.address)
    try:
        conn.send(_request("POST", "/queue/resume", host, body=smuggled))
        status, headers, _ = conn.response()
        assert status == 401 and headers.get("connection") == "close"
        assert conn.closed()
    finally:
        conn.close()
    r = requests.get(server.url + "/queue/status", headers={"X-API-Key": "t0ken-for-tests-0001"},
                     timeout=5)
    assert r.json()["total_tasks"] == 0


@pytest.mark.timeout(30)
def test_expect_continue_is_answered_only_for_an_acceptable_request(server, client) -> None:
    host = f"{server.address[0]}:{server.address[1]}"
    conn = Raw(server.address)
    try:
        conn.send(f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                  f"Expect: 100-continue\r\nContent-Length: {len(SCAN_BODY)}\r\n\r\n".encode())
        status, _, _ = conn.response()
        assert status == 100
        conn.send(SCAN_BODY)
        status, _, body = conn.response()
        assert status == 202, body
        conn.send(f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                  "Expect: 100-continue\r\nContent-Length: 999999\r\n\r\n".encode())
        status, _, body = conn.response()
        _assert_json_error(status, body, 413)
    finally:
        conn.close()


# -- browser defences --------------------------------------------------------------------
def test_cross_origin_browser_requests_are_refused(server, client) -> None:
    evil = {"Origin": "http://evil.example"}
    r = client.post("/robot/stop", headers=evil)
    assert r.status_code == 403 and r.json()["success"] is False
    assert client.status()["paused"] is False
    r = requests.post(server.url + "/", data=SCAN_BODY, timeout=5,
                      headers={**evil, "Content-Type": "text/plain"})
    assert r.status_code == 403
    assert _total_tasks(client) == 0
    # The dashboard (same origin) and plain clients (no Origin) are served.
    r = client.post("/", SCAN, headers={"Origin": server.url})
    assert r.status_code == 202
    assert "Access-Control-Allow-Origin" not in r.headers
    assert client.get("/health").status_code == 200


def test_host_header_must_name_this_server(make_server) -> None:
    server = make_server(allowed_hosts=("robot.lab",))
    port = server.address[1]
    for host, expected in (("evil.example", 421), (f"evil.example:{port}", 421),
                           ("127.0.0.1.nip.io", 421), (f"172.16.11.130:{port}", 200),
                           (f"localhost:{port}", 200), (f"[::1]:{port}", 200),
                           (f"robot.lab:{port}", 200), (f"{socket.gethostname()}:{port}", 200)):
        r = requests.get(server.url + "/queue/status", headers={"Host": host}, timeout=5)
        assert r.status_code == expected, (host, r.text)
        if expected == 421:
            assert r.json()["success"] is False


def test_cors_only_for_the_configured_origin(make_server) -> None:
    lims = "http://lims.example:8080"
    server = make_server(cors_origin=lims)
    pre = requests.options(server.url + "/", timeout=5, headers={
        "Origin": lims, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == lims
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    r = requests.post(server.url + "/", json=SCAN, headers={"Origin": lims}, timeout=5)
    assert r.status_code == 202 and r.headers["Access-Control-Allow-Origin"] == lims
    assert "Location" in r.headers["Access-Control-Expose-Headers"]
    other = requests.options(server.url + "/", timeout=5, headers={
        "Origin": "http://other.example", "Access-Control-Request-Method": "POST"})
    assert other.status_code == 403 and "Access-Control-Allow-Origin" not in other.headers


# -- access control ---------------------------------------------------------------------
def test_api_token_on_and_off(make_server) -> None:
    open_server = make_server()
    assert requests.get(open_server.url + "/queue/status", timeout=5).status_code == 200
    token = "s3cret-token-for-tests"
    server = make_server(api_token=token)
    url = server.url
    r = requests.get(url + "/queue/status", timeout=5)
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    assert requests.get(url + "/queue/status", headers={"X-API-Key": "wrong"},
                        timeout=5).status_code == 401
    assert requests.get(url + "/queue/status", headers={"Authorization": f"Bearer {token}"},
                        timeout=5).status_code == 200
    assert requests.get(url + "/queue/status", headers={"X-API-Key": token},
                        timeout=5).status_code == 200
    assert requests.post(url + "/robot/stop", timeout=5).status_code == 401
    # Only liveness is public among the API's endpoints (docs/security.md).
    assert requests.get(url + "/health", timeout=5).status_code == 200
    assert requests.get(url + "/openapi.json", timeout=5).status_code == 401


def test_allow_list_refuses_other_client_addresses(make_server) -> None:
    outside = make_server(allow=("10.99.0.0/16", "192.0.2.7"))
    r = requests.get(outside.url + "/health", timeout=5)
    assert r.status_code == 403 and r.json()["success"] is False
    inside = make_server(allow=("10.99.0.0/16", "127.0.0.0/8"))
    assert requests.get(inside.url + "/health", timeout=5).status_code == 200


@pytest.mark.timeout(60)
def test_main_takes_the_token_from_the_environment_and_never_prints_it(tmp_path) -> None:
    token = "env-token-0123456789abcd"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "main.py", "serve", "--mode", "queue", "--host", "127.0.0.1",
         "--port", str(port), "--robot", "sim", "--sim-speed", "200", "--db",
         str(tmp_path / "t.db")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env={**os.environ, "ROBOT_API_TOKEN": token})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        assert requests.get(url + "/tasks", timeout=5).status_code == 401
        assert requests.get(url + "/tasks", headers={"X-API-Key": token},
                            timeout=5).status_code == 200
    finally:
        out = sigterm(proc)
    assert "API token: set (…abcd)" in out
    assert token not in out


# -- timeouts and concurrency -----------------------------------------------------------
@pytest.mark.timeout(30)
def test_slowloris_trickle_is_cut_off_at_the_deadline(make_server) -> None:
    server = make_server(request_deadline=1.0, request_timeout=2.0)
    request = _request("GET", "/health", f"127.0.0.1:{server.address[1]}")
    conn = Raw(server.address)
    started = time.monotonic()
    answer = b""
    try:
        # One byte per 0.1 s: each read is well inside the per-read timeout.
        for byte in request:
            conn.sock.sendall(bytes([byte]))
            conn.sock.settimeout(0.1)
            try:
                answer = conn.sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionError:
                answer = b"reset"
            break
        elapsed = time.monotonic() - started
    finally:
        conn.close()
    assert answer, "the whole request trickled in: the deadline never cut it off"
    assert answer == b"reset" or answer.startswith(b"HTTP/1.1 408"), answer
    assert 0.9 <= elapsed < 2.5, elapsed


@pytest.mark.timeout(30)
def test_half_open_connections_do_not_delay_a_normal_request(make_server) -> None:
    server = make_server(request_deadline=1.5, idle_timeout=1.5)
    stalled = []
    for i in range(60):
        conn = Raw(server.address)
        if i % 2:
            conn.send(b"GET /queue/sta")  # half a request line
        stalled.append(conn)
    try:
        wait_until(lambda: server.httpd.connection_counts[0] >= 60, 5, message="60 accepted")
        started = time.monotonic()
        r = requests.get(server.url + "/queue/status", timeout=5)
        assert r.status_code == 200
        assert time.monotonic() - started < 1.0
        # All 60 are cut off by the deadlines (408 for the half requests, or just closed).
        for conn in stalled:
            assert conn.closed(timeout=4.0)
        wait_until(lambda: server.httpd.connection_counts[0] == 0, 5,
                   message="handler threads gone")
    finally:
        for conn in stalled:
            conn.close()


@pytest.mark.timeout(30)
def test_idle_keep_alive_connection_is_closed(make_server) -> None:
    server = make_server(idle_timeout=0.5)
    conn = Raw(server.address)
    try:
        conn.send(_request("GET", "/health", f"127.0.0.1:{server.address[1]}"))
        status, headers, _ = conn.response()
        assert status == 200 and headers.get("connection") != "close"
        started = time.monotonic()
        assert conn.closed(timeout=3.0)
        assert 0.4 <= time.monotonic() - started < 2.0
    finally:
        conn.close()


@pytest.mark.timeout(30)
def test_connection_cap_answers_503_fast_and_recovers(make_server) -> None:
    server = make_server(max_connections=5)
    held = [_ordinary(server.address) for _ in range(5)]
    try:
        wait_until(lambda: server.httpd.connection_counts[0] == 5, 5, message="5 accepted")
        started = time.monotonic()
        r = requests.get(server.url + "/health", timeout=5)
        assert time.monotonic() - started < 1.0
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert r.json()["success"] is False
    finally:
        for conn in held:
            conn.close()
    wait_until(lambda: server.httpd.connection_counts[0] == 0, 5, message="slots released")
    assert requests.get(server.url + "/health", timeout=5).status_code == 200


@pytest.mark.timeout(30)
def test_long_polls_use_their_own_pool(make_server) -> None:
    server = make_server(max_connections=2, max_streams=2, max_wait=10.0)
    host = f"127.0.0.1:{server.address[1]}"
    polls = [Raw(server.address).send(_request("GET", "/queue/status?wait=10", host))
             for _ in range(2)]
    try:
        wait_until(lambda: server.httpd.connection_counts == (2, 2), 5,
                   message="two long-polls waiting")
        # Both ordinary slots' worth of connections are long-polls: ordinary requests pass.
        started = time.monotonic()
        assert requests.get(server.url + "/health", timeout=5).status_code == 200
        assert time.monotonic() - started < 1.0
        r = requests.get(server.url + "/queue/status", params={"wait": 10}, timeout=5)
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert r.headers.get("Connection") == "close"  # the refused client frees its slot
        # The server counts a connection until its thread has seen the close: the client
        # returning first is not the slot being free, so wait for the count.
        wait_until(lambda: server.httpd.connection_counts == (2, 2), 5,
                   message="the ordinary connections released")
        # A change answers the waiting polls at once.
        assert requests.post(server.url + "/queue/pause", timeout=5).status_code == 200
        for conn in polls:
            status, _, body = conn.response()
            assert status == 200 and json.loads(body)["paused"] is True
    finally:
        for conn in polls:
            conn.close()


def test_queue_cap_answers_503_with_retry_after(make_server) -> None:
    server = make_server(max_queue=2)
    client = Client(server)
    assert client.post("/queue/pause").status_code == 200  # keep tasks pending
    client.submit()
    client.submit()
    r = client.post("/", SCAN)
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert r.json()["success"] is False
    assert _total_tasks(client) == 2
    # An Idempotency-Key does not get a new task past the cap; a replay is answered.
    r = client.post("/", SCAN, headers={"Idempotency-Key": "new-key"})
    assert r.status_code == 503
    assert _total_tasks(client) == 2
    client.post("/queue/resume")
    wait_until(lambda: client.status()["queue_size"] == 0, 20, message="the queue to drain")
    first = client.submit(headers={"Idempotency-Key": "early"})
    client.wait_final(first)
    client.post("/queue/pause")
    client.submit()
    client.submit()  # full again
    r = client.post("/", SCAN, headers={"Idempotency-Key": "early"})
    assert r.status_code == 202 and r.json()["task_id"] == first


def test_keep_alive_round_trip_has_no_nagle_stall(server) -> None:
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    try:
        times = []
        for _ in range(20):
            started = time.perf_counter()
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            times.append(time.perf_counter() - started)
            assert response.status == 200 and not response.will_close
    finally:
        conn.close()
    assert statistics.median(times) < 0.010, times


# -- logs and faults ----------------------------------------------------------------------
def test_control_characters_in_a_request_line_make_one_escaped_log_line(server, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.access")
    conn = Raw(server.address)
    try:
        conn.send(b"GET /a\x1b[31mb\rFAKE 200 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, _, body = conn.response()
        assert status == 400
        wait_until(lambda: any("\\x1b" in r.getMessage() for r in caplog.records), 5,
                   message="the access log line")
    finally:
        conn.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "server.access"]
    line = next(m for m in lines if "\\x1b" in m)
    assert "\\x0d" in line
    assert not any("\x1b" in m or "\r" in m or "\n" in m for m in lines)


def test_internal_error_reveals_no_trace_path_or_port(server, client, monkeypatch,
                                                      caplog) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"store at /var/lib/secret.db via {server.robot_port} broke")

    monkeypatch.setattr(server.manager, "queue_status", boom)
    with caplog.at_level(logging.ERROR, logger="server"):
        r = client.get("/queue/status")
    assert r.status_code == 500
    assert r.json() == {"success": False, "code": "internal_error",
                        "message": "internal server error"}
    for secret in ("Traceback", "secret.db", server.robot_port, "RuntimeError"):
        assert secret not in r.text
    assert any("secret.db" in (rec.exc_text or "") or rec.exc_info for rec in caplog.records)
    assert client.get("/health").status_code == 200


def test_emergency_stop_gets_through_when_every_slot_is_taken(make_server) -> None:
    server = make_server(max_connections=3)
    held = [_ordinary(server.address) for _ in range(3)]
    try:
        wait_until(lambda: server.httpd.connection_counts[0] == 3, 5, message="3 accepted")
        r = requests.get(server.url + "/queue/status", timeout=5)
        assert r.status_code == 503  # ordinary requests are refused...
        stop = requests.post(server.url + "/robot/stop", timeout=5)
        assert stop.status_code == 200 and stop.json()["stop_sent"] is True  # ...stop is not
        assert server.simulator.wait_for_command(lambda c: c.get("cmd") == "STOP", 5)
    finally:
        for conn in held:
            conn.close()
    wait_until(lambda: server.httpd.connection_counts[0] == 0, 5, message="slots released")
    assert requests.get(server.url + "/queue/status", timeout=5).json()["paused"] is True
