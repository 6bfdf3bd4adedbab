"""The console in Chinese and English: the guide's banner and menus line for line, the
language chosen from --lang, ROBOT_LANG and the system (LANG...), the CLI in Chinese, and
the language helpers of i18n. main.py runs as a real subprocess, as an operator runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

import i18n
from tests.conftest import ROOT, wait_until
from tests.proc import end, scan

# The guide's console output, verbatim (docs: 第1步：启动服务器（队列模式）); the port and
# the machine's address are this run's.
GUIDE_QUEUE_BANNER = [
    "✓ 任务队列模式已启用",
    "  - 多个命令会排队执行",
    "  - 每个命令执行完成后才会执行下一个",
    "",
    "✓ HTTP服务器已启动",
    "监听地址: 0.0.0.0:{port} (所有网络接口)",
    "本机IP: {ip}",
    "模式: 队列模式",
]
IP = re.compile(r"^本机IP: \d{1,3}(\.\d{1,3}){3}$")
LANG_VARS = ("LANG", "LC_ALL", "LC_MESSAGES", "LANGUAGE", "ROBOT_LANG", "PYTHONIOENCODING")


def clean_env(**given: str) -> dict[str, str]:
    """This process's environment without any language setting, plus ``given``."""
    env = {k: v for k, v in os.environ.items()
           if k not in LANG_VARS and k not in ("ROBOT_API_TOKEN", "ROBOT_SERVER_URL")}
    return {"PYTHONIOENCODING": "utf-8", **env, **given}


def main_py(*args: str, env: dict[str, str], stdin: str = "",
            timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout,
                          env=env)


LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


class Served:
    """`main.py` serving in a subprocess; its output (stdout and stderr) read as it comes."""

    def __init__(self, *args: str, env: dict[str, str], stdin: str | None = None,
                 encoding: str = "utf-8") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "main.py", *args], cwd=ROOT, env=env,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        # strict: a character the console cannot take would fail here, not show as "?"
        self.reader = threading.Thread(
            target=lambda: self.lines.extend(
                raw.decode(encoding).rstrip("\r\n") for raw in iter(self.proc.stdout.readline,
                                                                     b"")), daemon=True)
        self.reader.start()
        if stdin is not None:
            self.proc.stdin.write(stdin.encode(encoding))
            self.proc.stdin.close()

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match:
        found = re.compile(pattern, re.M)

        def seen() -> re.Match | None:
            match = found.search("\n".join(self.lines))
            if match is None and self.proc.poll() is not None:
                self.reader.join(5)
                match = found.search("\n".join(self.lines))
                if match is None:
                    raise AssertionError(f"main.py exited: {self.text()}")
            return match
        try:
            return wait_until(seen, timeout, 0.05, f"output matching {pattern!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; output so far:\n{self.text()}") from None

    def text(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> str:
        end(self.proc)
        self.reader.join(10)
        return self.text()


def serve(tmp_path, *flags: str, env: dict[str, str] | None = None,
          encoding: str = "utf-8") -> Served:
    return Served("serve", "--robot", "sim", "--sim-speed", "200", "--port", "0",
                  "--db", str(tmp_path / "tasks.db"), *flags, env=env or clean_env(),
                  encoding=encoding)


def block_after(lines: list[str], first: str, count: int) -> list[str]:
    assert first in lines, "\n".join(lines)
    start = lines.index(first)
    return lines[start:start + count]


# -- the banner ------------------------------------------------------------------------------
def test_queue_mode_banner_in_chinese_is_the_guides(tmp_path) -> None:
    server = serve(tmp_path, "--mode", "queue", "--host", "0.0.0.0", "--lang", "zh")
    try:
        port = server.wait_for(r"^监听地址: 0\.0\.0\.0:(\d+) ").group(1)
        server.wait_for(r"^模式: ")
        health = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert health.status_code == 200
    finally:
        out = server.stop()
    assert server.proc.returncode == 0, out
    lines = out.splitlines()
    shown = block_after(lines, GUIDE_QUEUE_BANNER[0], len(GUIDE_QUEUE_BANNER))
    expected = [line.format(port=port, ip="") for line in GUIDE_QUEUE_BANNER]
    assert shown[:6] == expected[:6] and shown[7] == expected[7], shown
    assert IP.match(shown[6]), shown[6]
    # Our lines after the guide's, in Chinese too.
    assert any(line.startswith("机器人端口: ") and line.endswith(" (内置模拟器)")
               for line in lines), out
    assert "机器人协议: json" in lines
    assert f"任务数据库: {tmp_path / 'tasks.db'}" in lines
    assert any(line.startswith("! 未设置API令牌: ") for line in lines), out  # 0.0.0.0, no token
    assert lines[-1] == "服务器已停止。"
    assert "Queue mode" not in out and "Server stopped" not in out


def test_sync_mode_banner_in_chinese(tmp_path) -> None:
    server = serve(tmp_path, "--mode", "sync", "--host", "127.0.0.1", "--lang", "zh")
    try:
        port = server.wait_for(r"^监听地址: 127\.0\.0\.1:(\d+)$").group(1)
        server.wait_for(r"^模式: ")
        assert requests.get(f"http://127.0.0.1:{port}", timeout=5).json()["mode"] == "sync"
    finally:
        out = server.stop()
    lines = out.splitlines()
    shown = block_after(lines, "✓ 同步模式已启用", 8)
    assert all(line.startswith("  - ") and re.search("[\u4e00-\u9fff]", line)
               for line in shown[1:3]), shown
    assert shown[3:6] == ["", "✓ HTTP服务器已启动", f"监听地址: 127.0.0.1:{port}"], shown
    assert IP.match(shown[6]) and shown[7] == "模式: 同步模式", shown
    assert "未设置API令牌" not in out  # loopback only: no warning, as in English


def test_english_banner_is_unchanged(tmp_path) -> None:
    server = serve(tmp_path, "--mode", "queue", "--host", "127.0.0.1", "--lang", "en",
                   env=clean_env(LANG="zh_CN.UTF-8"))
    try:
        port = server.wait_for(r"^Listening on: 127\.0\.0\.1:(\d+)$").group(1)
        server.wait_for(r"^Mode: ")
    finally:
        out = server.stop()
    shown = block_after(out.splitlines(), "✓ Queue mode enabled", 8)
    assert shown[1:6] == ["  - commands are queued and run one after another",
                          "  - POST / returns a task_id at once; ask GET /task/<task_id>", "",
                          "✓ HTTP server started", f"Listening on: 127.0.0.1:{port}"]
    assert shown[6].startswith("LAN IP: ") and shown[7] == "Mode: queue mode"
    assert out.splitlines()[-1] == "Server stopped."
    assert not re.search("[\u4e00-\u9fff]", out)


def test_a_gbk_console_gets_chinese_with_ok_for_the_check_mark(tmp_path) -> None:
    """GBK (a Chinese Windows code page) has the Chinese but not ✓: OK stands in."""
    server = serve(tmp_path, "--mode", "queue", "--host", "127.0.0.1", "--lang", "zh",
                   env=clean_env(PYTHONIOENCODING="gbk"), encoding="gbk")
    try:
        server.wait_for(r"^模式: 队列模式$")
    finally:
        out = server.stop()
    assert "OK 任务队列模式已启用" in out.splitlines()
    assert "OK HTTP服务器已启动" in out.splitlines() and "?" not in out


def test_a_console_without_chinese_falls_back_to_english_with_one_warning() -> None:
    out = main_py("--lang", "zh", "--robot", "sim", env=clean_env(PYTHONIOENCODING="ascii"))
    assert out.returncode == 2
    assert "Robot task server\n  1) HTTP server mode" in out.stdout and "?" not in out.stdout
    assert out.stderr.count("cannot show language 'zh'") == 1, out.stderr
    assert "No answer (end of input)" in out.stderr


def test_shutdown_messages_in_chinese(tmp_path) -> None:
    server = Served("serve", "--mode", "queue", "--host", "127.0.0.1", "--port", "0",
                    "--robot", "sim", "--sim-speed", "2", "--shutdown-grace", "30",
                    "--db", str(tmp_path / "s.db"), "--lang", "zh", env=clean_env())
    try:
        url = "http://127.0.0.1:" + server.wait_for(r"^监听地址: 127\.0\.0\.1:(\d+)$").group(1)
        task_id = requests.post(url, json=scan("S", list(range(1, 30))), timeout=10) \
            .json()["task_id"]
        wait_until(lambda: requests.get(f"{url}/task/{task_id}", timeout=5).json()["status"]
                   == "running", 10, message="running")
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(rf"^正在停止: 任务 {task_id} 最多还可执行 30 秒，之后将被停止"
                        r"（再按一次 Ctrl\+C 立即停止）。$")
        server.proc.send_signal(signal.SIGTERM)  # the operator does not want to wait
        server.wait_for(r"^再次收到停止信号: 立即向机器人发送 STOP。$")
        # It exits by itself; stop() would otherwise send a third signal while it does.
        server.proc.wait(30)
    finally:
        out = server.stop()
    assert server.proc.returncode == 0, out
    # Log records (English, from the logging thread) may still flush after it at exit.
    console = [line for line in out.splitlines() if not LOG_RECORD.match(line)]
    assert console[-1] == "服务器已停止。", out


def test_windows_pause_prompt_in_chinese() -> None:
    from console import terminal as console

    asked: list[str] = []
    console.pause_before_exit(1, interactive=True, windows=True, read=asked.append, lang="zh")
    assert asked == ["\n按回车键关闭此窗口。"]


# -- the menus -------------------------------------------------------------------------------
def test_chinese_menus_through_stdin(tmp_path) -> None:
    server = Served("--lang", "zh", "--host", "127.0.0.1", "--port", "0", "--robot", "sim",
                    "--sim-speed", "200", "--db", str(tmp_path / "m.db"),
                    env=clean_env(), stdin="7\n1\nx\n2\n")  # bad answers are asked again
    try:
        port = server.wait_for(r"监听地址: 127\.0\.0\.1:(\d+)$").group(1)
        server.wait_for(r"^模式: ")
        assert requests.get(f"http://127.0.0.1:{port}", timeout=5).json()["mode"] == "queue"
    finally:
        out = server.stop()
    assert server.proc.returncode == 0, out
    lines = out.splitlines()
    assert lines[:3] == ["机器人任务服务器", "  1) HTTP服务器模式",
                         "  2) 本地模式（运行一个命令文件）"]
    # input() prompts end no line: the next output follows on the same one.
    assert lines[3] == "选择模式 [1/2]: 请输入以下选项之一: 1, 2"
    assert lines[4] == "选择模式 [1/2]: 执行模式"
    assert lines[5].startswith("  1) 同步模式：") and lines[6].startswith("  2) 队列模式（推荐）：")
    assert lines[7] == "选择执行模式 [1/2]: 请输入以下选项之一: 1, 2"
    assert lines[8].startswith("选择执行模式 [1/2]: ")  # then log lines, then the banner
    assert "✓ 任务队列模式已启用" in lines and "模式: 队列模式" in lines
    assert "Please type one of" not in out


def test_chinese_end_of_input_and_command_file_prompt() -> None:
    out = main_py("--lang", "zh", env=clean_env())
    assert out.returncode == 2
    assert out.stderr == "\n没有输入（输入已结束）。不经菜单直接启动，请用:\n" \
                         "  python main.py serve --mode queue\n"
    out = main_py("--lang", "zh", "--robot", "sim", env=clean_env(), stdin="2\n")
    assert out.returncode == 2
    assert out.stdout.endswith("选择模式 [1/2]: 命令文件 [SCAN_QR_CODE_command.json]: ")
    assert "没有输入（输入已结束）。请用: python main.py run FILE.json" in out.stderr


# -- which language --------------------------------------------------------------------------
@pytest.mark.parametrize("env, args, chinese", [
    ({"LANG": "zh_CN.UTF-8"}, (), True),
    ({"LANG": "C", "ROBOT_LANG": "zh"}, (), True),
    ({"LANG": "zh_CN.UTF-8"}, ("--lang", "en"), False),
    ({"LANG": "C.UTF-8", "ROBOT_LANG": "zh"}, ("--lang", "en"), False),
    ({"LANG": "C"}, (), False),
    ({"LANG": "zh_CN.UTF-8", "LC_ALL": "C"}, (), False),  # POSIX: LC_ALL decides
    ({"LANG": "en_US.UTF-8", "LC_MESSAGES": "zh_CN.UTF-8"}, (), True),
    ({}, (), False),
])
def test_language_from_flag_environment_and_system(env, args, chinese) -> None:
    out = main_py(*args, "--robot", "sim", env=clean_env(**env))
    assert out.returncode == 2
    if chinese:
        assert out.stdout.startswith("机器人任务服务器\n  1) HTTP服务器模式\n"), out.stdout
        assert "没有输入" in out.stderr
    else:
        assert out.stdout.startswith("Robot task server\n  1) HTTP server mode\n"), out.stdout
        assert "No answer (end of input)" in out.stderr


def test_help_in_chinese_names_the_lang_flag() -> None:
    out = main_py("--help", env=clean_env(LANG="zh_CN.UTF-8"))
    assert out.returncode == 0
    assert "串口实验室机器人的 HTTP 任务服务器。" in out.stdout and "--lang {en,zh}" in out.stdout
    assert "启动 HTTP 服务器（不显示菜单）" in out.stdout
    out = main_py("serve", "--help", "--lang", "en", env=clean_env(LANG="zh_CN.UTF-8"))
    assert "language of menus, banner and messages" in out.stdout
    assert not re.search("[\u4e00-\u9fff]", out.stdout)


def test_ports_and_a_bad_start_in_chinese(tmp_path) -> None:
    out = main_py("ports", "--lang", "zh", env=clean_env())
    assert out.returncode == 0 and "Traceback" not in out.stderr
    if "\t" not in out.stdout:  # this machine has no serial ports
        assert out.stdout == "未找到串口。可用 --robot sim 使用内置模拟器。\n"
    out = main_py("serve", "--mode", "queue", "--lang", "zh", "--sim-speed", "0",
                  "--db", str(tmp_path / "z.db"), env=clean_env())
    assert out.returncode == 2 and out.stderr.strip() == "--sim-speed 必须大于 0"
    out = main_py("run", str(tmp_path / "missing.json"), "--lang", "zh", env=clean_env())
    assert out.returncode == 2 and out.stderr.startswith(f"无法使用 {tmp_path / 'missing.json'}: ")


# -- the CLI ---------------------------------------------------------------------------------
def test_cli_submit_and_status_in_chinese(server, scan_file) -> None:
    env = clean_env(ROBOT_SERVER_URL=server.url)
    out = main_py("submit", scan_file, "--wait", "--timeout", "30", "--lang", "zh", env=env)
    assert out.returncode == 0, out.stderr
    task = json.loads(out.stdout)  # JSON stays JSON: keys and statuses untranslated
    task_id = task["task_id"]
    assert task["status"] == "completed" and task["result"]["message"] == "SCAN_QRCODE完成"
    err = out.stderr.splitlines()
    assert err[0] == f"已加入队列: 任务 {task_id}"
    assert any(re.search(r"\] 100\.0% 3/3 已完成", line) for line in err), err  # progress
    assert re.fullmatch(rf"任务 {task_id} 已完成，用时 \d+\.\d\d 秒: SCAN_QRCODE完成", err[-1])

    out = main_py("--lang", "zh", "status", task_id, env=env)  # --lang before the command
    assert out.returncode == 0
    assert out.stdout.splitlines()[0] == f"任务 {task_id}: 已完成 (SCAN_QRCODE)"
    assert "  进度 3/3" in out.stdout and "  结果 {" in out.stdout
    out = main_py("status", env=clean_env(ROBOT_SERVER_URL=server.url, ROBOT_LANG="zh"))
    assert out.stdout.splitlines()[:2] == [
        "队列运行中: 0 个任务等待中，当前执行: 无",
        "任务: 共 1 个，已完成 1 个，失败 0 个，已取消 0 个"]
    out = main_py("tasks", "--lang", "zh", env=env)
    assert f"{task_id}  已完成" in out.stdout and "（共 1 个，显示 1 个）" in out.stdout
    out = main_py("status", "--json", "--lang", "zh", env=env)
    assert json.loads(out.stdout)["completed_tasks"] == 1


def test_cli_shows_the_servers_message_in_its_language_and_the_code(server, tmp_path) -> None:
    env = clean_env(ROBOT_SERVER_URL=server.url)
    zh = requests.get(server.url + "/task/nope", headers={"Accept-Language": "zh"}, timeout=5)
    reply = zh.json()
    out = main_py("status", "nope", "--lang", "zh", env=env)
    assert out.returncode == 6
    assert out.stderr.strip() == f"服务器拒绝了请求: {reply['message']} " \
                                 f"(HTTP 404, {reply['code']})"
    bad = tmp_path / "bad.json"
    bad.write_text('{"cmd_type": "DANCE"}', encoding="utf-8")
    out = main_py("submit", str(bad), "--lang", "zh", env=env)
    assert out.returncode == 2 and out.stderr.startswith("未加入队列: ")
    assert "DANCE" in out.stderr and "(HTTP 422, " in out.stderr
    out = main_py("submit", str(bad), "--lang", "en", env=env)
    assert out.stderr.startswith("not queued: ") and "(HTTP 422, " in out.stderr


def test_a_chinese_client_waits_through_the_servers_long_poll_clamp(make_server) -> None:
    """The server clamps ?wait= to its max_wait and says so in a field (timed_out), not
    in text: a client asking in Chinese keeps long-polling until the task is final."""
    from client.api import LONG_POLL_S
    from client.cli import LocalizedClient
    from tests.conftest import SCAN

    server = make_server(max_wait=0.5)
    client = LocalizedClient(server.url, lang="zh")
    client.pause()  # pending until resumed: the first long-poll must time out
    task_id = client.submit(SCAN)["task_id"]
    started = time.monotonic()
    r = requests.get(f"{server.url}/task/{task_id}", params={"wait": 30},
                     headers={"Accept-Language": "zh"}, timeout=10)
    assert r.status_code == 200 and r.json()["timed_out"] is True
    assert time.monotonic() - started < 5
    client.resume()
    assert client.wait(task_id, timeout=20)["status"] == "completed"
    assert client.long_poll is True and client.max_wait == LONG_POLL_S


def test_cli_check_in_chinese(tmp_path) -> None:
    out = main_py("check", "--lang", "zh", "--robot", "sim", "--sim-speed", "200",
                  "--host", "127.0.0.1", "--port", "70000", "--db", str(tmp_path / "c.db"),
                  env=clean_env())
    assert out.returncode == 1
    assert out.stderr == "检查未通过: 端口: '70000' 不是有效的端口号 (1-65535)\n"


# -- i18n: normalize, choose_language, negotiate ------------------------------------------------
@pytest.mark.parametrize("tag, lang", [
    ("zh_CN.UTF-8", "zh"), ("zh-Hans-CN", "zh"), ("zh_TW", "zh"), (" ZH ", "zh"),
    ("Chinese (Simplified)_China.936", "zh"), ("Chinese_China.936", "zh"),
    ("en_US.UTF-8", "en"), ("en-GB", "en"), ("EN", "en"),
    ("C", None), ("POSIX", None), ("C.UTF-8", None), ("fr_FR.UTF-8", None), ("*", None),
    ("", None), (None, None),
])
def test_normalize(tag, lang) -> None:
    assert i18n.normalize(tag) == lang


def test_choose_language_order() -> None:
    choose = i18n.choose_language
    assert choose("en", {"ROBOT_LANG": "zh", "LANG": "zh_CN.UTF-8"}, windows=False) == "en"
    assert choose(None, {"ROBOT_LANG": "zh", "LANG": "en_US.UTF-8"}, windows=False) == "zh"
    assert choose(None, {"ROBOT_LANG": "fr", "LANG": "zh_CN.UTF-8"}, windows=False) == "zh"
    assert choose(None, {"LC_ALL": "zh_CN.UTF-8", "LANG": "en_US"}, windows=False) == "zh"
    assert choose(None, {"LC_ALL": "C", "LANG": "zh_CN.UTF-8"}, windows=False) == "en"
    assert choose(None, {"LC_ALL": "", "LC_MESSAGES": "zh_CN", "LANG": "en"},
                  windows=False) == "zh"
    assert choose(None, {"LANG": "fr_FR.UTF-8"}, windows=False) == "en"
    assert choose(None, {}, windows=False) == "en"
    # constants.LANG: below the flag and ROBOT_LANG, above the system's language.
    assert choose(None, {"LANG": "en_US.UTF-8"}, windows=False, configured="zh") == "zh"
    assert choose(None, {"ROBOT_LANG": "en"}, windows=False, configured="zh") == "en"
    assert choose("en", {}, windows=False, configured="zh") == "en"


def test_windows_takes_the_users_ui_language(monkeypatch) -> None:
    monkeypatch.setattr(i18n, "_windows_ui_language", lambda: "zh_CN")
    assert i18n.choose_language(None, {}, windows=True) == "zh"
    assert i18n.choose_language(None, {"LANG": "en_US"}, windows=True) == "en"  # e.g. Git Bash
    monkeypatch.setattr(i18n, "_windows_ui_language", lambda: None)
    assert i18n.choose_language(None, {}, windows=True) == "en"


@pytest.mark.parametrize("header, lang", [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
    ("fr-FR,fr;q=0.9,zh;q=0.5", "zh"),
    ("en;q=0.5, zh;q=0.8", "zh"),
    ("zh;q=0, en;q=0.1", "en"),  # q=0: not acceptable
    ("zh;q=2, en;q=0.1", "en"),  # out of range: ignored
    ("zh;q=x, en;q=0.1", "en"),
    ("en, zh", "en"),  # a tie: the first named
    ("fr", "de-fault"), ("*", "de-fault"), ("", "de-fault"), (None, "de-fault"),
])
def test_negotiate(header, lang) -> None:
    assert i18n.negotiate(header, "de-fault") == lang
