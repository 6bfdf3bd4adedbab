"""main.py as a user runs it: menus on stdin, flags, local mode, clean SIGTERM."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys

import pytest
import requests

from tests.conftest import ROOT
from tests.proc import free_port, sigterm, wait_healthy


def _main(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def test_end_of_input_at_a_menu_exits_naming_the_serve_command() -> None:
    out = _main(stdin="")
    assert out.returncode == 2
    assert "python main.py serve" in out.stderr


def test_menus_ask_again_then_serve_and_stop_cleanly_on_sigterm(tmp_path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--host", "127.0.0.1", "--port", str(port), "--robot", "sim",
         "--sim-speed", "200", "--db", str(tmp_path / "m.db")], cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        proc.stdin.write("7\n1\nx\n2\n\n")  # a bad answer is asked again; Enter = default port
        proc.stdin.flush()
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        assert requests.get(url, timeout=5).json()["mode"] == "queue"
    finally:
        out = sigterm(proc)
    assert proc.returncode == 0, out
    assert out.count("Please type one of") == 2
    assert "Queue mode enabled" in out
    assert f"127.0.0.1:{port}" in out and "Robot port:" in out and "LAN IP:" in out
    assert "Robot protocol: json" in out
    assert "Server stopped." in out


def test_local_mode_runs_one_command_file(tmp_path) -> None:
    out = _main("run", os.path.join(ROOT, "SCAN_QR_CODE_command.json"), "--sim-speed", "200")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout[out.stdout.index("{"):])
    assert result["success"] is True and result["scanned_count"] == 3


def test_local_mode_failure_is_shaped_as_a_stored_one(tmp_path) -> None:
    # A table that lets MOVE_TO through without coordinates: the robot itself refuses it.
    with open(os.path.join(ROOT, "tasks", "commands", "commands.json"), encoding="utf-8") as fh:
        table = json.load(fh)
    move = next(c for c in table["commands"] if c["name"] == "MOVE_TO")
    move.update(params=[], example={}, wire="MOVE")
    (tmp_path / "commands.json").write_text(json.dumps(table), encoding="utf-8")
    (tmp_path / "move.json").write_text('{"cmd_type": "MOVE_TO", "params": {}}', encoding="utf-8")
    results = {}
    for lang in ("en", "zh"):
        out = _main("run", str(tmp_path / "move.json"), "--commands",
                    str(tmp_path / "commands.json"), "--sim-speed", "200", "--lang", lang)
        assert out.returncode == 1, out.stderr
        results[lang] = json.loads(out.stdout[out.stdout.index("{"):])
    assert results["en"]["success"] is False and results["en"]["code"] == "robot_error"
    assert results["zh"]["code"] == "robot_error"
    assert "MOVE_TO needs numbers" in results["en"]["message"]
    assert results["zh"]["message"] != results["en"]["message"]  # the wrapping is Chinese


def test_local_mode_rejects_a_bad_command_file(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"cmd_type": "DANCE"}', encoding="utf-8")
    out = _main("run", str(bad))
    assert out.returncode == 2
    assert "known commands" in out.stderr and "Traceback" not in out.stderr


def test_busy_port_is_one_clear_line(tmp_path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = _main("serve", "--mode", "queue", "--host", "127.0.0.1", "--port", str(port),
                    "--db", str(tmp_path / "b.db"), "--sim-speed", "200")
    assert out.returncode == 1
    assert "Cannot start" in out.stderr and "Traceback" not in out.stderr


def test_banner_says_when_the_robot_is_not_there_and_the_server_still_serves(tmp_path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "main.py", "serve", "--mode", "queue", "--host", "127.0.0.1",
         "--port", str(port), "--robot", str(tmp_path / "no-such-port"),
         "--db", str(tmp_path / "r.db")], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        robot = requests.get(url + "/health", timeout=5).json()["robot"]
        assert robot["connected"] is False and "no such device" in robot["error"]
    finally:
        out = sigterm(proc)
    assert proc.returncode == 0
    assert "Robot not answering yet: cannot open" in out and "no such device" in out


def test_choosing_a_real_port_asks_for_its_protocol(monkeypatch) -> None:
    """A lab robot on COM3 rarely speaks our JSON: the menu that picks the port asks.
    The port list is faked (no serial hardware here); the menus are the real ones."""
    from serial.tools import list_ports as tools
    from serial.tools.list_ports_common import ListPortInfo

    import main

    com3 = ListPortInfo("COM3", skip_link_detection=True)
    com3.description = "USB-SERIAL CH340 (COM3)"
    monkeypatch.setattr(tools, "comports", lambda: [com3])
    monkeypatch.setattr(sys, "stdin", io.StringIO("1\n2\n1\n2\n"))  # server, queue, COM3, text
    args = main.build_parser().parse_args([])
    main.fill_from_menus(args)
    assert (args.command, args.mode, args.robot, args.robot_protocol) == \
        ("serve", "queue", "COM3", "text")
    # The simulator is ours: choosing it asks nothing more (it speaks json by default).
    monkeypatch.setattr(sys, "stdin", io.StringIO("1\n2\n0\n"))
    args = main.build_parser().parse_args([])
    main.fill_from_menus(args)
    assert (args.robot, args.robot_protocol) == ("sim", None)


def test_dual_stack_serve_with_a_trusted_proxy_flag(tmp_path) -> None:
    if not socket.has_dualstack_ipv6():
        pytest.skip("this machine has no dual-stack IPv6 sockets")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "main.py", "serve", "--mode", "queue", "--host", "::",
         "--port", str(port), "--robot", "sim", "--sim-speed", "200", "--lang", "zh",
         "--allow", "10.0.0.0/8", "--trusted-proxy", "127.0.0.1", "--db", str(tmp_path / "v6.db")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # --allow keeps this machine out, except as a trusted proxy naming a 10.x client.
        via = {"X-Forwarded-For": "10.1.2.3"}
        wait_healthy(f"http://127.0.0.1:{port}", proc, statuses=(403,))  # up, refusing us
        assert requests.get(f"http://127.0.0.1:{port}/queue/status", headers=via,
                            timeout=5).status_code == 200
        assert requests.get(f"http://127.0.0.1:{port}/queue/status", timeout=5).status_code == 403
        # ::1 is not in this --trusted-proxy list: its X-Forwarded-For is ignored.
        assert requests.get(f"http://[::1]:{port}/queue/status", headers=via,
                            timeout=5).status_code == 403
    finally:
        out = sigterm(proc)
    assert proc.returncode == 0, out
    assert f"监听地址: [::]:{port} (所有网络接口, IPv4 + IPv6)" in out
