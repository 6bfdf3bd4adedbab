"""The console an operator reads: the banner, warnings and one line per task event in
the operator's language; access lines only in the log file unless asked for. And the
menus: a port typed in full (a socket:// URL) under a real pty, no empty choice.
main.py runs as a real subprocess, as an operator runs it."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from console import menus
from i18n import Translator
from tests.conftest import ROOT, wait_until
from tests.proc import end, free_port, scan, wait_healthy
from tests.test_i18n_console import LOG_RECORD, Served, clean_env

LISTENING = {"en": r"^Listening on: 127\.0\.0\.1:(\d+)$", "zh": r"^监听地址: 127\.0\.0\.1:(\d+)$"}
TASK_LINE = {
    "en": r"^\[\d\d:\d\d:\d\d\] task {id} {word}: SCAN_QRCODE rack R7",
    "zh": r"^\[\d\d:\d\d:\d\d\] 任务 {id} {word}: SCAN_QRCODE 样品架 R7",
}
WORDS = {"en": ("queued", "started", "completed"), "zh": ("已排队", "开始执行", "已完成")}
ACCESS = re.compile(r"server\.access|\"(GET|POST) /")


def serve(tmp_path: Path, lang: str, *flags: str) -> tuple[Served, str]:
    server = Served("serve", "--mode", "queue", "--host", "127.0.0.1", "--port", "0",
                    "--robot", "sim", "--sim-speed", "50", "--db", str(tmp_path / "c.db"),
                    "--lang", lang, *flags, env=clean_env())
    port = server.wait_for(LISTENING[lang]).group(1)
    return server, f"http://127.0.0.1:{port}"


def hundred_requests(url: str) -> str:
    """GETs of the status and /health, a pause and resume (a warning), a scan submitted
    and polled to the end: 100 requests in all. Returns the task's id."""
    session, sent = requests.Session(), 0
    for _ in range(45):
        assert session.get(url + "/queue/status", timeout=10).status_code == 200
        assert session.get(url + "/health", timeout=10).status_code == 200
        sent += 2
    assert session.post(url + "/queue/pause", json={}, timeout=10).status_code == 200
    assert session.post(url + "/queue/resume", json={}, timeout=10).status_code == 200
    r = session.post(url, json=scan("R7"), timeout=10)
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    sent += 3
    while True:
        doc = session.get(f"{url}/task/{task_id}", params={"wait": 5}, timeout=10).json()
        sent += 1
        if doc["status"] in ("completed", "failed", "cancelled"):
            break
        assert sent < 100, "the task did not finish within the 100 requests"
    assert doc["status"] == "completed", doc
    while sent < 100:
        assert session.get(url + "/queue/status", timeout=10).status_code == 200
        sent += 1
    return task_id


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_default_console_shows_banner_warnings_and_task_lines_but_no_access_lines(
        tmp_path, lang) -> None:
    server, url = serve(tmp_path, lang)
    try:
        task_id = hundred_requests(url)
        server.wait_for(TASK_LINE[lang].format(id=task_id, word=WORDS[lang][2]))
    finally:
        out = server.stop()
    assert server.proc.returncode == 0, out
    lines = out.splitlines()
    banner = {"en": ["✓ Queue mode enabled", "Mode: queue mode"],
              "zh": ["✓ 任务队列模式已启用", "模式: 队列模式"]}[lang]
    assert all(line in lines for line in banner), out
    commands = {"en": "Commands: {} (7 commands) (shipped)", "zh": "命令表: {}（7 个命令）（内置）"}
    assert commands[lang].format(os.path.join(ROOT, "tasks", "commands", "commands.json")) \
        in lines, out
    # queued, started, completed: one line each, in that order, with the rack
    found = []
    for word in WORDS[lang]:
        pattern = re.compile(TASK_LINE[lang].format(id=task_id, word=word))
        at = [i for i, line in enumerate(lines) if pattern.match(line)]
        assert len(at) == 1, (word, out)
        found.append(at[0])
    assert found == sorted(found), out
    # warnings are shown (the pause), INFO records and access lines are not
    assert any(" WARNING " in line and "queue paused" in line for line in lines), out
    assert not [line for line in lines if ACCESS.search(line)], out
    assert not [line for line in lines if LOG_RECORD.match(line) and " INFO " in line], out
    assert lines[-1] == {"en": "Server stopped.", "zh": "服务器已停止。"}[lang]


@pytest.mark.parametrize("flags, on_console, in_file", [
    ((), False, True),
    (("--access-log", "console"), True, True),
    (("--log-level", "INFO"), True, True),
    (("--log-level", "info", "--access-log", "file"), False, True),
    (("--access-log", "off"), False, False),
])
def test_access_lines_go_where_they_are_asked_for(tmp_path, flags, on_console,
                                                  in_file) -> None:
    log_file = tmp_path / "server.log"
    server, url = serve(tmp_path, "en", "--log-file", str(log_file), *flags)
    try:
        for _ in range(5):
            assert requests.get(url + "/queue/status", timeout=10).status_code == 200
        task_id = requests.post(url, json=scan("R7"), timeout=10).json()["task_id"]
        server.wait_for(TASK_LINE["en"].format(id=task_id, word="completed"))
    finally:
        out = server.stop()
    assert server.proc.returncode == 0, out
    logged = log_file.read_text(encoding="utf-8")
    status_line = '"GET /queue/status HTTP/1.1" 200'
    assert (status_line in out) is on_console, out
    assert (status_line in logged) is in_file, logged
    # The file keeps the task's life at INFO whatever the console shows.
    assert f"task {task_id} SCAN_QRCODE completed in" in logged
    info_on_console = any(LOG_RECORD.match(line) and " INFO " in line
                          for line in out.splitlines() if "server.access" not in line)
    assert info_on_console is ("--log-level" in flags), out


def _doc(task_id: str, status: str, **more: object) -> dict[str, object]:
    return {"task_id": task_id, "status": status, "cmd_type": "SCAN_QRCODE",
            "params": {"rack": "B", "positions": [1]}, **more}


def test_task_lines_for_every_state_from_a_real_event_bus() -> None:
    from console.events import ConsoleEvents
    from tasks.queue.events import EventBus

    bus, lines = EventBus(), []
    reporter = ConsoleEvents(bus, "zh", write=lines.append)
    bus.publish("task", _doc("t1", "pending"))  # before start(): printed after the banner
    reporter.start()
    bus.publish("progress", {"task_id": "t1", "progress": {"done": 1}})  # not a line
    bus.publish("task", _doc("t1", "running"))
    bus.publish("task", _doc("t1", "pending"))  # not sent: back at the head of the queue
    bus.publish("task", _doc("t1", "running"))
    bus.publish("task", _doc("t1", "failed", result={"message": "机器人报错: \"ERR 7\"\n第二行"}))
    bus.publish("task", {**_doc("t2", "cancelled"), "params": {"position": 3}})
    bus.publish("task", _doc("t3", "completed", duration_s=3.14159))
    reporter.stop()
    assert bus.subscriber_count == 0
    words = [re.sub(r"^\[\d\d:\d\d:\d\d\] ", "", line) for line in lines]
    assert words == [
        "任务 t1 已排队: SCAN_QRCODE 样品架 B",
        "任务 t1 开始执行: SCAN_QRCODE 样品架 B",
        "任务 t1 未发送（机器人连接中断），已放回队首: SCAN_QRCODE 样品架 B",
        "任务 t1 开始执行: SCAN_QRCODE 样品架 B",
        "任务 t1 失败: SCAN_QRCODE 样品架 B: 机器人报错: \"ERR 7\" 第二行",
        "任务 t2 已取消: SCAN_QRCODE",
        "任务 t3 已完成: SCAN_QRCODE 样品架 B（3.1 秒）",
    ], lines


def test_a_reporter_that_fell_behind_says_so_and_goes_on() -> None:
    from console.events import ConsoleEvents
    from tasks.queue.events import EventBus

    bus, lines = EventBus(buffer_size=3, subscriber_queue=2), []
    reporter = ConsoleEvents(bus, "en", write=lines.append)
    for n in range(6):  # more than its queue holds before it reads: dropped
        bus.publish("task", _doc(f"t{n}", "pending"))
    reporter.start()
    wait_until(lambda: len(lines) >= 4, 10, message="the lines after the gap")
    reporter.stop()
    assert [line.split("] ", 1)[-1] for line in lines] == [
        "task t0 queued: SCAN_QRCODE rack B", "task t1 queued: SCAN_QRCODE rack B",
        "(task lines were skipped: the console fell behind; see GET /tasks)",
        "task t5 queued: SCAN_QRCODE rack B"], lines


# -- the menus -------------------------------------------------------------------------------
def test_port_hint_lists_real_choices_and_takes_a_typed_path(monkeypatch, capsys) -> None:
    monkeypatch.setattr("robot.list_ports", lambda: [{"device": "/dev/ttyS0"}])
    answers = iter([""])
    port = menus.ask_robot_port(read=lambda _: next(answers), tr=Translator("zh"))
    assert port == "sim"  # Enter: the default
    out = capsys.readouterr().out
    assert "请输入编号（0, 1）" in out and "直接回车 = sim" in out and ": ," not in out
    answers = iter(["7", "ttyUSB0", "COM3"])
    assert menus.ask_robot_port(read=lambda _: next(answers)) == "COM3"
    out = capsys.readouterr().out
    assert out.count("Not a port: ") == 2 and "Type a number (0, 1)" in out
    for typed in ("/dev/ttyUSB0", "socket://10.0.0.5:4001", "RFC2217://lab-1:7000",
                  "\\\\.\\COM10", "sim"):
        assert menus.ask_robot_port(read=lambda _, typed=typed: typed) == typed

    def eof(_: str) -> str:
        raise EOFError
    assert menus.ask_robot_port(read=eof) == "sim"  # piped input that ends: the default
    assert menus.ask_robot_protocol(read=eof) == "json"
    answers = iter(["x", "2"])
    assert menus.ask_robot_protocol(read=lambda _: next(answers)) == "text"
    assert "Please type one of: 1, 2 (Enter = json)" in capsys.readouterr().out


def test_the_guides_two_answers_piped_start_the_simulator(tmp_path) -> None:
    server = Served("--host", "127.0.0.1", "--port", "0", "--sim-speed", "200",
                    "--db", str(tmp_path / "g.db"), env=clean_env(), stdin="1\n2\n")
    try:
        server.wait_for(r"^Robot port: .* \(built-in simulator\)$")
    finally:
        out = server.stop()
    assert server.proc.returncode == 0, out
    assert "Choose robot port [Enter = sim]: " in out and "No answer" not in out


class PtyConsole:
    """main.py on a real pseudo-terminal, as in a terminal window: input() reads the
    keyboard (the pty's line discipline), output is read as it comes."""

    def __init__(self, *args: str) -> None:
        master, slave = pty.openpty()
        self.master = master
        self.proc = subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT,
                                     env=clean_env(), stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.data = b""
        self._lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if not ready:
                if self.proc.poll() is not None:
                    return
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the other side closed
                return
            if not chunk:
                return
            with self._lock:
                self.data += chunk

    def text(self) -> str:
        with self._lock:
            return self.data.decode("utf-8", "replace").replace("\r\n", "\n")

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match:
        found = re.compile(pattern, re.M)
        try:
            return wait_until(lambda: found.search(self.text()), timeout, 0.05,
                              f"{pattern!r} on the terminal")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; terminal so far:\n{self.text()}") from None

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")  # the Enter key: CR, made NL by the pty

    def stop(self) -> str:
        try:
            end(self.proc)
        finally:
            self.reader.join(5)
            os.close(self.master)
        return self.text()


@pytest.mark.skipif(sys.platform == "win32", reason="a pty")
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_menu_takes_a_typed_socket_url_on_a_terminal(tmp_path, lang) -> None:
    robot_port = free_port()
    sim = subprocess.Popen([sys.executable, "-m", "robot.sim", "--speed", "200",
                            "--tcp", f"127.0.0.1:{robot_port}"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = f"socket://127.0.0.1:{robot_port}"
    http_port = free_port()
    term = None
    try:
        assert sim.stdout is not None and sim.stdout.readline().strip() == url
        term = PtyConsole("--host", "127.0.0.1", "--port", str(http_port), "--lang", lang,
                          "--db", str(tmp_path / "p.db"))
        prompts = {"en": ("Choose mode", "Choose execution mode", "Choose robot port",
                          "Not a port: nonsense", "Choose robot protocol", "Robot port: "),
                   "zh": ("选择模式", "选择执行模式", "选择机器人端口", "不是端口: nonsense",
                          "选择机器人协议", "机器人端口: ")}[lang]
        term.wait_for(re.escape(prompts[0]))
        term.type("1")
        term.wait_for(re.escape(prompts[1]))
        term.type("2")
        term.wait_for(re.escape(prompts[2]))
        hint = term.text().splitlines()[-2]
        assert "socket://" in hint and ": ," not in hint and "（, " not in hint, hint
        term.type("nonsense")
        term.wait_for(re.escape(prompts[3]))
        term.type(url)
        term.wait_for(re.escape(prompts[4]))
        term.type("")  # Enter: json, the simulator's protocol
        term.wait_for("^" + re.escape(prompts[5] + url) + "$")
        base = f"http://127.0.0.1:{http_port}"
        wait_healthy(base, term.proc)
        robot = wait_until(lambda: (r := requests.get(base + "/health", timeout=5).json()
                                    ["robot"])["connected"] is True and r, 15,
                           message="the typed robot connected")
        doc = requests.post(base, json=scan("T"), timeout=10).json()
        term.wait_for(re.escape(doc["task_id"]) + ".*(completed|已完成)")
    finally:
        out = term.stop() if term is not None else ""
        sim.kill()
        sim.wait(10)
    assert term.proc.returncode == 0, out
    assert robot["port"] == url and robot["firmware"], robot
