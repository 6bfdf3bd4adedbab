"""A robot speaking the plain-text protocol, through the real server (issue 12).

The built-in simulator speaks `text` on a real pty; the server drives it through
pyserial with the `text` codec. Faults behave as with the JSON robot: STOP on the
wire, the queue held when the robot's state is unknown, partial bottles kept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, SCAN, Client, wait_until
from tests.proc import free_port, sigterm, wait_healthy

STOP = lambda c: c.get("cmd") == "STOP"  # noqa: E731
SLOW_SCAN = {"cmd_type": "SCAN_QRCODE", "params": {"rack": "B", "positions": list(range(1, 11))}}


@pytest.fixture
def text_server(make_server):
    return make_server(robot_protocol="text")


def _progress_done(client: Client, task_id: str, n: int) -> None:
    wait_until(lambda: (client.task(task_id).get("progress") or {}).get("done", 0) >= n, 15,
               message=f"{n} bottles scanned")


def _next_completes(client: Client) -> None:
    doc = client.wait_final(client.submit())
    assert doc["status"] == "completed", doc
    assert doc["result"]["scanned_count"] == 3


def _resume_then_next_completes(client: Client) -> None:
    assert client.post("/queue/resume").status_code == 200
    _next_completes(client)


def test_the_guides_flow_on_a_text_robot(text_server) -> None:
    client = Client(text_server)
    r = client.post("/", SCAN)
    assert r.status_code == 202 and r.json()["message"] == "任务已加入队列"
    doc = client.wait_final(r.json()["task_id"])
    assert doc["status"] == "completed", doc
    result = doc["result"]
    assert result["success"] is True and result["message"] == "SCAN_QRCODE完成"
    assert result["scanned_count"] == 3
    assert [b["position"] for b in result["scanned_bottles"]] == [1, 2, 3]
    assert all(b["rack"] == "A" and b["code"].startswith("A-0") for b in result["scanned_bottles"])
    sent = [c.get("line") for c in text_server.simulator.commands()]
    assert "SCAN A 1,2,3" in sent, sent
    # The handshake names itself: PING carries a nonce, and the robot was asked whether
    # it is idle first (robot/link/handshake.py).
    assert any(line.startswith("PING ") for line in sent) and "STATUS" in sent, sent
    robot = client.get("/robot").json()
    assert robot["protocol"] == "text" and robot["firmware"], robot
    lines = client.get(f"/task/{doc['task_id']}/transcript").json()["transcript"]
    assert [e["line"] for e in lines if e["dir"] == "tx"] == ["SCAN A 1,2,3"]
    assert lines[-1] == {**lines[-1], "dir": "rx", "line": "OK SCAN 3"}


def test_empty_positions_give_null_codes(text_server) -> None:
    client = Client(text_server)
    doc = client.wait_final(client.submit({"cmd_type": "SCAN_QRCODE",
                                           "params": {"rack": "C", "positions": [9, 10]}}))
    bottles = doc["result"]["scanned_bottles"]
    assert [b["code"] is None for b in bottles] == [False, True], bottles


def test_cancel_while_running_sends_stop_keeps_bottles(make_server) -> None:
    server = make_server(robot_protocol="text", sim_speed=20.0)  # a bottle a second
    client = Client(server)
    task_id = client.submit(SLOW_SCAN)
    _progress_done(client, task_id, 2)
    assert client.post(f"/task/{task_id}/cancel").status_code == 202
    assert server.simulator.wait_for_command(STOP, 5)
    doc = client.wait_final(task_id)
    assert doc["status"] == "cancelled", doc
    assert 2 <= doc["result"]["scanned_count"] < 10
    assert len(doc["result"]["scanned_bottles"]) == doc["result"]["scanned_count"]
    assert "note" not in doc["result"], "ERR ABORTED confirms the abort"
    assert client.status()["paused"] is False
    server.simulator.speed = 200.0
    _next_completes(client)


@pytest.mark.parametrize("protocol", ["json", "text"])
def test_err_fails_the_task_without_holding(make_server, protocol: str) -> None:
    server = make_server(robot_protocol=protocol)
    client, sim = Client(server), server.simulator
    sim.set_fault("fail")
    doc = client.wait_final(client.submit())
    assert doc["status"] == "failed" and "simulated failure" in doc["result"]["message"], doc
    assert client.status()["paused"] is False
    sim.set_fault(None)
    _next_completes(client)


@pytest.mark.parametrize("protocol", ["json", "text"])
def test_alarm_fails_the_task_and_holds(make_server, protocol: str) -> None:
    server = make_server(robot_protocol=protocol)
    client, sim = Client(server), server.simulator
    sim.set_fault("alarm")
    task_id = client.submit()
    doc = client.wait_final(task_id)
    message = doc["result"]["message"]
    assert doc["status"] == "failed" and "alarm" in message and "collision" in message, doc
    assert doc["result"]["scanned_count"] == 1, "the bottle scanned before the alarm is kept"
    status = client.status()
    assert status["paused"] is True and task_id in status["pause_reason"], status
    sim.set_fault(None)
    _resume_then_next_completes(client)


def test_emergency_stop_on_a_text_robot(make_server) -> None:
    server = make_server(robot_protocol="text", sim_speed=20.0)
    client = Client(server)
    task_id = client.submit(SLOW_SCAN)
    _progress_done(client, task_id, 1)
    r = client.post("/robot/stop")
    assert r.status_code == 200 and r.json()["stop_sent"] is True, r.text
    assert server.simulator.wait_for_command(STOP, 5)
    doc = client.wait_final(task_id)
    assert doc["status"] == "cancelled" and doc["result"]["scanned_count"] >= 1, doc
    assert client.status()["paused"] is True  # an emergency stop holds the queue
    server.simulator.speed = 200.0
    _resume_then_next_completes(client)


def test_silence_times_out_sends_stop_and_holds(make_server) -> None:
    server = make_server(robot_protocol="text", robot_timeout=2.0)
    client, sim = Client(server), server.simulator
    sim.set_fault("hang_after_ack")
    task_id = client.submit()
    assert sim.wait_for_command(lambda c: c.get("cmd") == "SCAN_QRCODE", 5)
    sim.set_fault(None)  # the hung job keeps its mode; the resync PING is answered
    doc = client.wait_final(task_id)
    assert doc["status"] == "failed" and "timeout" in doc["result"]["message"], doc
    assert sim.wait_for_command(STOP, 5)
    assert client.status()["paused"] is True
    wait_until(lambda: client.get("/robot").json()["ready"], 10, message="resynchronized")
    _resume_then_next_completes(client)


def test_unplug_fails_holds_and_reconnects(text_sim, make_server) -> None:
    server = make_server(robot=text_sim.path, robot_protocol="text")
    client = Client(server)
    task_id = client.submit(SLOW_SCAN)
    _progress_done(client, task_id, 1)
    text_sim.unplug()
    doc = client.wait_final(task_id)
    assert doc["status"] == "failed" and "disconnected" in doc["result"]["message"], doc
    assert doc["result"]["scanned_count"] >= 1, "bottles before the unplug are kept"
    assert client.status()["paused"] is True
    text_sim.speed = 200.0
    text_sim.replug()
    wait_until(lambda: client.get("/robot").json()["ready"], 10, message="reconnected")
    _resume_then_next_completes(client)


def test_live_transcript_of_a_running_task(make_server) -> None:
    server = make_server(robot_protocol="text", sim_speed=20.0)
    client = Client(server)
    task_id = client.submit(SLOW_SCAN)
    _progress_done(client, task_id, 2)
    doc = client.get(f"/task/{task_id}/transcript").json()
    assert doc["status"] == "running" and doc["live"] is True, doc
    lines = [(e["dir"], e["line"]) for e in doc["transcript"]]
    assert lines[0] == ("tx", "SCAN B 1,2,3,4,5,6,7,8,9,10"), lines
    assert ("rx", f"BOTTLE 1 {client.task(task_id)['progress']['items'][0]['code']}") in lines
    client.post(f"/task/{task_id}/cancel")
    final = client.get(f"/task/{client.wait_final(task_id)['task_id']}/transcript").json()
    assert final["live"] is False and ("tx", "STOP") in [(e["dir"], e["line"])
                                                         for e in final["transcript"]]


# -- a lab's own codec, and commands as data -------------------------------------------------
@pytest.fixture
def lab_codec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "acme_robot.py").write_text(
        "from robot.codecs.text_codec import TextCodec\n"
        "class AcmeCodec(TextCodec):\n"
        "    '''The text protocol under the lab's own name: loaded by module:Class.'''\n"
        "    name = 'acme'\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "acme_robot:AcmeCodec"
    sys.modules.pop("acme_robot", None)


def test_a_lab_codec_loaded_by_module_and_class(lab_codec, text_sim, make_server) -> None:
    text_sim.speed = 200.0
    server = make_server(robot=text_sim.path, robot_protocol=lab_codec)
    client = Client(server)
    assert client.get("/robot").json()["protocol"] == "acme"
    _next_completes(client)


def _serve(*flags: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "main.py"), "serve", "--mode", "queue", "--host",
         "127.0.0.1", "--port", "0", "--db", str(tmp_path / "t.db"), *flags],
        capture_output=True, text=True, timeout=60, cwd=str(tmp_path))


@pytest.mark.parametrize("spec,words", [
    ("no_such_lab_module:Codec", "cannot import no_such_lab_module"),
    ("robot.codecs.text_codec:Nope", "has no Nope"),
    ("robot.codec:Reply", "not a subclass of robot.codecs.LineCodec"),
    ("serial", "unknown robot protocol 'serial'"),
])
def test_a_broken_codec_stops_start_up_with_one_line(tmp_path: Path, spec: str,
                                                    words: str) -> None:
    proc = _serve("--robot-protocol", spec, tmp_path=tmp_path)
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr


def test_a_commands_file_adds_dispense_end_to_end(tmp_path: Path, make_server) -> None:
    with open(os.path.join(ROOT, "tasks", "commands", "commands.json"), encoding="utf-8") as fh:
        table = json.load(fh)
    table["commands"].append({
        "name": "DISPENSE", "description": "Dispense liquid into the bottle at a position.",
        "params": [{"name": "position", "type": "integer", "description": "Rack position",
                    "minimum": 1, "maximum": 96},
                   {"name": "volume_ul", "type": "number", "description": "Volume in µl",
                    "minimum": 0.1, "maximum": 1000}],
        "example": {"position": 1, "volume_ul": 50}, "timeout_s": 20,
        "wire": "DISPENSE {position} {volume_ul}"})
    path = tmp_path / "lab-commands.json"
    path.write_text(json.dumps(table), encoding="utf-8")
    server = make_server(robot_protocol="text", commands_file=str(path))
    client = Client(server)
    body = {"cmd_type": "DISPENSE", "params": {"position": 4, "volume_ul": 12.5}}
    doc = client.wait_final(client.submit(body))
    assert doc["status"] == "completed" and doc["result"]["message"] == "DISPENSE完成", doc
    assert "DISPENSE 4 12.5" in [c.get("line") for c in server.simulator.commands()]
    bad = client.post("/", {"cmd_type": "DISPENSE", "params": {"position": 4,
                                                               "volume_ul": 5000}})
    assert bad.status_code == 422 and "volume_ul" in bad.json()["message"]


def test_robot_timeout_flag_beats_the_tables_timeouts(tmp_path: Path) -> None:
    """`--robot-timeout 2` must apply to SCAN_QRCODE too, although the table gives it 60 s."""
    def timeouts(*flags: str) -> dict:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "main.py"), "serve", "--mode", "queue",
             "--host", "127.0.0.1", "--port", str(port), "--sim-speed", "200",
             "--db", str(tmp_path / f"t{port}.db"), *flags],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, proc)
            return requests.get(url + "/robot", timeout=10).json()["timeouts"]
        finally:
            sigterm(proc)

    assert timeouts("--robot-timeout", "2") == {"default": 2.0, "commands": {}}
    assert timeouts() == {"default": 30.0, "commands": {"HOME": 60.0, "SCAN_QRCODE": 60.0}}
