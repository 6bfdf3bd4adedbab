"""Query parameters and paths as a lab's scripts and browsers send them: strict
booleans, long-polls clamped to max_wait, Accept negotiation for GET /, the SSE
first block, trailing slashes, cursors, `since`, the pause body. Real server,
real HTTP over loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest
import requests

from tests.conftest import Client

PING = {"cmd_type": "PING"}
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def _total(client: Client) -> int:
    return client.status()["total_tasks"]


def _raw_head(client: Client, request: str) -> list[str]:
    """The reply's status and header lines to bytes sent as they are (latin-1)."""
    host, port = client.server.address
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(request.replace("HOST", f"{host}:{port}").encode("latin-1"))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            assert chunk, head
            head += chunk
    return head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")


def _refused(r: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["code"] == code and body["message"], body
    return body


# -- ?dry_run= ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["True", "yes", "ON", "1", "tRuE"])
def test_dry_run_true_words_validate_only(client: Client, value: str) -> None:
    r = client.post("/", PING, params={"dry_run": value})
    assert r.status_code == 200, r.text
    assert r.json()["code"] == "command_valid"
    assert _total(client) == 0


@pytest.mark.parametrize("value", ["false", "0", "no", "off", "OFF"])
def test_dry_run_false_words_queue_a_real_task(client: Client, value: str) -> None:
    r = client.post("/", PING, params={"dry_run": value})
    assert r.status_code == 202, r.text
    assert client.wait_final(r.json()["task_id"])["status"] == "completed"
    assert _total(client) == 1


@pytest.mark.parametrize("value", ["", "null", "maybe", "2", "truee", "ｔｒｕｅ"])
def test_dry_run_other_values_are_refused_and_queue_nothing(client: Client, value: str) -> None:
    body = _refused(client.post("/", PING, params={"dry_run": value}), 400, "query_not_boolean")
    assert body["param"] == "dry_run" and "dry_run" in body["message"]
    assert _total(client) == 0


def test_dry_run_checks_the_idempotency_key_as_a_submit_would(client: Client) -> None:
    r = client.post("/", PING, params={"dry_run": "1"}, headers={"Idempotency-Key": ""})
    _refused(r, 400, "idempotency_key_invalid")
    assert _total(client) == 0


# -- ?wait= clamped to max_wait ----------------------------------------------------------
def test_a_wait_beyond_max_wait_is_clamped_and_says_timed_out(make_server) -> None:
    client = Client(make_server(max_wait=0.5))
    assert client.post("/queue/pause").status_code == 200  # the task stays pending
    task_id = client.submit(PING)
    for path in (f"/task/{task_id}", "/queue/status"):
        started = time.monotonic()
        r = client.get(path, params={"wait": 60})
        assert r.status_code == 200, r.text
        assert r.json()["timed_out"] is True
        assert time.monotonic() - started < 2.0, path
    # Without wait there is nothing to time out: the documents are as before.
    assert "timed_out" not in client.task(task_id)
    assert "timed_out" not in client.status()
    # A wait that cannot wait still answers at once, and was not a timeout.
    assert client.post("/queue/resume").status_code == 200
    client.wait_final(task_id)
    r = client.get(f"/task/{task_id}", params={"wait": 60})
    assert r.json()["status"] == "completed" and r.json()["timed_out"] is False


def test_a_wait_that_sees_the_change_is_not_timed_out(make_server) -> None:
    client = Client(make_server(max_wait=20.0))
    client.post("/queue/pause")
    task_id = client.submit(PING)
    version = client.status()["version"]
    replies: dict[str, requests.Response] = {}

    def poll(name: str, path: str, params: dict[str, Any]) -> None:
        replies[name] = requests.get(client.url + path, params=params, timeout=30)

    polls = [threading.Thread(target=poll, args=("task", f"/task/{task_id}", {"wait": 15})),
             threading.Thread(target=poll, args=("queue", "/queue/status",
                                                 {"wait": 15, "since": version}))]
    started = time.monotonic()
    for thread in polls:
        thread.start()
    client.post("/queue/resume")  # a change for the queue, then the task completes
    for thread in polls:
        thread.join(30)
    assert time.monotonic() - started < 10
    task, queue = replies["task"].json(), replies["queue"].json()
    assert task["status"] == "completed" and task["timed_out"] is False
    assert queue["timed_out"] is False and queue["version"] > version


@pytest.mark.parametrize("value, code", [
    ("0", "query_out_of_range"), ("-1", "query_out_of_range"), ("nan", "query_not_number"),
    ("inf", "query_not_number"), ("abc", "query_not_number"), ("", "query_not_number"),
    ("1_0", "query_not_number"),
])
def test_a_wait_that_is_no_positive_number_is_refused(client: Client, value: str,
                                                      code: str) -> None:
    for path in ("/queue/status", "/task/nope"):
        body = _refused(client.get(path, params={"wait": value}), 400, code)
        assert "wait" in body["message"]


# -- GET /: dashboard or service document ------------------------------------------------
@pytest.mark.parametrize("accept, html", [
    (BROWSER_ACCEPT, True),
    ("*/*", False),
    (None, False),  # no Accept header at all
    ("application/json", False),
    ("text/html;q=0.5, application/json", False),
    ("application/json;q=0.1, text/html", True),
    ("text/*", True),
    ("text/html;q=0, */*", False),
    ("TEXT/HTML", True),
])
def test_get_root_negotiates_by_q_value(client: Client, accept: str | None, html: bool) -> None:
    r = client.get("/", headers={"Accept": accept})
    assert r.status_code == 200
    if html:
        assert r.headers["Content-Type"].startswith("text/html")
        assert "<html" in r.text.lower()
    else:
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.json()["service"] == "robot task server"


def test_get_root_without_static_files_is_always_json(make_server) -> None:
    client = Client(make_server(static_dir=None))
    r = client.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert r.headers["Content-Type"].startswith("application/json")


# -- /events: the first block -------------------------------------------------------------
def test_events_first_block_carries_retry_and_the_snapshot(client: Client) -> None:
    r = requests.get(client.url + "/events", stream=True, timeout=10)
    try:
        assert r.status_code == 200
        block = b""
        # One byte at a time: the stream never ends, so a bigger read could wait for
        # the next keep-alive 15 s away.
        for byte in r.iter_content(chunk_size=1):
            block += byte
            if block.endswith(b"\n\n"):
                break
    finally:
        r.close()
    lines = block.decode("utf-8").strip("\n").split("\n")
    assert lines[0] == "retry: 2000"
    assert "event: snapshot" in lines
    data = [line for line in lines if line.startswith("data: ")]
    assert len(data) == 1
    snapshot = json.loads(data[0][len("data: "):])
    assert {"queue", "robot", "mode"} <= snapshot.keys()


# -- trailing slash ---------------------------------------------------------------------
def test_trailing_slash_redirects_to_the_resource_keeping_the_query(client: Client) -> None:
    r = client.get("/queue/status/?x=1", allow_redirects=False)
    body = _refused(r, 308, "trailing_slash")
    assert r.headers["Location"] == "/queue/status?x=1"
    assert "/queue/status?x=1" in body["message"]
    r = client.get("/queue/status/?x=1")
    assert r.status_code == 200 and "total_tasks" in r.json()
    assert [h.status_code for h in r.history] == [308]
    task_id = client.submit(PING)
    r = client.get(f"/task/{task_id}/", allow_redirects=False)
    assert r.status_code == 308 and r.headers["Location"] == f"/task/{task_id}"
    r = client.get("/tasks//", allow_redirects=False)
    assert r.status_code == 308 and r.headers["Location"] == "/tasks"


def test_a_post_to_a_trailing_slash_is_repeated_with_its_body(client: Client) -> None:
    r = client.post("/queue/pause/", {"reason": "slash"})
    assert r.status_code == 200 and [h.status_code for h in r.history] == [308]
    status = client.status()
    assert status["paused"] is True and status["pause_reason"] == "slash"


def test_no_redirect_where_there_is_no_resource(client: Client) -> None:
    _refused(client.get("/nowhere/", allow_redirects=False), 404, "no_such_endpoint")
    _refused(client.get("/task/", allow_redirects=False), 404, "no_such_endpoint")
    assert client.get("/", allow_redirects=False).status_code == 200


def test_the_redirect_comes_before_the_token_check(make_server) -> None:
    client = Client(make_server(api_token="slash-token-1234"))
    r = client.get("/queue/status/", allow_redirects=False)
    assert r.status_code == 308 and r.headers["Location"] == "/queue/status"
    _refused(client.get("/queue/status"), 401, "not_authenticated")


def test_the_location_escapes_what_a_client_put_in_the_path(client: Client) -> None:
    lines = _raw_head(client, "GET /task/a\x01\xe9/?q=\x02 HTTP/1.1\r\nHost: HOST\r\n\r\n")
    assert lines[0].startswith("HTTP/1.1 308")
    assert "Location: /task/a%01%E9?q=%02" in lines


# -- /tasks cursor and empty parameters ------------------------------------------------
@pytest.mark.parametrize("cursor", ["", "abc", "-1", "1234567890123456789", "١٢"])
def test_a_cursor_that_is_no_next_cursor_is_refused(client: Client, cursor: str) -> None:
    _refused(client.get("/tasks", params={"cursor": cursor}), 400, "invalid_cursor")


def test_every_digit_cursor_gives_a_page(client: Client) -> None:
    task_id = client.submit(PING)
    page = client.get("/tasks", params={"cursor": "999999999999999999"}).json()
    assert [t["task_id"] for t in page["tasks"]] == [task_id]
    page = client.get("/tasks", params={"cursor": "0"}).json()
    assert page["tasks"] == [] and page["next_cursor"] is None


@pytest.mark.parametrize("params, code", [
    ({"status": ""}, "unknown_status"),
    ({"limit": ""}, "query_not_integer"),
    ({"offset": ""}, "query_not_integer"),
])
def test_an_empty_list_parameter_is_refused(client: Client, params: dict[str, str],
                                            code: str) -> None:
    _refused(client.get("/tasks", params=params), 400, code)


# -- /queue/status ?since= --------------------------------------------------------------
@pytest.mark.parametrize("since, code", [
    (str(10**13), "query_out_of_range"), ("-1", "query_out_of_range"),
    ("9" * 40, "query_out_of_range"), ("", "query_not_integer"), ("x", "query_not_integer"),
    ("1.0", "query_not_integer"), ("+1", "query_not_integer"), ("\u0661", "query_not_integer"),
])
def test_since_is_checked_even_without_wait(client: Client, since: str, code: str) -> None:
    body = _refused(client.get("/queue/status", params={"since": since}), 400, code)
    assert "since" in body["message"]


# -- integers: not one (query_not_integer) or one out of range (query_out_of_range) ----------
@pytest.mark.parametrize("path, name, value, low, high", [
    ("/tasks", "limit", "0", 1, 500), ("/tasks", "limit", "501", 1, 500),
    ("/tasks", "limit", "-3", 1, 500), ("/tasks", "offset", "-1", 0, 10**9),
    ("/tasks", "offset", str(10**9 + 1), 0, 10**9), ("/tasks", "limit", "1" + "0" * 30, 1, 500),
    ("/queue/status", "since", str(10**12 + 1), 0, 10**12),
])
def test_an_integer_out_of_range_says_so_with_the_range(
        client: Client, path: str, name: str, value: str, low: int, high: int) -> None:
    body = _refused(client.get(path, params={name: value}), 400, "query_out_of_range")
    assert (body["param"], body["low"], body["high"]) == (name, low, high)
    # Both ends belong to an integer range: [low, high], not the (low, high] of ?wait=.
    assert body["message"] == f"query parameter '{name}' must be in [{low}, {high}]"
    zh = client.get(path, params={name: value}, headers={"Accept-Language": "zh"}).json()
    assert zh["code"] == "query_out_of_range" and f"[{low}, {high}]" in zh["message"]
    assert "查询参数" in zh["message"]


@pytest.mark.parametrize("value", ["1.5", "abc", "1e2", "5 ", "0x10", "\u00b2", "--1"])
def test_a_limit_that_is_no_integer_is_not_integer(client: Client, value: str) -> None:
    body = _refused(client.get("/tasks", params={"limit": value}), 400, "query_not_integer")
    assert "limit" in body["message"] and "[1, 500]" in body["message"]


@pytest.mark.parametrize("params, count", [({"limit": "1"}, 1), ({"limit": "500"}, 2),
                                           ({"limit": "0002"}, 2), ({"offset": "-0"}, 2),
                                           ({"offset": "1000000000"}, 0)])
def test_the_ends_of_an_integer_range_are_accepted(client: Client, params: dict[str, str],
                                                   count: int) -> None:
    for _ in range(2):
        client.submit(PING)
    r = client.get("/tasks", params=params)
    assert r.status_code == 200, r.text
    assert r.json()["count"] == count


def test_a_wait_out_of_range_keeps_its_half_open_range(client: Client) -> None:
    body = _refused(client.get("/queue/status", params={"wait": "0"}), 400,
                    "query_out_of_range")
    assert body["message"].startswith("query parameter 'wait' must be in (0, ")
    assert body["message"].endswith("]") and body["low"] == 0


def test_a_valid_since_without_wait_answers_at_once(client: Client) -> None:
    r = client.get("/queue/status", params={"since": 10**12})
    assert r.status_code == 200 and "timed_out" not in r.json()


# -- POST /queue/pause body ---------------------------------------------------------------
@pytest.mark.parametrize("body, code", [
    ({"reason": {}}, "pause_reason_invalid"),
    ({"reason": 5}, "pause_reason_invalid"),
    ({"reason": ["x"]}, "pause_reason_invalid"),
    ([], "not_json_object"),
    ("x", "not_json_object"),
    (None, "not_json_object"),
])
def test_a_bad_pause_body_is_refused_and_the_queue_runs_on(client: Client, body: Any,
                                                           code: str) -> None:
    r = client.post("/queue/pause", data=json.dumps(body),
                    headers={"Content-Type": "application/json"})
    _refused(r, 400, code)
    assert client.status()["paused"] is False


@pytest.mark.parametrize("body, reason", [
    ({"reason": "x"}, "x"),
    ({"reason": "two\nlines\x1b[31m"}, "two lines [31m"),
    ({"reason": None}, "paused by the operator"),
    ({"reason": ""}, "paused by the operator"),
    ({"other": 1}, "paused by the operator"),
])
def test_a_good_pause_body_pauses(client: Client, body: dict[str, Any], reason: str) -> None:
    r = client.post("/queue/pause", body)
    assert r.status_code == 200 and r.json()["code"] == "paused", r.text
    status = client.status()
    assert status["paused"] is True and status["pause_reason"] == reason


def test_a_pause_without_body_pauses(client: Client) -> None:
    assert client.post("/queue/pause").json()["pause_reason"] == "paused by the operator"


# -- framing: a chunked submit counts as framed -----------------------------------------
def test_a_chunked_submit_is_not_length_required(client: Client) -> None:
    def pieces():
        yield b'{"cmd_type": '
        yield b'"PING"}'

    r = client.post("/", data=pieces(), headers={"Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    assert client.wait_final(r.json()["task_id"])["status"] == "completed"


def test_a_submit_without_any_framing_is_length_required(client: Client) -> None:
    lines = _raw_head(client, "POST / HTTP/1.1\r\nHost: HOST\r\n"
                              "Content-Type: application/json\r\n\r\n")
    assert lines[0].startswith("HTTP/1.1 411")
    assert _total(client) == 0


def test_a_repeated_query_parameter_is_refused_and_queues_nothing(client) -> None:
    for query in ("dry_run=no&dry_run=1", "dry_run=1&dry_run=1", "wait=abc&wait=5"):
        path = "/" if query.startswith("dry") else "/queue/status"
        r = (client.post(f"{path}?{query}", {"cmd_type": "HOME"}) if path == "/"
             else client.get(f"{path}?{query}"))
        assert r.status_code == 400 and r.json()["code"] == "query_repeated", (query, r.text)
    assert client.status()["total_tasks"] == 0
