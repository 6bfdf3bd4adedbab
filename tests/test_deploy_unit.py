"""One place for a lab's settings (issue 29): the shipped systemd unit's own command lines,
as written in deploy/robot-server.service, with an environment file in the shipped
example's format, against a robot that speaks the text protocol; the environment
variables beside the flags (the flag wins, a bad value is one clear line); serve --check.

Before, the unit gave `--robot` to both `check` and `serve` but `--robot-protocol` to
neither: `check` pinged a text robot in JSON and the service never started.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import requests

import main
from robot.sim.simulator import RobotSimulator
from settings import FLAGS, EnvSettingError, environ_values, fill_from_environ, from_args
from tests.conftest import ROOT, wait_until
from tests.proc import free_port, sigterm, wait_healthy

UNIT = Path(ROOT) / "deploy" / "robot-server.service"
EXAMPLE = Path(ROOT) / "deploy" / "robot-server.env"
DEPLOY_DOC = Path(ROOT) / "docs" / "deploy.md"
UNIT_PYTHON = "/opt/robot-server/.venv/bin/python"
UNIT_ENV_FILE = "/etc/robot-server/env"
ENV_LINE = re.compile(r"^#?(ROBOT_[A-Z_]+)=")
# Flags of `serve` that are not a lab's setting, or have their variable elsewhere:
# --api-token (ROBOT_API_TOKEN, settings.from_args), --lang (ROBOT_LANG, i18n).
NOT_SETTINGS = {"help", "check", "api_token", "lang"}


# -- the unit and the environment file, read as systemd reads them -------------------------
def unit_directives(text: str) -> list[tuple[str, str]]:
    """The unit's (key, value) pairs: comments dropped, backslash continuations joined."""
    directives: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";", "["))):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        key, _, value = (pending + line).partition("=")
        directives.append((key.strip(), value.strip()))
        pending = ""
    return directives


def unit_value(key: str) -> str:
    values = [value for k, value in unit_directives(UNIT.read_text(encoding="utf-8")) if k == key]
    assert len(values) == 1, f"{key}= in the unit: {values}"
    return values[0]


def unit_command(key: str) -> list[str]:
    """ExecStartPre/ExecStart as written; only the unit's interpreter is replaced by ours."""
    argv = shlex.split(unit_value(key))
    assert argv[0] == UNIT_PYTHON, argv
    return [sys.executable, *argv[1:]]


def read_env_file(path: Path) -> dict[str, str]:
    """systemd's EnvironmentFile=: KEY=VALUE lines, # and ; comments, optional quotes."""
    env: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        assert sep and key.strip().isidentifier(), f"not KEY=VALUE: {raw!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def lab_env_file(tmp_path: Path, **values: str) -> Path:
    """The shipped example with a lab's values: its lines (set or commented) for these
    variables set; every variable given must be one the example documents."""
    lines = []
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = ENV_LINE.match(line)
        if match and match.group(1) in values:
            line = f"{match.group(1)}={values.pop(match.group(1))}"
        lines.append(line)
    assert not values, f"not in deploy/robot-server.env: {sorted(values)}"
    path = tmp_path / "env"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def service_environ(env_file: Path) -> dict[str, str]:
    """What systemd gives the unit's processes: no login environment, the unit's
    Environment= lines and its EnvironmentFile= (here: env_file in its place)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env["ROBOT_I18N_STRICT"] = os.environ.get("ROBOT_I18N_STRICT", "1")  # the suite's rule
    env.update(dict([unit_value("Environment").split("=", 1)]))
    assert unit_value("EnvironmentFile") == UNIT_ENV_FILE  # required: no "-" before it
    env.update(read_env_file(env_file))
    return env


def clean_environ(**values: str) -> dict[str, str]:
    """This process's environment without any ROBOT_ setting, plus ``values``."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("ROBOT_") and k not in ("ROBOT_I18N_STRICT", "ROBOT_LANG"))}
    return {**env, **values}


def _lab(tmp_path: Path, robot: RobotSimulator, **more: str) -> dict[str, str]:
    return {"ROBOT_PORT": robot.path, "ROBOT_PROTOCOL": "text",
            "ROBOT_DB": str(tmp_path / "state" / "tasks.db"),
            "ROBOT_HOST": "127.0.0.1", "ROBOT_HTTP_PORT": str(free_port()),
            "ROBOT_LOG_FILE": str(tmp_path / "server.log"), "ROBOT_LANG": "en", **more}


# -- the unit's command lines ---------------------------------------------------------------
def test_unit_lines_check_then_serve_a_text_robot(tmp_path, text_sim) -> None:
    (tmp_path / "state").mkdir()
    lab = _lab(tmp_path, text_sim)
    env = service_environ(lab_env_file(tmp_path, **lab))
    check = subprocess.run(unit_command("ExecStartPre"), cwd=ROOT, env=env, text=True,
                           capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "protocol text" in check.stdout and "configuration OK" in check.stdout, check.stdout

    url = f"http://127.0.0.1:{lab['ROBOT_HTTP_PORT']}"
    proc = subprocess.Popen(unit_command("ExecStart"), cwd=ROOT, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, proc, 30)
        assert requests.get(url + "/health", timeout=5).json()["status"] == "ok"
        robot = requests.get(url + "/robot", timeout=5).json()
        assert robot["protocol"] == "text" and robot["port"] == text_sim.path, robot
        with open(os.path.join(ROOT, "SCAN_QR_CODE_command.json"), encoding="utf-8") as fh:
            command = json.load(fh)
        reply = requests.post(url, json=command, timeout=10)
        assert reply.status_code == 202 and reply.json()["success"] is True, reply.text
        task_id = reply.json()["task_id"]
        doc = wait_until(lambda: (d := requests.get(f"{url}/task/{task_id}", params={"wait": 5},
                                                    timeout=10).json())["status"]
                         in ("completed", "failed", "cancelled") and d, 30,
                         message="the scan's end")
        assert doc["status"] == "completed", doc
        assert [b["position"] for b in doc["result"]["scanned_bottles"]] == [1, 2, 3], doc
        # The settings came from the file: its database and its log file.
        assert os.path.exists(lab["ROBOT_DB"])
        log = Path(lab["ROBOT_LOG_FILE"])
        wait_until(lambda: log.exists() and task_id in log.read_text(encoding="utf-8"), 10,
                   message="the task in the log file")
    finally:
        out = sigterm(proc)
    assert proc.returncode == 0, out


def test_check_speaks_the_protocol_the_environment_names(tmp_path, text_sim) -> None:
    """The issue's failure: `check` pinged a text robot in JSON. With the unit's one
    place it reads ROBOT_PROTOCOL as `serve` does; without it, it still fails (json)."""
    lab = _lab(tmp_path, text_sim)
    env = service_environ(lab_env_file(tmp_path, **lab))
    ok = subprocess.run(unit_command("ExecStartPre"), cwd=ROOT, env=env, text=True,
                        capture_output=True, timeout=60)
    assert ok.returncode == 0 and "protocol text" in ok.stdout, ok.stdout + ok.stderr
    del env["ROBOT_PROTOCOL"]
    wrong = subprocess.run(unit_command("ExecStartPre"), cwd=ROOT, env=env, text=True,
                           capture_output=True, timeout=60)
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert "check failed: robot" in wrong.stderr and "json" in wrong.stderr, wrong.stderr


def test_unit_commands_carry_no_settings() -> None:
    """A flag in one command line and not the other is the trap: settings live in the file."""
    assert unit_command("ExecStartPre")[1:] == ["main.py", "check"]
    assert unit_command("ExecStart")[1:] == ["main.py", "serve"]
    env = read_env_file(EXAMPLE)
    assert env["ROBOT_MODE"] == "queue"  # else `serve` would ask, with no one to answer
    values = environ_values(env)  # every value the example sets is one its flag takes
    assert values["port"] == 8090 and values["robot"].startswith("/dev/serial/by-id/")


# -- the variables: every setting has one, the flag wins, a bad value is one line -----------
def test_every_serve_setting_has_a_variable_documented_in_one_place() -> None:
    parser = main.build_parser()
    serve = next(a for a in parser._actions
                 if isinstance(a, argparse._SubParsersAction)).choices["serve"]
    dests = {action.dest for action in serve._actions} - NOT_SETTINGS
    assert dests - set(FLAGS) == set(), "serve flags without a ROBOT_ variable"
    names = [flag.env for flag in FLAGS.values()]
    assert len(set(names)) == len(names) and all(n.startswith("ROBOT_") for n in names)
    example = {m.group(1) for line in EXAMPLE.read_text(encoding="utf-8").splitlines()
               if (m := ENV_LINE.match(line))}
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    for name in [*names, "ROBOT_API_TOKEN", "ROBOT_LANG"]:
        assert name in example, f"{name} is not in deploy/robot-server.env"
        assert f"| `{name}` |" in doc, f"{name} is not in docs/deploy.md's table"
    assert "(env ROBOT_PROTOCOL)" in serve.format_help()


def test_flag_beats_environment_beats_default(monkeypatch) -> None:
    for name in [flag.env for flag in FLAGS.values()]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ROBOT_PROTOCOL", "text")
    monkeypatch.setenv("ROBOT_BAUD", "9600")
    monkeypatch.setenv("ROBOT_TRUSTED_PROXY", "")  # as --trusted-proxy '': none
    monkeypatch.setenv("ROBOT_COMMANDS", "")  # empty: unset
    args = main.build_parser().parse_args(["serve", "--robot-protocol", "json"])
    s = from_args(args)
    assert (s.robot_protocol, s.baudrate, s.trusted_proxies) == ("json", 9600, ())
    assert s.commands_file is None and s.robot == "sim"  # the defaults


def test_the_flag_wins_in_check_and_the_environment_fills_the_rest(tmp_path) -> None:
    env_port, flag_port = free_port(), free_port()
    env = clean_environ(ROBOT_HOST="127.0.0.1", ROBOT_HTTP_PORT=str(env_port),
                        ROBOT_DB=str(tmp_path))  # a directory: check stops at the database
    done = subprocess.run([sys.executable, "main.py", "check", "--port", str(flag_port)],
                          cwd=ROOT, env=env, text=True, capture_output=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"127.0.0.1:{flag_port} is free" in done.stdout, done.stdout
    assert f"{tmp_path} is a directory" in done.stderr, done.stderr


@pytest.mark.parametrize("command", [["check"], ["serve"], ["run", "x.json"]])
def test_a_bad_value_is_one_line_naming_the_variable(command: list[str]) -> None:
    env = clean_environ(ROBOT_BAUD="fast")
    done = subprocess.run([sys.executable, "main.py", *command], cwd=ROOT, env=env,
                          text=True, capture_output=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        'Environment variable ROBOT_BAUD="fast" cannot be used: --baud takes a whole number']


def test_a_bad_value_in_chinese() -> None:
    env = clean_environ(ROBOT_SIM_TRANSPORT="serial", ROBOT_LANG="zh", PYTHONIOENCODING="utf-8")
    done = subprocess.run([sys.executable, "main.py", "serve"], cwd=ROOT, env=env,
                          text=True, encoding="utf-8", capture_output=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == ('无法使用环境变量 ROBOT_SIM_TRANSPORT="serial"：'
                                   '--sim-transport 需要以下之一: auto, pty, tcp')


def test_values_parse_as_their_flags() -> None:
    values = environ_values({"ROBOT_AUTO_RESUME": "yes", "ROBOT_ALLOW": "10.0.0.0/8, ::1",
                             "ROBOT_KEEP_DAYS": "7.5", "ROBOT_MODE": "sync", "ROBOT_DB": " "})
    assert values == {"auto_resume": True, "allow": ("10.0.0.0/8", "::1"), "keep_days": 7.5,
                      "mode": "sync"}
    for bad in ({"ROBOT_ALLOW": "lab"}, {"ROBOT_AUTO_RESUME": "maybe"},
                {"ROBOT_MAX_QUEUE": "1e3"}, {"ROBOT_MODE": "Queue"}):
        with pytest.raises(EnvSettingError):
            environ_values(bad)


def test_the_menus_do_not_ask_what_the_environment_gave(monkeypatch) -> None:
    from console.menus import MenuExit, fill_from_menus

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # any question ends the run
    args = main.build_parser().parse_args(["serve"])
    with pytest.raises(MenuExit):
        fill_from_menus(args)  # no mode: asked
    args = main.build_parser().parse_args(["serve"])
    fill_from_environ(args, {"ROBOT_MODE": "queue", "ROBOT_PORT": "sim"})
    fill_from_menus(args)
    assert args.mode == "queue" and args.robot == "sim"


# -- serve --check --------------------------------------------------------------------------
def test_serve_check_refuses_to_start_when_a_check_fails(tmp_path) -> None:
    port = free_port()
    done = subprocess.run([sys.executable, "main.py", "serve", "--check", "--host", "127.0.0.1",
                           "--port", str(port), "--db", str(tmp_path)], cwd=ROOT,
                          env=clean_environ(ROBOT_MODE="queue"), text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"127.0.0.1:{port} is free" in done.stdout
    assert "check failed: database" in done.stderr and "is a directory" in done.stderr


def test_serve_check_checks_then_serves_the_same_robot(tmp_path, text_sim) -> None:
    lab = _lab(tmp_path, text_sim, ROBOT_MODE="queue", ROBOT_DB=str(tmp_path / "tasks.db"))
    url = f"http://127.0.0.1:{lab['ROBOT_HTTP_PORT']}"
    proc = subprocess.Popen([sys.executable, "main.py", "serve", "--check"], cwd=ROOT,
                            env=clean_environ(**lab), text=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, proc, 30)  # the check released the port and the robot
        assert requests.get(url + "/robot", timeout=5).json()["protocol"] == "text"
    finally:
        out = sigterm(proc)
    assert proc.returncode == 0, out
    assert "protocol text" in out and "configuration OK" in out, out
