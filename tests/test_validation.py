"""Every class of bad input: a JSON error, the right status, nothing queued."""

from __future__ import annotations

import pytest

from tests.conftest import Client

BAD_JSON = [
    (b"{not json", 400),
    (b"[1, 2, 3]", 400),
    (b'"a string"', 400),
    (b"", 400),
    (b'{"cmd_type": "PING", "params": {"x": NaN}}', 400),
    (b'{"cmd_type": "MOVE_TO", "params": {"x": 1e999, "y": 0, "z": 0}}', 400),
    (b"[" * 100 + b"]" * 100, 400),
    (b'{"cmd_type": "PING", "n": ' + b"9" * 5000 + b"}", 400),
    (b"\xff\xfe", 400),
]

BAD_COMMANDS = [
    ({}, "cmd_type"),
    ({"params": {}}, "cmd_type"),
    ({"cmd_type": "DANCE"}, "known commands"),
    ({"cmd_type": 5}, "known commands"),
    ({"cmd_type": "SCAN_QRCODE"}, "rack"),
    ({"cmd_type": "SCAN_QRCODE", "params": {"rack": "A"}}, "positions"),
    ({"cmd_type": "SCAN_QRCODE", "params": {"rack": "A", "positions": []}}, "positions"),
    ({"cmd_type": "SCAN_QRCODE", "params": {"rack": "A", "positions": [0]}}, "range"),
    ({"cmd_type": "SCAN_QRCODE", "params": {"rack": "A", "positions": [1, 1]}}, "twice"),
    ({"cmd_type": "SCAN_QRCODE", "params": {"rack": "A", "positions": ["1"]}}, "integer"),
    ({"cmd_type": "SCAN_QRCODE", "params": {"rack": "", "positions": [1]}}, "rack"),
    ({"cmd_type": "PICK", "params": {"position": True}}, "integer"),
    ({"cmd_type": "PICK", "params": {"position": 97}}, "range"),
    ({"cmd_type": "PICK", "params": {"position": 1.5}}, "integer"),
    ({"cmd_type": "MOVE_TO", "params": {"x": "1", "y": 0, "z": 0}}, "number"),
    ({"cmd_type": "MOVE_TO", "params": {"x": 1, "y": 0}}, "z"),
    ({"cmd_type": "MOVE_TO", "params": {"x": 5000, "y": 0, "z": 0}}, "range"),
    ({"cmd_type": "HOME", "params": {"speed": 3}}, "unknown parameter"),
    ({"cmd_type": "HOME", "params": [1]}, "params"),
    ({"cmd_type": "HOME", "extra": 1}, "unknown field"),
]


def _no_task_created(client: Client) -> None:
    status = client.status()
    assert status["total_tasks"] == 0, status


@pytest.mark.parametrize(("raw", "code"), BAD_JSON)
def test_malformed_json_is_400(client: Client, raw: bytes, code: int) -> None:
    r = client.post("/", data=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == code, r.text
    body = r.json()
    assert body["success"] is False and body["message"]
    _no_task_created(client)


@pytest.mark.parametrize(("body", "hint"), BAD_COMMANDS)
def test_invalid_command_is_422_naming_the_problem(client: Client, body, hint: str) -> None:
    r = client.post("/", body)
    assert r.status_code == 422, r.text
    message = r.json()["message"]
    assert hint in message, message
    if "known commands" in hint:
        assert "SCAN_QRCODE" in message and "PING" in message
    _no_task_created(client)


def test_unknown_path_404_and_wrong_method_405(client: Client) -> None:
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["success"] is False
    r = client.session.put(client.url + "/queue/status", timeout=10)
    assert r.status_code == 405
    assert "GET" in r.headers["Allow"]
    assert r.json()["success"] is False


def test_wrong_content_type_is_415(client: Client) -> None:
    r = client.post("/", data=b'{"cmd_type": "PING"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    _no_task_created(client)


def test_dry_run_validates_without_queueing(client: Client) -> None:
    r = client.post("/?dry_run=1", {"cmd_type": "PICK", "params": {"position": 3}})
    assert r.status_code == 200 and r.json()["command"]["params"] == {"position": 3}
    assert client.post("/validate", {"cmd_type": "PICK"}).status_code == 422
    _no_task_created(client)


def test_server_unharmed_after_bad_input(client: Client) -> None:
    for raw, _ in BAD_JSON:
        client.post("/", data=raw, headers={"Content-Type": "application/json"})
    task_id = client.submit({"cmd_type": "PING"})
    assert client.wait_final(task_id)["status"] == "completed"
