"""The command table as data: the shipped tasks/commands/commands.json, `--commands FILE`,
one-line errors for bad files, timeout precedence, and a lab's own command served end to end."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from typing import Any

import pytest
import requests

from tasks.commands import (
    SHIPPED_FILE,
    CommandsFileError,
    CommandTable,
    command_catalog,
    load_commands,
    validate_command,
)
from tests.conftest import ROOT, SCAN, Client

POSITION = {"type": "integer", "description": "Rack position (1-96)", "required": True,
            "minimum": 1, "maximum": 96}


def _axis(name: str) -> dict[str, Any]:
    return {"type": "number", "description": f"{name.upper()} in mm", "required": True,
            "minimum": -1000.0, "maximum": 1000.0}


def _no_params(name: str, description: str) -> dict[str, Any]:
    return {"cmd_type": name, "description": description, "params": {},
            "example": {"cmd_type": name, "params": {}}}


# command_catalog() as it was when the table was Python code (captured before the move).
CATALOG_BEFORE = [
    _no_params("PING", "Check that the robot answers; returns its firmware version."),
    _no_params("GET_STATUS", "Report the robot's position and what it holds."),
    _no_params("HOME", "Move every axis to its home position."),
    {"cmd_type": "MOVE_TO", "description": "Move the tool to a point (millimetres).",
     "params": {axis: _axis(axis) for axis in "xyz"},
     "example": {"cmd_type": "MOVE_TO", "params": {"x": 100.0, "y": 50.0, "z": 20.0}}},
    {"cmd_type": "SCAN_QRCODE",
     "description": "Scan the QR codes of the bottles at the given rack positions.",
     "params": {"rack": {"type": "string", "description": "Rack name", "required": True,
                         "max_length": 32},
                "positions": {"type": "integer_list",
                              "description": "Rack positions to scan (1-96)", "required": True,
                              "minimum": 1, "maximum": 96, "max_length": 96}},
     "example": {"cmd_type": "SCAN_QRCODE", "params": {"rack": "A", "positions": [1, 2, 3]}}},
    {"cmd_type": "PICK", "description": "Pick the bottle at a rack position.",
     "params": {"position": POSITION},
     "example": {"cmd_type": "PICK", "params": {"position": 1}}},
    {"cmd_type": "PLACE", "description": "Place the held bottle at a rack position.",
     "params": {"position": POSITION},
     "example": {"cmd_type": "PLACE", "params": {"position": 1}}},
]

DISPENSE = {"name": "DISPENSE", "description": "Dispense liquid into a rack position.",
            "params": [{"name": "position", "type": "integer",
                        "description": "Rack position (1-96)", "minimum": 1, "maximum": 96},
                       {"name": "volume_ul", "type": "number",
                        "description": "Volume in microlitres", "minimum": 0.1,
                        "maximum": 1000}],
            "example": {"position": 1, "volume_ul": 50},
            "timeout_s": 45, "wire": "DISPENSE {position} {volume_ul}"}


def _shipped() -> dict[str, Any]:
    with open(SHIPPED_FILE, encoding="utf-8") as fh:
        return json.load(fh)


def _write(tmp_path: Any, data: Any, name: str = "lab-commands.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return str(path)


@pytest.fixture
def lab_file(tmp_path) -> str:
    data = _shipped()
    data["commands"].append(DISPENSE)
    return _write(tmp_path, data)


# -- the shipped table ----------------------------------------------------------------------
def test_shipped_file_reproduces_the_former_table() -> None:
    table = load_commands(None)
    # Compared as JSON text too: -1000.0 must stay a float, 1 an integer.
    assert json.dumps(table.catalog()) == json.dumps(CATALOG_BEFORE)
    assert command_catalog() == CATALOG_BEFORE
    assert table.names == ("PING", "GET_STATUS", "HOME", "MOVE_TO", "SCAN_QRCODE", "PICK",
                           "PLACE")
    assert table.timeouts() == {"HOME": 60.0, "SCAN_QRCODE": 60.0}
    assert table.wire_forms() == {
        "PING": "PING", "GET_STATUS": "STATUS", "HOME": "HOME", "MOVE_TO": "MOVE {x} {y} {z}",
        "SCAN_QRCODE": "SCAN {rack} {positions}", "PICK": "PICK {position}",
        "PLACE": "PLACE {position}"}
    bottles = [{"position": 1, "qr": "B-1"}]
    assert table.partial_result("SCAN_QRCODE", bottles) == {"scanned_bottles": bottles,
                                                            "scanned_count": 1}
    assert table.partial_result("PICK", bottles) == {}
    assert table.result_data("SCAN_QRCODE", {"scanned_count": 5}, bottles) == {
        "scanned_count": 5, "scanned_bottles": bottles}


def test_module_level_wrappers_use_the_shipped_table() -> None:
    from tasks.commands import COMMANDS

    assert list(COMMANDS) == list(load_commands(None).names)
    assert COMMANDS["SCAN_QRCODE"].items_key == "scanned_bottles"
    assert validate_command({"cmd_type": "PICK", "params": {"position": 3.0}}) == \
        ("PICK", {"position": 3})


# -- bad files: one line naming file, command and field ------------------------------------
def _with(**changes: Any) -> dict[str, Any]:
    command = copy.deepcopy(DISPENSE)
    for key, value in changes.items():
        if value is None:
            command.pop(key)
        else:
            command[key] = value
    return {"commands": [command]}


BAD_PARAM = copy.deepcopy(DISPENSE["params"])
BAD_PARAM[1]["type"] = "float"
OPTIONAL_VOLUME = copy.deepcopy(DISPENSE["params"])
OPTIONAL_VOLUME[1]["required"] = False

BAD_FILES = [
    ('{"commands": [\n  {"name": "DISPENSE",}\n]}', ["invalid JSON at line 2 column"]),
    (_with(volume=5), ["command DISPENSE", "unknown key 'volume'"]),
    (_with(params=BAD_PARAM), ["command DISPENSE: params[1].type: unknown type 'float' "
                               "(use 'number', 'integer', 'string', 'integer_list')"]),
    (_with(wire="DISPENSE {position} {volume}"), ["command DISPENSE: wire:", "{volume}"]),
    (_with(params=OPTIONAL_VOLUME), ["command DISPENSE: wire:", "{volume_ul}", "optional"]),
    (_with(example={"position": 97, "volume_ul": 5}),
     ["command DISPENSE: example.position:", "out of range [1, 96]"]),
    ({"commands": [DISPENSE, {**DISPENSE, "description": "again"}]},
     ["command DISPENSE: name:", "twice"]),
    ({"commands": [{"name": "STOP", "description": "stop"}]}, ["command STOP: name:", "reserved"]),
    (_with(timeout_s=0), ["command DISPENSE: timeout_s:", "> 0"]),
    (_with(timeout_s=-5), ["command DISPENSE: timeout_s:"]),
    (_with(description=None), ["command DISPENSE: description:"]),
    ({"commands": [{"name": "dispense", "description": "x"}]}, ["command dispense: name:"]),
    ({"commands": []}, ["commands:"]),
    ('{"commands": [{"name": "A", "description": "a", "description": "b"}]}',
     ["command A:", "'description' is given twice"]),
]


@pytest.mark.parametrize(("content", "expected"), BAD_FILES)
def test_bad_file_is_one_line_naming_file_command_and_field(tmp_path, content, expected) -> None:
    path = _write(tmp_path, content, "my.json")
    with pytest.raises(CommandsFileError) as info:
        load_commands(path)
    message = str(info.value)
    assert message.startswith(f"commands file {path}: "), message
    assert "\n" not in message
    for part in expected:
        assert part in message, message


def test_unreadable_file_names_it(tmp_path) -> None:
    missing = str(tmp_path / "nope.json")
    with pytest.raises(CommandsFileError, match=r"^commands file .*nope\.json: cannot read it"):
        load_commands(missing)


# -- timeouts -----------------------------------------------------------------------------
def test_timeout_precedence(lab_file) -> None:
    import argparse

    from settings import DEFAULTS, from_args

    table = load_commands(lab_file)
    flags = dict.fromkeys(("robot_timeout", "commands", "lang"))
    # 1. An explicit --robot-timeout is for every command: the table's values do not apply.
    given = from_args(argparse.Namespace(**{**flags, "robot_timeout": 7.0}))
    assert (given.robot_timeout, given.command_timeouts_for(table.timeouts())) == (7.0, {})
    # 2. Otherwise each command's own timeout_s; 3. the default covers the rest.
    default = from_args(argparse.Namespace(**flags))
    assert default.robot_timeout == DEFAULTS.robot_timeout == 30.0
    per_command = default.command_timeouts_for(table.timeouts())
    assert per_command == {"HOME": 60.0, "SCAN_QRCODE": 60.0, "DISPENSE": 45.0}
    assert "PICK" not in per_command
    assert default.command_timeouts_for(CommandTable([]).timeouts()) == {}


def test_server_takes_timeouts_from_its_table_unless_given(make_server, lab_file) -> None:
    from_table = make_server(commands_file=lab_file, command_timeouts=None)
    assert from_table.link.command_timeouts == {"HOME": 60.0, "SCAN_QRCODE": 60.0,
                                                "DISPENSE": 45.0}
    explicit = make_server(commands_file=lab_file)  # conftest passes {} (as --robot-timeout)
    assert explicit.link.command_timeouts == {}


def test_commands_flag_is_parsed_for_serve_and_run() -> None:
    import main

    parser = main.build_parser()
    assert parser.parse_args(["serve", "--commands", "lab.json"]).commands == "lab.json"
    assert parser.parse_args(["run", "x.json", "--commands", "lab.json"]).commands == "lab.json"
    assert parser.parse_args(["serve"]).commands is None


# -- a lab's own command, end to end --------------------------------------------------------
def test_a_lab_command_is_accepted_listed_and_documented(make_server, lab_file) -> None:
    server = make_server(commands_file=lab_file)
    client = Client(server)
    # The commands the table always had still run on the robot.
    assert client.wait_final(client.submit(SCAN))["status"] == "completed"
    listed = {c["cmd_type"]: c for c in client.get("/commands").json()["commands"]}
    assert list(listed) == [*load_commands(None).names, "DISPENSE"]
    assert listed["DISPENSE"]["params"]["volume_ul"] == {
        "type": "number", "description": "Volume in microlitres", "required": True,
        "minimum": 0.1, "maximum": 1000}
    doc = client.get("/openapi.json").json()
    titles = [v["title"] for v in doc["components"]["schemas"]["Command"]["oneOf"]]
    assert "DISPENSE" in titles
    if importlib.util.find_spec("openapi_spec_validator") is not None:
        from openapi_spec_validator import validate

        validate(doc)
    bad = client.post("/", {"cmd_type": "DISPENSE", "params": {"position": 5, "volume_ul": 0}})
    assert bad.status_code == 422 and bad.json()["field"] == "params.volume_ul", bad.text
    # Held, so the simulator (which may not know DISPENSE) is not asked to run it.
    assert client.post("/queue/pause").status_code == 200
    r = client.post("/", {"cmd_type": "DISPENSE", "params": {"position": 5, "volume_ul": 20}})
    assert r.status_code == 202, r.text
    task = client.task(r.json()["task_id"])
    assert task["cmd_type"] == "DISPENSE" and task["status"] == "pending"
    assert task["params"] == {"position": 5, "volume_ul": 20}


def test_a_server_without_the_file_refuses_the_lab_command(client: Client) -> None:
    r = client.post("/", {"cmd_type": "DISPENSE", "params": {"position": 5, "volume_ul": 20}})
    assert r.status_code == 422, r.text
    assert "unknown cmd_type 'DISPENSE'" in r.json()["message"]
    doc = client.get("/openapi.json").json()
    assert "DISPENSE" not in json.dumps(doc)


# -- main.py with a bad file ----------------------------------------------------------------
def _main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_serve_with_a_bad_file_exits_1_with_one_line_and_touches_nothing(tmp_path) -> None:
    bad = _write(tmp_path, _with(params=BAD_PARAM), "bad.json")
    db = tmp_path / "tasks.db"
    out = _main("serve", "--mode", "queue", "--host", "127.0.0.1", "--port", "0",
                "--db", str(db), "--commands", bad)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"Cannot start: commands file {bad}: command DISPENSE: "
                               "params[1].type: unknown type 'float'"), lines[0]
    # Refused before the lock or the database: a second server's start cannot disturb them.
    assert not db.exists() and not os.path.exists(f"{db}.lock")


def test_run_with_a_bad_file_exits_1_with_one_line(tmp_path) -> None:
    bad = _write(tmp_path, "{not json", "bad.json")
    out = _main("run", os.path.join(ROOT, "SCAN_QR_CODE_command.json"), "--commands", bad)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.strip() == (f"Cannot start: commands file {bad}: invalid JSON at line 1 "
                                  "column 2: Expecting property name enclosed in double quotes")


def test_run_uses_the_given_table(tmp_path, lab_file) -> None:
    # The lab table without SCAN_QRCODE: the guide's command file is now refused.
    with open(lab_file, encoding="utf-8") as fh:
        data = json.load(fh)
    data["commands"] = [c for c in data["commands"] if c["name"] != "SCAN_QRCODE"]
    path = _write(tmp_path, data, "no-scan.json")
    out = _main("run", os.path.join(ROOT, "SCAN_QR_CODE_command.json"), "--commands", path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "unknown cmd_type 'SCAN_QRCODE'" in out.stderr and "DISPENSE" in out.stderr


def test_served_commands_are_the_loaded_ones(make_server, lab_file) -> None:
    server = make_server(commands_file=lab_file)
    assert server.commands is not None and "DISPENSE" in server.commands
    assert server.manager.commands is server.commands is server.worker.commands
    assert server.app.commands is server.commands
    r = requests.get(server.url + "/commands", timeout=5)
    assert r.json()["commands"] == server.commands.catalog()


@pytest.mark.parametrize(("content", "expected"), [
    ('{"X": 1}', "命令文件 {path}: 未知的键 'X'（允许的键: 'commands'）"),
    ('{"commands": [\n  {"name": "DISPENSE",}\n]}',
     "命令文件 {path}: JSON 格式错误：第 2 行第 23 列（此处应为用双引号括起的键名）"),
    (_with(params=BAD_PARAM), "命令文件 {path}: 命令 DISPENSE: params[1].type: 未知的类型 "
                              "'float'（可用: 'number', 'integer', 'string', 'integer_list'）"),
    (_with(example={"position": 97, "volume_ul": 5}),
     "命令文件 {path}: 命令 DISPENSE: example.position: 示例被拒绝: 'position' = 97 超出范围 "
     "[1, 96]"),
    ({"commands": [5]}, "命令文件 {path}: 命令 #1: 必须是一个 JSON 对象（一条命令）"),
])
def test_a_bad_file_is_coded_and_reads_in_chinese(tmp_path, content, expected) -> None:
    from tests.test_i18n_zh_only import english_words

    path = _write(tmp_path, content, "my.json")
    with pytest.raises(CommandsFileError) as info:
        load_commands(path)
    assert info.value.text("zh") == expected.format(path=path)
    assert english_words(info.value.text("zh"), names=("DISPENSE",)) == []
    assert str(info.value).startswith(f"commands file {path}: ")  # logs stay English
    assert info.value.code.startswith("commands_")


def test_an_unreadable_file_says_why_in_chinese(tmp_path) -> None:
    missing = str(tmp_path / "nope.json")
    with pytest.raises(CommandsFileError) as info:
        load_commands(missing)
    assert info.value.text("zh") == f"命令文件 {missing}: 无法读取: 文件或目录不存在"
    assert str(info.value) == f"commands file {missing}: cannot read it: no such file or directory"
