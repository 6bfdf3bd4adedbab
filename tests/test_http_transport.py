"""Transport-level behaviour (issue 15) through real sockets: chunked request bodies,
HTTP/1.0 keep-alive, IPv6 listeners, trusted reverse proxies (X-Forwarded-*), the
cross-site defence and small body/Host rules. Raw bytes where a client library
would not send them; every refusal must leave nothing queued.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import SCAN, Client, wait_until
from tests.test_http_hardening import SCAN_BODY, Raw, _request

EVIL = "http://evil.example"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def _code(status: int, body: bytes, expected_status: int) -> str:
    """The JSON error's code, after checking the status and the error shape."""
    assert status == expected_status, (status, body)
    doc = json.loads(body)
    assert doc["success"] is False and isinstance(doc["message"], str) and doc["message"], doc
    return doc["code"]


def _refused(r: requests.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    doc = r.json()
    assert doc["success"] is False and doc["code"] == code, doc


def _host(server) -> str:
    return f"127.0.0.1:{server.address[1]}"


def _chunked(*parts: bytes, ext: bytes = b"", trailer: bytes = b"") -> bytes:
    """A chunked body: one chunk per part, then the last chunk and the trailer section."""
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in parts)
    return out + b"0\r\n" + trailer + b"\r\n"


def _refused_and_closed(conn: Raw, status: int, code: str, name: str = "", *,
                        timeout: float | None = None) -> None:
    """The next reply is this JSON refusal with Connection: close, and the server hung up."""
    got, headers, reply = conn.response() if timeout is None else conn.response(timeout=timeout)
    assert _code(got, reply, status) == code, name
    assert headers.get("connection") == "close", name
    assert conn.closed(), name


def _unharmed(client: Client, tasks: int = 0) -> None:
    """Exactly `tasks` were ever queued, and the server still answers."""
    assert client.status()["total_tasks"] == tasks
    assert client.get("/health").status_code == 200


def _chunked_head(server, path: str = "/", extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {_host(server)}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            f"{extra}\r\n").encode()


def _send_tolerant(conn: Raw, data: bytes) -> None:
    """Send what the server may refuse part-way (it closes; the refusal is still read)."""
    try:
        conn.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


# -- F: chunked request bodies --------------------------------------------------------------
def test_requests_streaming_a_generator_body_is_accepted(server, client) -> None:
    def body() -> Iterator[bytes]:
        yield from _split(SCAN_BODY, 7)

    r = requests.post(server.url + "/", data=body(), timeout=10,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    task = client.task(r.json()["task_id"])
    assert task["cmd_type"] == "SCAN_QRCODE"
    assert client.status()["total_tasks"] == 1


def test_chunked_body_with_extensions_and_trailer_keeps_the_connection_in_step(
        server, client) -> None:
    conn = Raw(server.address)
    try:
        body = _chunked(*_split(SCAN_BODY, 10), ext=b";x=1",
                        trailer=b"X-Checksum: abc\r\nX-Other: 1\r\n")
        conn.send(_chunked_head(server) + body)
        status, headers, reply = conn.response()
        assert status == 202, reply
        assert headers.get("connection") != "close"
        task_id = json.loads(reply)["task_id"]
        # The whole body and trailer were consumed: the next request parses cleanly.
        conn.send(_request("GET", f"/task/{task_id}", _host(server)))
        status, _, reply = conn.response()
        assert status == 200 and json.loads(reply)["task_id"] == task_id
        conn.send(_request("GET", "/queue/status", _host(server)))
        status, _, reply = conn.response()
        assert status == 200 and json.loads(reply)["total_tasks"] == 1
    finally:
        conn.close()


def test_chunked_body_is_read_by_every_endpoint_that_reads_one(server, client) -> None:
    conn = Raw(server.address)
    try:
        conn.send(_chunked_head(server, "/queue/pause")
                  + _chunked(b'{"reason": ', b'"chunky"}'))
        status, _, reply = conn.response()
        assert status == 200, reply
        assert json.loads(reply)["pause_reason"] == "chunky"
        conn.send(_chunked_head(server, "/validate") + _chunked(SCAN_BODY))
        status, _, reply = conn.response()
        assert status == 200, reply
    finally:
        conn.close()
    assert client.status()["paused"] is True
    assert client.status()["total_tasks"] == 0


def test_expect_continue_with_chunked_is_invited_before_the_body(server, client) -> None:
    conn = Raw(server.address)
    try:
        conn.send(_chunked_head(server, extra="Expect: 100-continue\r\n"))
        # Nothing of the body is sent until the server asks for it.
        status, _, _ = conn.response()
        assert status == 100
        conn.send(_chunked(SCAN_BODY[:20], SCAN_BODY[20:]))
        status, _, reply = conn.response()
        assert status == 202, reply
    finally:
        conn.close()
    assert client.status()["total_tasks"] == 1


def test_chunked_body_over_the_limit_is_refused_while_reading(server, client) -> None:
    limit = server.settings.max_body
    piece = b" " * 1024
    conn = Raw(server.address)
    try:
        conn.send(_chunked_head(server))
        # Exactly the limit in 1 KiB chunks, then one chunk more - and no end of body:
        # only a server that counts while reading can answer now.
        for _ in range(limit // len(piece)):
            _send_tolerant(conn, b"%x\r\n%s\r\n" % (len(piece), piece))
        _send_tolerant(conn, b"%x\r\n%s" % (len(piece), piece))
        _refused_and_closed(conn, 413, "body_too_large", timeout=5)
    finally:
        conn.close()
    _unharmed(client)


MALFORMED: list[tuple[str, bytes]] = [
    ("non-hex size", b"zz\r\n" + SCAN_BODY + b"\r\n0\r\n\r\n"),
    ("0x prefix", b"0x%x\r\n" % len(SCAN_BODY) + SCAN_BODY + b"\r\n0\r\n\r\n"),
    ("negative size", b"-5\r\nhello\r\n0\r\n\r\n"),
    ("empty size line", b"\r\n" + SCAN_BODY + b"\r\n0\r\n\r\n"),
    ("9 hex digits", b"%09x\r\n" % len(SCAN_BODY) + SCAN_BODY + b"\r\n0\r\n\r\n"),
    ("size line over 1 KiB", b"%x;" % len(SCAN_BODY) + b"e" * 2000 + b"\r\n" + SCAN_BODY
     + b"\r\n0\r\n\r\n"),
    ("no CRLF after data", b"%x\r\n" % len(SCAN_BODY) + SCAN_BODY + b"XX0\r\n\r\n"),
    ("bad chunk after a good one", b"5\r\n" + SCAN_BODY[:5] + b"\r\nq\r\n"),
    ("one trailer line over 4 KiB", b"%x\r\n" % len(SCAN_BODY) + SCAN_BODY
     + b"\r\n0\r\nX-Big: " + b"t" * 5000 + b"\r\n\r\n"),
    ("trailers over 4 KiB in all", b"%x\r\n" % len(SCAN_BODY) + SCAN_BODY + b"\r\n0\r\n"
     + b"".join(b"X-T%d: %s\r\n" % (i, b"t" * 500) for i in range(10)) + b"\r\n"),
    ("more than 32 trailer lines", b"%x\r\n" % len(SCAN_BODY) + SCAN_BODY + b"\r\n0\r\n"
     + b"".join(b"X-T%d: 1\r\n" % i for i in range(40)) + b"\r\n"),
]


@pytest.mark.parametrize(("name", "body"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_chunked_body_is_refused_and_closes(server, client, name: str,
                                                      body: bytes) -> None:
    conn = Raw(server.address)
    try:
        _send_tolerant(conn, _chunked_head(server) + body)
        _refused_and_closed(conn, 400, "chunked_invalid", name)
    finally:
        conn.close()
    _unharmed(client)


def test_peer_closing_mid_chunk_queues_nothing(server, client) -> None:
    conn = Raw(server.address)
    try:
        conn.send(_chunked_head(server) + b"%x\r\n" % len(SCAN_BODY) + SCAN_BODY[:10])
        conn.sock.shutdown(socket.SHUT_WR)
        try:
            status, headers, reply = conn.response()
        except EOFError:
            pass  # closing without an answer is fine: the client has gone
        else:
            assert _code(status, reply, 400) == "body_short"
            assert headers.get("connection") == "close"
        assert conn.closed()
    finally:
        conn.close()
    _unharmed(client)


@pytest.mark.timeout(30)
def test_slow_chunked_body_past_the_deadline_gets_408(make_server) -> None:
    server = make_server(request_deadline=1.0, request_timeout=2.0)
    conn = Raw(server.address)
    try:
        conn.send(_chunked_head(server) + b"%x\r\n" % len(SCAN_BODY) + SCAN_BODY[:10])
        _refused_and_closed(conn, 408, "body_timeout", timeout=5)
    finally:
        conn.close()
    _unharmed(Client(server))


def test_length_and_chunked_together_are_refused(server, client) -> None:
    conn = Raw(server.address)
    try:
        body = _chunked(SCAN_BODY)
        conn.send(_chunked_head(server, extra=f"Content-Length: {len(body)}\r\n") + body)
        _refused_and_closed(conn, 400, "length_and_chunked")
    finally:
        conn.close()
    _unharmed(client)


@pytest.mark.parametrize("coding", ["gzip, chunked", "identity", "chunked, gzip"])
def test_other_transfer_codings_are_not_implemented(server, client, coding: str) -> None:
    conn = Raw(server.address)
    try:
        conn.send((f"POST / HTTP/1.1\r\nHost: {_host(server)}\r\nContent-Type: application/json"
                   f"\r\nTransfer-Encoding: {coding}\r\n\r\n").encode() + _chunked(SCAN_BODY))
        _refused_and_closed(conn, 501, "transfer_encoding")
    finally:
        conn.close()
    _unharmed(client)


# -- D: HTTP/1.0 ---------------------------------------------------------------------------
def _plain_http10_is_answered_then_closed(conn: Raw) -> None:
    conn.send(b"GET /health HTTP/1.0\r\n\r\n")
    status, headers, _ = conn.response()
    assert status == 200 and headers.get("connection", "").lower() == "close", headers
    assert conn.closed()


def test_http10_keep_alive_is_kept_and_said_otherwise_closed(server) -> None:
    conn = Raw(server.address)
    try:
        for _ in range(2):
            conn.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, body = conn.response()
            assert status == 200, body
            assert headers.get("connection", "").lower() == "keep-alive", headers
        # Without the header HTTP/1.0 means one request per connection.
        _plain_http10_is_answered_then_closed(conn)
    finally:
        conn.close()


def test_http10_without_keep_alive_gets_close(server) -> None:
    conn = Raw(server.address)
    try:
        _plain_http10_is_answered_then_closed(conn)
    finally:
        conn.close()


@pytest.mark.timeout(90)
def test_apache_bench_keep_alive_completes(server) -> None:
    ab = shutil.which("ab")
    if ab is None:
        pytest.skip("`ab` (apache2-utils) is not installed")
    run = subprocess.run([ab, "-k", "-n", "200", "-c", "4", server.url + "/health"],
                         capture_output=True, text=True, timeout=60)
    out = run.stdout
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^Complete requests:\s+200$", out, re.M), out
    assert re.search(r"^Failed requests:\s+0$", out, re.M), out
    assert re.search(r"^Keep-Alive requests:\s+200$", out, re.M), out


# -- G: IPv6 -------------------------------------------------------------------------------
def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) here")


@needs_ipv6
def test_ipv6_loopback_listener(make_server) -> None:
    server = make_server(host="::1")
    port = server.address[1]
    assert server.url == f"http://[::1]:{port}"
    r = requests.get(server.url + "/health", timeout=5)
    assert r.status_code == 200, r.text
    assert requests.get(server.url + "/queue/status", timeout=5).status_code == 200


@needs_ipv6
def test_any_address_serves_ipv6_and_ipv4(make_server) -> None:
    server = make_server(host="::")
    port = server.address[1]
    assert server.url == f"http://127.0.0.1:{port}"
    assert requests.get(f"http://[::1]:{port}/health", timeout=5).status_code == 200
    if not socket.has_dualstack_ipv6():
        pytest.skip("this system cannot serve IPv4 on an IPv6 socket")
    assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200


@needs_ipv6
def test_allow_list_sees_ipv4_clients_of_a_dual_stack_socket_as_ipv4(make_server) -> None:
    if not socket.has_dualstack_ipv6():
        pytest.skip("this system cannot serve IPv4 on an IPv6 socket")
    server = make_server(host="::", allow=("127.0.0.0/8",))
    port = server.address[1]
    # The peer is ::ffff:127.0.0.1 on this socket; --allow 127.0.0.0/8 must cover it.
    assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    _refused(requests.get(f"http://[::1]:{port}/health", timeout=5), 403, "client_not_allowed")


# -- B: trusted proxies --------------------------------------------------------------------
def test_forwarded_for_from_the_loopback_proxy_is_the_client(make_server) -> None:
    server = make_server(allow=("10.0.0.0/8",))
    url = server.url + "/health"
    assert requests.get(url, headers={"X-Forwarded-For": "10.1.2.3"},
                        timeout=5).status_code == 200
    _refused(requests.get(url, timeout=5), 403, "client_not_allowed")
    # Trusted hops on the right are skipped: the proxy chain added them.
    assert requests.get(url, headers={"X-Forwarded-For": "10.1.2.3, 127.0.0.1"},
                        timeout=5).status_code == 200
    # The rightmost untrusted entry is the client; what is left of it proves nothing.
    _refused(requests.get(url, headers={"X-Forwarded-For": "10.1.2.3, 192.0.2.9"}, timeout=5),
             403, "client_not_allowed")


def test_forwarded_for_is_ignored_without_trusted_proxies(make_server) -> None:
    server = make_server(allow=("10.0.0.0/8",), trusted_proxies=())
    _refused(requests.get(server.url + "/health", headers={"X-Forwarded-For": "10.1.2.3"},
                          timeout=5), 403, "client_not_allowed")


def test_forwarded_host_replaces_host_only_from_a_trusted_peer(make_server) -> None:
    trusting = make_server(allowed_hosts=("robot.lab",))
    r = requests.get(trusting.url + "/queue/status", timeout=5,
                     headers={"X-Forwarded-Host": "evil.example"})
    _refused(r, 421, "host_not_allowed")
    # The name the browser used is what counts, not the proxy's upstream Host.
    r = requests.get(trusting.url + "/queue/status", timeout=5,
                     headers={"Host": "evil.example", "X-Forwarded-Host": "robot.lab"})
    assert r.status_code == 200, r.text
    ignoring = make_server(trusted_proxies=())
    r = requests.get(ignoring.url + "/queue/status", timeout=5,
                     headers={"X-Forwarded-Host": "evil.example"})
    assert r.status_code == 200, r.text


def test_access_log_names_the_forwarded_client(server, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.access")
    r = requests.get(server.url + "/queue/status", headers={"X-Forwarded-For": "10.1.2.3"},
                     timeout=5)
    assert r.status_code == 200

    def line() -> str | None:
        return next((rec.getMessage() for rec in list(caplog.records)
                     if rec.name == "server.access" and "10.1.2.3" in rec.getMessage()), None)

    message = wait_until(line, 5, message="the access log line naming 10.1.2.3")
    assert "10.1.2.3 via 127.0.0.1" in message, message


# -- A: cross-site defence -----------------------------------------------------------------
def test_foreign_origin_may_read_but_gets_no_cors_headers(server, client) -> None:
    evil = {"Origin": EVIL}
    r = requests.get(server.url + "/static/app.js", headers=evil, timeout=5)
    assert r.status_code == 200
    r = requests.get(server.url + "/", headers={**evil, "Accept": BROWSER_ACCEPT}, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    r = requests.get(server.url + "/queue/status", headers=evil, timeout=5)
    assert r.status_code == 200 and "total_tasks" in r.json()
    assert "Access-Control-Allow-Origin" not in r.headers


def test_foreign_simple_writes_are_refused_and_do_nothing(server, client) -> None:
    evil = {"Origin": EVIL}
    r = requests.post(server.url + "/robot/stop", headers=evil, timeout=5)
    _refused(r, 403, "cross_origin")
    assert r.headers.get("Connection") == "close"
    assert client.status()["paused"] is False
    r = requests.post(server.url + "/", data=SCAN_BODY, timeout=5,
                      headers={**evil, "Content-Type": "text/plain"})
    _refused(r, 403, "cross_origin")
    r = requests.post(server.url + "/", data=SCAN_BODY, timeout=5,
                      headers={**evil, "Content-Type": "text/plain; charset=utf-8"})
    _refused(r, 403, "cross_origin")
    r = requests.post(server.url + "/queue/pause", data={"reason": "csrf"}, headers=evil,
                      timeout=5)
    assert r.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    _refused(r, 403, "cross_origin")
    r = requests.post(server.url + "/queue/pause", files={"reason": ("r", b"csrf")},
                      headers=evil, timeout=5)
    assert r.request.headers["Content-Type"].startswith("multipart/form-data")
    _refused(r, 403, "cross_origin")
    status = client.status()
    assert status["paused"] is False and status["total_tasks"] == 0


def test_foreign_preflight_is_refused(server) -> None:
    r = requests.options(server.url + "/", timeout=5, headers={
        "Origin": EVIL, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    _refused(r, 403, "cross_origin")
    assert "Access-Control-Allow-Origin" not in r.headers


def test_requests_a_browser_would_have_preflighted_are_served(server, client) -> None:
    evil = {"Origin": EVIL}
    r = requests.post(server.url + "/", json=SCAN, headers=evil, timeout=5)
    assert r.status_code == 202, r.text
    assert "Access-Control-Allow-Origin" not in r.headers
    # What the dashboard sends behind a proxy that rewrote the name.
    r = requests.post(server.url + "/robot/stop", timeout=5,
                      headers={**evil, "X-Requested-With": "robot-dashboard"})
    assert r.status_code == 200, r.text
    assert client.status()["paused"] is True
    r = requests.post(server.url + "/queue/resume", timeout=5,
                      headers={**evil, "Idempotency-Key": "resume-1"})
    assert r.status_code == 200, r.text
    r = requests.delete(server.url + "/task/task_20000101_000000_nothere", headers=evil,
                        timeout=5)
    _refused(r, 404, "task_not_found")
    assert client.status()["total_tasks"] == 1


def test_sec_fetch_site_same_origin_is_served(server, client) -> None:
    r = requests.post(server.url + "/robot/stop", timeout=5,
                      headers={"Origin": EVIL, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200, r.text
    assert client.status()["paused"] is True
    # Any other value proves nothing: the request stays a foreign simple one.
    r = requests.post(server.url + "/queue/resume", timeout=5,
                      headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
    _refused(r, 403, "cross_origin")
    assert client.status()["paused"] is True


def test_same_origin_by_host_header(server, client) -> None:
    r = requests.post(server.url + "/queue/pause", headers={"Origin": server.url}, timeout=5)
    assert r.status_code == 200, r.text
    assert client.status()["paused"] is True


def test_same_origin_through_a_trusted_proxy(make_server) -> None:
    server = make_server(allowed_hosts=("robot.lab",))
    proxied = {"Origin": "https://robot.lab", "X-Forwarded-Host": "robot.lab",
               "X-Forwarded-Proto": "https"}
    r = requests.post(server.url + "/queue/resume", headers=proxied, timeout=5)
    assert r.status_code == 200, r.text
    # The scheme counts too: an http:// page is another origin than the https:// one.
    r = requests.post(server.url + "/queue/resume", timeout=5,
                      headers={**proxied, "X-Forwarded-Proto": "http"})
    _refused(r, 403, "cross_origin")


def test_forwarded_host_does_not_make_same_origin_from_an_untrusted_peer(make_server) -> None:
    server = make_server(allowed_hosts=("robot.lab",), trusted_proxies=())
    r = requests.post(server.url + "/queue/resume", timeout=5, headers={
        "Origin": "https://robot.lab", "X-Forwarded-Host": "robot.lab",
        "X-Forwarded-Proto": "https"})
    _refused(r, 403, "cross_origin")


# -- H: smaller rules ----------------------------------------------------------------------
def test_utf8_bom_before_a_json_body_is_ignored(server, client) -> None:
    r = requests.post(server.url + "/", data=b"\xef\xbb\xbf" + SCAN_BODY, timeout=5,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    assert client.task(r.json()["task_id"])["cmd_type"] == "SCAN_QRCODE"


def test_health_answers_any_host_name(server) -> None:
    monitor = {"Host": "some-monitor-name.example"}
    r = requests.get(server.url + "/health", headers=monitor, timeout=5)
    assert r.status_code == 200, r.text
    _refused(requests.get(server.url + "/queue/status", headers=monitor, timeout=5), 421,
             "host_not_allowed")


def test_health_still_needs_exactly_one_host(server) -> None:
    # Any *name* is fine on /health; HTTP/1.1 without a Host, or with two, is not (RFC 9112).
    for head, code in ((b"GET /health HTTP/1.1\r\n\r\n", "missing_host"),
                       (b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "duplicate_host")):
        conn = Raw(server.address)
        try:
            conn.send(head)
            status, _, body = conn.response()
            assert status == 400 and json.loads(body)["code"] == code
        finally:
            conn.close()


def test_a_browser_refused_by_host_or_address_gets_a_page_naming_the_flag(make_server) -> None:
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
               "Accept-Language": "zh-CN,zh;q=0.9", "Host": "robot.lab.example"}
    server = make_server()
    r = requests.get(server.url + "/", headers=browser, timeout=5)
    assert r.status_code == 421 and r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "--allowed-host" in r.text and "robot.lab.example" in r.text and "本服务器" in r.text
    assert "<script" not in r.text.lower()  # the refused name is escaped, never markup
    r = requests.get(server.url + "/", headers={**browser, "Host": "<b>x</b>.example"}, timeout=5)
    assert "&lt;b&gt;" in r.text and "<b>" not in r.text
    # curl, requests and the dashboard's fetch (Accept: application/json) keep JSON.
    for accept in ("*/*", "application/json", None):
        headers = {"Host": "robot.lab.example", **({"Accept": accept} if accept else {})}
        r = requests.get(server.url + "/", headers=headers, timeout=5)
        assert r.status_code == 421 and r.json()["code"] == "host_not_allowed"
    fenced = make_server(allow=("10.0.0.0/8",), trusted_proxies=())
    r = requests.get(fenced.url + "/", headers={"Accept": browser["Accept"]}, timeout=5)
    assert r.status_code == 403 and "--allow" in r.text and "--trusted-proxy" in r.text
