"""Codes and languages on the task side (issue 14): stored failure reasons and holds carry
a stable ``code`` and are written in the server's language; validation errors have codes;
the command table describes every command in English and Chinese.

Real servers (tests/conftest.py), the simulator's fault modes, real SQLite files.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

import i18n
from robot import RobotSimulator
from tasks.commands import CommandsFileError, default_table, parse_commands
from tasks.commands.table import CommandError
from tasks.store import NewTask, TaskStore
from tests.conftest import SCAN, Client, wait_until
from tests.test_validation import BAD_COMMANDS

CJK = re.compile(r"[\u4e00-\u9fff]")
# What a link lost while a command is in flight may be reported as (robot/link/driver.py).
DISCONNECT_CODES = {"robot_disconnected", "robot_write_failed", "robot_write_timeout",
                    "robot_port_closed", "robot_flush_failed"}


def scan_received(sim: RobotSimulator) -> bool:
    return bool(sim.wait_for_command(lambda c: c.get("cmd") == "SCAN_QRCODE", 10))


def robot_ready(client: Client) -> bool:
    return bool(client.get("/robot").json()["ready"])


def failed_with(client: Client, fault: str, **settings: Any) -> tuple[dict, dict]:
    """Run one scan under a simulator fault mode: (final task, queue status)."""
    sim = client.server.simulator
    sim.set_fault(fault)
    task_id = client.submit()
    assert scan_received(sim)
    sim.set_fault(None)  # the running job keeps its mode; the resync PING is answered
    doc = client.wait_final(task_id)
    return doc, client.status()


def chinese(text: str) -> bool:
    return bool(CJK.search(text))


# -- stored failure reasons ------------------------------------------------------------------
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_timeout_result_and_hold_have_codes_in_the_servers_language(make_server,
                                                                    lang: str) -> None:
    client = Client(make_server(robot_timeout=0.5, lang=lang))
    doc, status = failed_with(client, "hang_after_ack")
    result = doc["result"]
    assert doc["status"] == "failed" and result["success"] is False
    assert result["code"] == "robot_timeout", result
    assert result["message"] == i18n.t("error.robot_timeout", lang, seconds="0.5")
    assert status["paused"] is True and status["pause_code"] == "hold_timeout", status
    assert doc["task_id"] in status["pause_reason"]
    assert chinese(result["message"]) == chinese(status["pause_reason"]) == (lang == "zh")
    # The partial result keeps its data keys whatever the language.
    assert "scanned_count" not in result or isinstance(result["scanned_count"], int)


def test_robot_error_keeps_the_robots_own_text_as_a_parameter(make_server) -> None:
    en = Client(make_server())
    zh = Client(make_server(lang="zh"))
    results = {}
    for lang, client in (("en", en), ("zh", zh)):
        doc, status = failed_with(client, "fail")
        assert doc["status"] == "failed"
        results[lang] = doc["result"]
        assert status["paused"] is False and status["pause_code"] is None
    assert results["en"]["code"] == results["zh"]["code"] == "robot_error"
    assert results["en"]["message"] == "simulated failure"
    assert "simulated failure" in results["zh"]["message"] and chinese(results["zh"]["message"])


def test_alarm_fails_with_robot_alarm_and_holds(make_server) -> None:
    client = Client(make_server(lang="zh"))
    doc, status = failed_with(client, "alarm")
    assert doc["status"] == "failed" and doc["result"]["code"] == "robot_alarm", doc
    assert chinese(doc["result"]["message"])
    assert status["pause_code"] == "hold_alarm" and chinese(status["pause_reason"])


def test_unplug_mid_task_fails_with_a_disconnect_code(make_server, tmp_path) -> None:
    sim = RobotSimulator(5.0, link_path=str(tmp_path / "robot"), heartbeat_s=0.05)
    sim.start()
    try:
        client = Client(make_server(robot=sim.path, lang="zh"))
        task_id = client.submit({"cmd_type": "SCAN_QRCODE",
                                 "params": {"rack": "B", "positions": [1, 2, 3, 4, 5]}})
        assert scan_received(sim)
        sim.unplug()
        doc = client.wait_final(task_id)
        assert doc["status"] == "failed"
        assert doc["result"]["code"] in DISCONNECT_CODES, doc
        assert chinese(doc["result"]["message"])
        status = client.status()
        assert status["pause_code"] == "hold_disconnected" and task_id in status["pause_reason"]
    finally:
        sim.stop()


def test_success_keeps_the_guides_message_in_every_language(make_server) -> None:
    client = Client(make_server(lang="zh"))
    doc = client.wait_final(client.submit())
    assert doc["status"] == "completed"
    assert doc["result"]["message"] == "SCAN_QRCODE完成" and "code" not in doc["result"]


# -- cancel and emergency stop ---------------------------------------------------------------
def test_cancel_codes_pending_running_and_emergency_stop(make_server) -> None:
    server = make_server(sim_speed=5.0, lang="zh")
    client = Client(server)
    running = client.submit()
    pending = client.submit({"cmd_type": "PING"})
    wait_until(lambda: client.task(running)["status"] == "running", 15, message="running")
    assert client.post(f"/task/{pending}/cancel").status_code == 200
    before = client.task(pending)["result"]
    assert before["code"] == "cancelled_before_start" and chinese(before["message"])
    assert client.post(f"/task/{running}/cancel").status_code == 202
    doc = client.wait_final(running)
    assert doc["status"] == "cancelled" and doc["result"]["code"] == "cancelled", doc
    assert doc["result"]["message"] == i18n.t("error.cancelled", "zh")

    third = client.submit()
    wait_until(lambda: client.task(third)["status"] == "running", 15, message="third running")
    body = client.post("/robot/stop").json()
    assert body["pause_code"] == "emergency_stop"
    assert body["pause_reason"] == i18n.t("info.emergency_stop", "zh")
    doc = client.wait_final(third)
    assert doc["status"] == "cancelled" and doc["result"]["code"] == "emergency_stop", doc
    status = client.status()
    assert status["pause_code"] == "emergency_stop" and chinese(status["pause_reason"])
    resumed = client.post("/queue/resume").json()
    assert resumed["paused"] is False and resumed["pause_code"] is None


def test_an_operators_own_pause_reason_is_kept_as_written(client: Client) -> None:
    body = client.post("/queue/pause", {"reason": "refilling rack B"}).json()
    assert body["pause_reason"] == "refilling rack B"
    assert body["pause_code"] == "paused_by_operator"


# -- after a restart -------------------------------------------------------------------------
def test_interrupted_task_after_a_crash_is_failed_with_its_code(make_server, tmp_path) -> None:
    # The state a kill -9 leaves: a task `running` on disk (tests/test_crash_recovery.py
    # kills real processes; here the row is written directly, the server is real).
    store = TaskStore(str(tmp_path / "tasks.db"))
    store.open()
    now = time.time()
    task_id, _, _ = store.insert(NewTask("task_20250101_000000_crash1", "SCAN_QRCODE",
                                         {"rack": "A", "positions": [1]}, now))
    assert store.mark_running(task_id, now) is not None
    store.close()

    client = Client(make_server(lang="zh"))
    doc = client.task(task_id)
    assert doc["status"] == "failed" and doc["result"]["code"] == "interrupted", doc
    assert doc["result"]["message"] == i18n.t("error.interrupted", "zh")
    status = client.status()
    assert status["pause_code"] == "hold_interrupted" and task_id in status["pause_reason"]
    assert chinese(status["pause_reason"])


def test_shutdown_abort_and_its_hold_speak_the_language_of_the_next_start(make_server) -> None:
    first = make_server(sim_speed=5.0, shutdown_grace=0.2)
    client = Client(first)
    task_id = client.submit()
    wait_until(lambda: client.task(task_id)["status"] == "running", 15, message="running")
    first.stop()

    again = Client(make_server(lang="zh"))
    doc = again.task(task_id)
    assert doc["status"] == "failed" and doc["result"]["code"] == "shutdown_aborted", doc
    # Stored by the English server, so stored in English ...
    assert doc["result"]["message"] == i18n.t("error.shutdown_aborted", "en")
    # ... but the hold is made again from its code in the new server's language.
    status = again.status()
    assert status["paused"] is True and status["pause_code"] == "hold_shutdown_abort"
    assert status["pause_reason"] == i18n.t("error.hold_shutdown_abort", "zh",
                                            task_id=task_id, cmd_type="SCAN_QRCODE")


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "hint"), BAD_COMMANDS)
def test_every_validation_error_has_a_code_with_texts(body, hint: str) -> None:
    with pytest.raises(CommandError) as info:
        default_table().validate(body)
    exc = info.value
    assert re.fullmatch(r"[a-z][a-z0-9_]*", exc.code), exc.code
    for lang in i18n.LANGS:
        assert i18n.has(f"error.{exc.code}", lang)
        i18n.t(f"error.{exc.code}", lang, **exc.params)  # strict: every placeholder given
    assert hint in exc.message  # English stays what clients already match on


def test_validation_codes_name_the_problem() -> None:
    table = default_table()
    cases = [
        ([1], "invalid_command", None),
        ({"cmd_type": "DANCE"}, "unknown_command", "cmd_type"),
        ({"params": {}}, "missing_cmd_type", "cmd_type"),
        ({"cmd_type": "HOME", "extra": 1}, "unknown_field", "extra"),
        ({"cmd_type": "HOME", "params": {"speed": 3}}, "takes_no_params", "params.speed"),
        ({"cmd_type": "PICK", "params": {"position": 1, "arm": 2}}, "unknown_param",
         "params.arm"),
        ({"cmd_type": "PICK"}, "missing_param", "params.position"),
        ({"cmd_type": "PICK", "params": {"position": 97}}, "out_of_range", "params.position"),
        ({"cmd_type": "PICK", "params": {"position": 1.5}}, "not_integer", "params.position"),
        ({"cmd_type": "MOVE_TO", "params": {"x": "1", "y": 0, "z": 0}}, "not_number",
         "params.x"),
    ]
    for body, code, field in cases:
        with pytest.raises(CommandError) as info:
            table.validate(body)
        assert (info.value.code, info.value.field) == (code, field), body


def test_validation_reply_has_the_same_code_in_both_languages(client: Client) -> None:
    bad = {"cmd_type": "PICK", "params": {"position": 97}}
    en = client.post("/", bad, headers={"Accept-Language": "en-US"})
    zh = client.post("/", bad, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert en.status_code == zh.status_code == 422
    assert en.json()["code"] == zh.json()["code"] == "out_of_range"
    assert en.json()["field"] == zh.json()["field"] == "params.position"
    assert "out of range [1, 96]" in en.json()["message"]
    assert chinese(zh.json()["message"]) and "[1, 96]" in zh.json()["message"]


def test_a_full_queue_and_a_missing_task_have_codes(make_server) -> None:
    client = Client(make_server(max_queue=1, sim_speed=5.0, shutdown_grace=0.2))
    client.submit()
    full = client.post("/", SCAN, headers={"Accept-Language": "zh"})
    assert full.status_code == 503 and full.json()["code"] == "queue_full"
    assert chinese(full.json()["message"])
    gone = client.post("/task/task_20000101_000000_nothere/cancel")
    assert gone.status_code == 404 and gone.json()["code"] == "task_not_found"


# -- command descriptions --------------------------------------------------------------------
def test_the_shipped_table_describes_everything_in_both_languages() -> None:
    for command in default_table():
        texts = [command.descriptions] + [p.descriptions for p in command.params]
        for descriptions in texts:
            assert set(descriptions) == set(i18n.LANGS), command.name
            assert chinese(descriptions["zh"]) and not chinese(descriptions["en"]), command.name


def test_catalog_speaks_the_asked_language_and_nothing_else_changes() -> None:
    table = default_table()
    en, zh, default = table.catalog("en"), table.catalog("zh"), table.catalog()
    assert default == en
    assert [c["cmd_type"] for c in zh] == [c["cmd_type"] for c in en]
    for c_en, c_zh in zip(en, zh, strict=True):
        assert chinese(c_zh["description"]) and not chinese(c_en["description"])
        assert c_en["example"] == c_zh["example"]
        assert set(c_en["params"]) == set(c_zh["params"])
        for name, spec in c_en["params"].items():
            other = c_zh["params"][name]
            assert chinese(other["description"])
            assert {k: v for k, v in spec.items() if k != "description"} == \
                {k: v for k, v in other.items() if k != "description"}
    assert table.catalog("fr") == en  # a language without texts falls back to English


def test_get_commands_follows_accept_language(client: Client) -> None:
    zh = client.get("/commands", headers={"Accept-Language": "zh-CN"}).json()["commands"]
    en = client.get("/commands", headers={"Accept-Language": "en"}).json()["commands"]
    assert zh == client.server.commands.catalog("zh")
    assert en == client.server.commands.catalog("en")


def _table(description: Any, param_description: Any = "Rack position") -> str:
    return json.dumps({"commands": [{
        "name": "DISPENSE", "description": description,
        "params": [{"name": "position", "type": "integer", "description": param_description}],
        "example": {"position": 1}}]})


def test_a_commands_file_may_give_one_text_or_one_per_language() -> None:
    one = parse_commands(_table("Dispense."), "one.json")
    assert one.catalog("zh")[0]["description"] == "Dispense."
    both = parse_commands(_table({"en": "Dispense.", "zh": "加液。"},
                                 {"en": "Rack position", "zh": "架位"}), "both.json")
    assert both.catalog("zh")[0]["description"] == "加液。"
    assert both.catalog("zh")[0]["params"]["position"]["description"] == "架位"
    assert both.catalog("en")[0]["params"]["position"]["description"] == "Rack position"
    only_en = parse_commands(_table({"en": "Dispense."}), "en.json")
    assert only_en.catalog("zh")[0]["description"] == "Dispense."


@pytest.mark.parametrize(("description", "param", "expected"), [
    ({"zh": "加液。"}, "x", 'command DISPENSE: description: needs "en"'),
    ({"en": "Dispense.", "fr": "Verser."}, "x", "description: unknown language 'fr'"),
    ({"en": "Dispense.", "zh": ""}, "x", "description.zh: must be a non-empty string"),
    ({"en": "Dispense.", "zh": 5}, "x", "description.zh: must be a non-empty string"),
    (["Dispense."], "x", "description: required"),
    ("Dispense.", {"en": "x", "de": "y"}, "params[0].description: unknown language 'de'"),
    ("Dispense.", {"zh": "架位"}, 'params[0].description: needs "en"'),
])
def test_bad_description_shapes_stop_the_load(description, param, expected: str) -> None:
    with pytest.raises(CommandsFileError) as info:
        parse_commands(_table(description, param), "lab.json")
    message = str(info.value)
    assert message.startswith("commands file lab.json: ") and expected in message, message
