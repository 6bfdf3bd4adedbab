"""JSON replies in the client's language (issue 14, item 3): a stable `code` beside a
`message` chosen by Accept-Language, else in the server's language; the guide's fixed
strings in every language. Real servers over loopback."""

from __future__ import annotations

import json
import os
import re
import socket

import pytest
import requests

from tests.conftest import ROOT, SCAN, Client

CJK = re.compile(r"[\u4e00-\u9fff]")
ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}
EN = {"Accept-Language": "en-US,en;q=0.9"}


def _error(r: requests.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["code"] and body["message"], body
    assert "accept-language" in r.headers.get("Vary", "").lower(), r.headers
    return body


def _raw(server, data: bytes) -> tuple[int, dict]:
    """Send bytes no client library would; read one JSON reply (the server closes)."""
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.fixture
def zh_server(make_server):
    return make_server(lang="zh")


def test_the_same_error_has_one_code_and_a_message_per_language(client: Client) -> None:
    for path, method, status, code in [
        ("/task/task_20000101_000000_nothere", "get", 404, "task_not_found"),
        ("/no/such/thing", "get", 404, "no_such_endpoint"),
        ("/queue/status", "post", 405, "method_not_allowed"),
        ("/tasks?status=done", "get", 400, "unknown_status"),
    ]:
        zh = _error(client.session.request(method, client.url + path, headers=ZH, timeout=10),
                    status)
        en = _error(client.session.request(method, client.url + path, headers=EN, timeout=10),
                    status)
        assert zh["code"] == en["code"] == code
        assert zh["message"] != en["message"]
        assert CJK.search(zh["message"]) and not CJK.search(en["message"]), (zh, en)
    # The values in the text are the same in both: only the words change.
    zh = client.get("/task/task_20000101_000000_nothere", headers=ZH).json()
    assert "task_20000101_000000_nothere" in zh["message"]


def test_a_command_error_follows_the_language_and_keeps_its_field(client: Client) -> None:
    bad = {"cmd_type": "SCAN_QRCODE", "params": {"rack": "A", "positions": [1, 1]}}
    zh = _error(client.post("/", bad, headers=ZH), 422)
    en = _error(client.post("/", bad, headers=EN), 422)
    assert zh["code"] == en["code"] and zh["field"] == en["field"] == "params.positions"
    assert CJK.search(zh["message"]) and "twice" in en["message"]
    assert client.status()["total_tasks"] == 0


@pytest.mark.parametrize(("header", "lang"), [
    ("en;q=0.5, zh;q=0.9", "zh"),
    ("zh;q=0.1, en", "en"),
    ("fr-FR, zh-Hans-CN;q=0.8, en;q=0.7", "zh"),
    ("zh;q=0, en;q=0.1", "en"),
    ("zh-TW", "zh"),
    ("EN-gb", "en"),
])
def test_q_values_pick_the_language(client: Client, header: str, lang: str) -> None:
    body = client.get("/task/task_20000101_000000_nothere",
                      headers={"Accept-Language": header}).json()
    assert bool(CJK.search(body["message"])) is (lang == "zh"), (header, body)


def test_without_a_usable_header_the_server_speaks_its_own_language(zh_server,
                                                                    make_server) -> None:
    zh, en = Client(zh_server), Client(make_server())
    path = "/task/task_20000101_000000_nothere"
    for headers in ({}, {"Accept-Language": "fr-FR, de;q=0.8"}, {"Accept-Language": "*"},
                    {"Accept-Language": ";;q=x,,"}):
        assert CJK.search(zh.get(path, headers=headers).json()["message"]), headers
        assert not CJK.search(en.get(path, headers=headers).json()["message"]), headers
    # A client's choice still wins over the server's.
    assert zh.get(path, headers=EN).json()["message"] == "no task task_20000101_000000_nothere"


def test_refusals_before_the_headers_are_read_use_the_servers_language(zh_server) -> None:
    status, body = _raw(zh_server, b"GET\r\n\r\n")
    assert status == 400 and body["code"] == "bad_request" and CJK.search(body["message"])
    status, body = _raw(zh_server, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
    assert status == 414 and body["code"] == "request_line_too_long"
    assert CJK.search(body["message"]) and "8192" in body["message"]


def test_pause_and_resume_have_a_code_and_follow_the_language(client: Client) -> None:
    r = client.post("/queue/pause", headers=ZH)
    assert r.status_code == 200 and "accept-language" in r.headers["Vary"].lower()
    paused = r.json()
    assert paused["code"] == "paused" and paused["paused"] is True
    assert CJK.search(paused["message"])
    # The stored reason is in the server's language (en), whatever this client reads.
    assert paused["pause_reason"] == "paused by the operator"
    resumed = client.post("/queue/resume", headers=EN).json()
    assert resumed["code"] == "resumed" and resumed["paused"] is False
    assert resumed["message"] and not CJK.search(resumed["message"])
    again = client.post("/queue/resume", headers=ZH).json()
    assert again["code"] == "resumed" and again["message"] != resumed["message"]


def test_cancel_and_stop_messages_have_codes(make_server) -> None:
    server = make_server(sim_speed=5.0)
    client = Client(server)
    client.submit()  # keeps the robot busy, so the next one stays pending
    pending = client.submit({"cmd_type": "PING"})
    zh = client.post(f"/task/{pending}/cancel", headers=ZH).json()
    assert zh["code"] == "cancelled" and zh["status"] == "cancelled"
    assert CJK.search(zh["message"])
    stop = client.post("/robot/stop", headers=EN).json()
    assert stop["code"] == "stop_sent" and stop["stop_sent"] is True
    assert not CJK.search(stop["message"])


def test_the_guides_queued_reply_is_the_same_in_every_language(zh_server, make_server) -> None:
    replies = []
    for server in (zh_server, make_server()):
        client = Client(server)
        for headers in (EN, ZH, {}):
            r = client.post("/", SCAN, headers=headers)
            assert r.status_code == 202, r.text
            replies.append(r.json())
    for body in replies:
        assert body["message"] == "任务已加入队列" and body["code"] == "queued", body
        assert body["note"] == "使用 GET /task/<task_id> 查询任务状态"


def test_a_paused_queue_warns_in_the_clients_language(client: Client) -> None:
    client.post("/queue/pause", {"reason": "refilling"})
    zh = client.post("/", SCAN, headers=ZH).json()
    en = client.post("/", SCAN, headers=EN).json()
    assert zh["message"] == en["message"] == "任务已加入队列"
    assert CJK.search(zh["warning"]) and "refilling" in zh["warning"]
    assert not CJK.search(en["warning"]) and "refilling" in en["warning"]


def test_commands_are_described_in_the_clients_language(client: Client) -> None:
    zh = client.get("/commands", headers=ZH)
    en = client.get("/commands", headers=EN)
    assert "accept-language" in zh.headers.get("Vary", "").lower()
    zh_cmds = {c["cmd_type"]: c for c in zh.json()["commands"]}
    en_cmds = {c["cmd_type"]: c for c in en.json()["commands"]}
    assert zh_cmds.keys() == en_cmds.keys()
    ping_zh, ping_en = zh_cmds["PING"]["description"], en_cmds["PING"]["description"]
    assert CJK.search(ping_zh) and not CJK.search(ping_en)
    # Names, types and examples are the same: only descriptions are translated.
    scan_zh, scan_en = zh_cmds["SCAN_QRCODE"], en_cmds["SCAN_QRCODE"]
    assert scan_zh["example"] == scan_en["example"]
    assert {k: {**v, "description": ""} for k, v in scan_zh["params"].items()} == \
        {k: {**v, "description": ""} for k, v in scan_en["params"].items()}


def test_static_files_keep_their_etag_and_do_not_vary_by_language(client: Client) -> None:
    first = client.get("/static/app.js", headers=ZH)
    assert first.status_code == 200 and first.headers["ETag"]
    assert "accept-language" not in first.headers.get("Vary", "").lower()
    again = client.get("/static/app.js", headers={**EN, "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    # A reply that does not depend on the language says nothing about it either.
    status = client.get("/queue/status", headers=ZH)
    assert "accept-language" not in status.headers.get("Vary", "").lower()


def test_every_error_of_a_sample_of_failures_has_success_code_and_message(make_server) -> None:
    server = make_server(api_token="i18n-test-token-123456", max_body=1000)
    auth = {"Authorization": "Bearer i18n-test-token-123456"}
    url = server.url
    cases = [
        ("GET", "/queue/status", {}, None, 401, "not_authenticated"),
        ("GET", "/nothing", auth, None, 404, "no_such_endpoint"),
        ("DELETE", "/queue/status", auth, None, 405, "method_not_allowed"),
        ("POST", "/", {**auth, "Content-Type": "text/plain"}, b"{}", 415, "content_type"),
        ("POST", "/", {**auth, "Content-Type": "application/json"}, b"{not json", 400,
         "invalid_json"),
        ("POST", "/", {**auth, "Content-Type": "application/json"}, b"[1]", 400,
         "not_json_object"),
        ("POST", "/", {**auth, "Content-Type": "application/json"}, b"x" * 2000, 413,
         "body_too_large"),
        ("POST", "/", {**auth, "Content-Type": "application/json"},
         b'{"cmd_type": "DANCE"}', 422, "unknown_command"),
        ("GET", "/tasks?limit=0", auth, None, 400, "query_out_of_range"),
        ("GET", "/tasks?limit=x", auth, None, 400, "query_not_integer"),
        ("GET", "/tasks?cursor=abc", auth, None, 400, "invalid_cursor"),
        ("GET", "/queue/status?wait=x", auth, None, 400, "query_not_number"),
        ("POST", "/", {**auth, "Idempotency-Key": "\u00e9"}, None, 400,
         "idempotency_key_invalid"),
        ("GET", "/static/nope.js", {}, None, 404, "no_such_file"),
        # A foreign page may read (GET) but not make a browser send a simple POST.
        ("POST", "/robot/stop", {"Origin": "http://evil.example"}, b"", 403, "cross_origin"),
        # /health answers any Host (monitors); the API does not.
        ("GET", "/queue/status", {"Host": "evil.example"}, None, 421, "host_not_allowed"),
        ("GET", "/queue/status", {"Transfer-Encoding": "gzip"}, None, 501, "transfer_encoding"),
        ("POST", "/", {**auth, "Content-Type": "application/json",
                       "Transfer-Encoding": "chunked"}, b"{}", 400, "length_and_chunked"),
    ]
    for lang in (ZH, EN):
        for method, path, headers, body, status, code in cases:
            headers = {**headers, **lang}
            if "Idempotency-Key" in headers:
                # requests refuses a non-latin-1 header value; latin-1 bytes go through.
                headers["Idempotency-Key"] = headers["Idempotency-Key"].encode("latin-1")
            r = requests.request(method, url + path, headers=headers, data=body, timeout=10,
                                 json=SCAN if body is None and method == "POST" else None)
            doc = _error(r, status)
            assert doc["code"] == code, (path, doc)
            assert bool(CJK.search(doc["message"])) is (lang is ZH), (path, doc)
    assert requests.get(url + "/queue/status", headers=auth,
                        timeout=5).json()["total_tasks"] == 0


def test_docs_list_every_code_of_the_api_and_task_catalogues() -> None:
    with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as fh:
        docs = fh.read()
    codes = set()
    for domain in ("api", "tasks"):
        with open(os.path.join(ROOT, "i18n", "en", f"{domain}.json"), encoding="utf-8") as fh:
            codes |= {key.split(".", 1)[1] for key in json.load(fh)
                      if key.startswith(("error.", "info."))}
    undocumented = sorted(c for c in codes if f"`{c}`" not in docs)
    assert not undocumented, f"docs/api.md does not list: {undocumented}"


def test_vary_keeps_the_cors_origin_beside_the_language(make_server) -> None:
    server = make_server(cors_origin="http://lab.example")
    r = requests.get(server.url + "/no/such/thing", timeout=10,
                     headers={**ZH, "Origin": "http://lab.example"})
    vary = [v.strip().lower() for v in r.headers["Vary"].split(",")]
    assert r.status_code == 404 and sorted(vary) == ["accept-language", "origin"], vary
    assert r.headers["Access-Control-Allow-Origin"] == "http://lab.example"
