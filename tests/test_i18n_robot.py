"""Chinese all the way down on the robot link's side (issue 29): every reason the link
gives (a port that will not open, a robot unplugged mid-task, a robot's ERR, a reply out
of step) and the progress messages our own codecs compose reach the operator in the
server's language. A robot's own words stay as it said them, quoted; English is left
unchanged.

Real servers (tests/conftest.py) on the simulator's pty, a real missing device, and
``main.py check`` as a subprocess.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys

import pytest

import i18n
from robot import CodecLoadError, RobotLink, RobotLinkError, RobotSimulator, load_codec
from robot.codecs.text_codec import TextCodec
from robot.link.outcome import open_error, read_failure
from tests.conftest import ROOT, Client, wait_until
from tests.proc import free_port

SCAN_B = {"cmd_type": "SCAN_QRCODE", "params": {"rack": "B", "positions": [1, 2, 3, 4, 5]}}
QUOTED = re.compile(r"“[^”]*”")
LETTERS = re.compile(r"[A-Za-z]+")


def english_left(text: str, *allowed: str) -> list[str]:
    """The ASCII words of a Chinese text outside quoted words (“...”: a robot's or the
    system's own) and ``allowed`` (paths, identifiers the text names)."""
    rest = QUOTED.sub("", text)
    for word in sorted(allowed, key=len, reverse=True):
        rest = rest.replace(word, " ")
    return LETTERS.findall(rest)


def chinese(text: str) -> bool:
    return bool(re.search(r"[\u4e00-\u9fff]", text))


# -- a port that will not open -------------------------------------------------------------
def test_a_missing_port_is_said_in_chinese_and_unchanged_in_english(tmp_path) -> None:
    missing = str(tmp_path / "ttyNOPE")
    link = RobotLink(missing, lang="zh", reconnect_min=60.0)
    with pytest.raises(RobotLinkError) as info:
        link.start(require_connection=True)
    exc = info.value
    assert exc.code == "port_no_device"
    assert str(exc) == exc.message == f"cannot open {missing}: no such device"
    zh = i18n.error_text(exc, "zh")
    assert missing in zh and chinese(zh) and not english_left(zh, missing), zh
    # The link's own account of why it is down (GET /robot, the dashboard) is the same.
    assert link.info()["error"] == zh
    assert RobotLink(missing, reconnect_min=60.0).info()["error"] is None
    english = RobotLink(missing, reconnect_min=60.0)
    english.start(require_connection=False)
    try:
        assert english.info()["error"] == f"cannot open {missing}: no such device"
    finally:
        english.stop()


@pytest.mark.parametrize("exc,code", [
    (OSError(errno.EBUSY, "busy"), "port_busy"),
    (OSError(errno.EACCES, "denied"), "port_permission"),
    (OSError(errno.ENOENT, "gone"), "port_no_device"),
    (OSError("could not open port 'COM3': PermissionError(13, 'Access is denied.', None, 5)"),
     "port_busy_or_denied"),
    (OSError("could not open port 'COM9': FileNotFoundError(2, 'The system cannot find "
             "the file specified.', None, 2)"), "port_not_found"),
])
def test_every_port_error_has_a_code_and_chinese_without_english(exc, code) -> None:
    error = open_error("COM3", exc)
    assert error.code == code and error.message.startswith("cannot open COM3: ")
    zh = error.text("zh")
    # Only the port, and what the text names to type or look for.
    assert not english_left(zh, "COM3", "python main.py ports", "dialout"), zh


def test_an_unknown_error_keeps_the_systems_words_quoted() -> None:
    error = open_error("/dev/ttyX", OSError("Strange failure"))
    assert error.code == "port_open_failed"
    assert error.message == "cannot open /dev/ttyX: Strange failure"
    assert error.text("zh") == "无法打开 /dev/ttyX：系统报告“Strange failure”"


def test_a_robot_that_speaks_another_protocol_is_said_in_chinese(tmp_path) -> None:
    sim = RobotSimulator(200.0, protocol="text")
    sim.start()
    link = RobotLink(sim.path, lang="zh", handshake_timeout=0.3, reconnect_min=60.0)
    try:
        with pytest.raises(RobotLinkError) as info:
            link.start(require_connection=True)  # PINGs in JSON
        exc = info.value
        assert exc.code == "handshake_timeout"
        assert str(exc) == "robot did not answer PING within 0.3 s (protocol json)"
        assert exc.text("zh") == "机器人在 0.3 秒内没有回应 PING（协议：json）"
        assert link.info()["error"] == exc.text("zh")
    finally:
        link.stop()
        sim.stop()


def test_check_in_chinese_says_the_missing_robot_in_chinese(tmp_path) -> None:
    missing = str(tmp_path / "ttyNOPE")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), "check", "--lang",
                          "zh", "--robot", missing, "--db", str(tmp_path / "x.db"),
                          "--host", "127.0.0.1", "--port", str(free_port())],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    line = next(ln for ln in (out.stdout + out.stderr).splitlines() if missing in ln)
    assert "无法打开" in line and not english_left(line, missing), line


def test_a_protocol_that_does_not_load_is_said_in_chinese() -> None:
    with pytest.raises(CodecLoadError) as info:
        load_codec("modbus")
    assert str(info.value) == ("unknown robot protocol 'modbus': use one of json, text or "
                               "package.module:ClassName")
    zh = info.value.text("zh")
    assert chinese(zh) and not english_left(zh, "'modbus'", "json", "text",
                                            "package.module:ClassName"), zh


# -- a robot lost mid-task -----------------------------------------------------------------
def test_unplugged_mid_task_the_stored_failure_and_link_error_are_chinese(text_sim,
                                                                          make_server) -> None:
    client = Client(make_server(robot=text_sim.path, robot_protocol="text", lang="zh"))
    task_id = client.submit(SCAN_B)
    wait_until(lambda: (client.task(task_id).get("progress") or {}).get("done", 0) >= 1, 15,
               message="one bottle scanned")
    text_sim.unplug()
    doc = client.wait_final(task_id)
    result = doc["result"]
    assert doc["status"] == "failed" and result["code"] == "robot_disconnected", doc
    assert result["message"] == ("与机器人的连接已断开：读取失败（设备不再返回数据："
                                 "可能已拔出、断电或被其他程序占用）")
    status = client.status()
    assert status["pause_code"] == "hold_disconnected"
    assert not english_left(status["pause_reason"], task_id, "SCAN_QRCODE"), status
    # What GET /robot (and the dashboard) says while the robot is away: the loss, then
    # the reopen that fails.
    wait_until(lambda: client.get("/robot").json()["error"] is not None, 10, message="error")
    error = client.get("/robot").json()["error"]
    assert chinese(error) and not english_left(error, text_sim.path), error


def test_a_lost_read_in_english_is_unchanged_in_form() -> None:
    gone = read_failure(OSError(errno.EIO, "Input/output error"))
    assert gone.code == "robot_disconnected"
    assert i18n.t(f"error.{gone.code}", "en", **gone.params) == (
        "disconnected: read failed (the device returned no data: unplugged, switched off, or "
        "taken by another program)")
    other = read_failure(OSError("odd"))
    assert i18n.t(f"error.{other.code}", "en", **other.params) == "disconnected: read failed (odd)"
    assert i18n.t(f"error.{other.code}", "zh", **other.params) == \
        "与机器人的连接已断开：读取失败（系统报告“odd”）"


# -- the robot's own words -----------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["text", "json"])
def test_a_robots_err_text_is_quoted_inside_chinese(make_server, protocol: str) -> None:
    zh = Client(make_server(robot_protocol=protocol, lang="zh"))
    en = Client(make_server(robot_protocol=protocol))
    for client in (zh, en):
        client.server.simulator.set_fault("fail")
    docs = {lang: c.wait_final(c.submit(SCAN_B)) for lang, c in (("zh", zh), ("en", en))}
    assert docs["zh"]["result"]["code"] == docs["en"]["result"]["code"] == "robot_error"
    assert docs["zh"]["result"]["message"] == "机器人报告错误：“simulated failure”"
    assert docs["en"]["result"]["message"] == "simulated failure"


def test_an_err_or_alarm_without_words_is_no_message_not_an_english_word() -> None:
    from robot.codecs import Sent

    codec = TextCodec()
    sent = Sent(1, "HOME", {}, b"HOME\r\n")
    assert codec.decode(b"ERR", sent).message is None
    assert codec.decode(b"ALARM", sent).message is None
    assert codec.decode(b"ERR JAMMED", sent).message == "JAMMED"


def test_a_reply_out_of_step_is_explained_in_chinese(make_server) -> None:
    client = Client(make_server(robot_protocol="text", lang="zh"))
    client.server.simulator.set_fault("foreign_item")
    doc = client.wait_final(client.submit(SCAN_B))
    result = doc["result"]
    assert result["code"] == "robot_out_of_step", doc
    # "position" is the item's field, named as the command table names it.
    assert "position 6 不在请求之列（请求的是 1,2,3,4,5）" in result["message"], result
    assert not english_left(result["message"], "position"), result


# -- progress messages ---------------------------------------------------------------------
@pytest.mark.parametrize("lang,expected", [("zh", r"已扫描 B 架 \d 号位"),
                                           ("en", r"scanned B position \d")])
def test_the_text_protocols_progress_message_speaks_the_servers_language(
        make_server, lang: str, expected: str) -> None:
    client = Client(make_server(robot_protocol="text", lang=lang))
    doc = client.wait_final(client.submit(SCAN_B))
    assert doc["status"] == "completed", doc
    message = doc["progress"]["message"]
    assert re.fullmatch(expected, message), message


@pytest.mark.parametrize("lang,expected", [("zh", r"已扫描 B 架 \d 号位"),
                                           ("en", r"scanned B position \d")])
def test_the_json_simulators_scans_are_worded_in_the_servers_language(
        make_server, lang: str, expected: str) -> None:
    # The simulator sends its items without a message: the host words them.
    client = Client(make_server(lang=lang))
    doc = client.wait_final(client.submit(SCAN_B))
    assert doc["status"] == "completed", doc
    assert re.fullmatch(expected, doc["progress"]["message"]), doc


def test_a_json_robots_own_progress_message_stays_its_own() -> None:
    from robot.codecs import Sent
    from robot.codecs.json_codec import JsonCodec

    codec = JsonCodec()
    sent = Sent(7, "SCAN_QRCODE", {"rack": "A", "positions": [5]}, b"")
    line = (b'{"id":7,"type":"progress","done":1,"total":1,"message":"bottle 5 read",'
            b'"item":{"rack":"A","position":5,"code":"A-05"}}')
    reply = codec.decode(line, sent)
    assert reply.message == "bottle 5 read" and reply.text is None, reply
    bare = codec.decode(line.replace(b'"message":"bottle 5 read",', b""), sent)
    assert bare.message == "scanned A position 5", bare
    assert bare.text == i18n.message("wire.progress.scanned", rack="A", position=5)


def test_the_codecs_progress_message_is_a_code_with_params() -> None:
    from robot.codecs import Sent

    codec = TextCodec()
    sent = Sent(1, "SCAN_QRCODE", {"rack": "A", "positions": [5]}, b"SCAN A 5\r\n")
    reply = codec.decode(b"BOTTLE 5 A-005", sent)
    assert reply.message == "scanned A position 5"
    assert reply.text == i18n.message("wire.progress.scanned", rack="A", position=5)
    assert i18n.t("wire.progress.scanned", "zh", rack="A", position=5) == "已扫描 A 架 5 号位"
