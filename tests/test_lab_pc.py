"""The lab PC: consoles that cannot encode, every way to stop, one server per database,
paths independent of the working directory, Windows port errors.

Windows itself is not available here: its branches (the console control handler, the
COM port messages) are exercised by calling the small functions they sit behind.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import requests
import serial

import main
from console import terminal as console
from robot import list_ports
from robot.link.outcome import describe_open_error
from tasks.store.instance_lock import InstanceLock, InstanceLockHeld
from tests.conftest import ROOT, wait_until
from tests.proc import ServerProcess, free_port, scan, sigterm, wait_healthy


# -- consoles ------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["gbk", "ascii"])
def test_server_survives_a_console_that_cannot_encode(tmp_path, encoding) -> None:
    """stdout redirected to a file in GBK (a Chinese Windows code page) or ASCII: the
    banner and everything after it must print without killing the server."""
    port = free_port()
    out_path = tmp_path / "out.txt"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "main.py"), "serve", "--mode", "queue",
             "--host", "127.0.0.1", "--port", str(port), "--sim-speed", "200",
             "--db", "rel.db"],  # relative: to the working directory
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONIOENCODING": encoding})
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc)
            task_id = requests.post(url, json=scan("中"), timeout=10).json()["task_id"]
            doc = wait_until(lambda: (d := requests.get(f"{url}/task/{task_id}", timeout=10)
                                      .json())["status"] == "completed" and d, 20,
                             message="task completed")
            assert doc["result"]["scanned_bottles"][0]["rack"] == "中"
            assert requests.get(url + "/health", timeout=5).status_code == 200
        finally:
            sigterm(proc)
    assert proc.returncode == 0
    text = out_path.read_bytes().decode(encoding, errors="strict")
    assert "Queue mode enabled" in text and "HTTP server started" in text
    assert "Server stopped." in text and "Traceback" not in text
    assert f"Task database: {tmp_path / 'rel.db'}" in text
    assert (tmp_path / "rel.db").exists()


def test_can_encode_follows_the_stream() -> None:
    class Stream:
        def __init__(self, encoding: str) -> None:
            self.encoding = encoding

    assert console.can_encode("✓", Stream("utf-8"))  # type: ignore[arg-type]
    assert not console.can_encode("✓", Stream("gbk"))  # type: ignore[arg-type]
    assert console.can_encode("任务已加入队列", Stream("gbk"))  # type: ignore[arg-type]


# -- stopping ------------------------------------------------------------------------------
def test_console_close_event_stops_now_and_holds_until_shutdown_finished() -> None:
    finished = threading.Event()
    calls: list[float] = []

    def request_stop() -> None:
        calls.append(time.monotonic())
        threading.Timer(0.2, finished.set).start()  # the shutdown path, elsewhere

    handler = console.console_close_handler(request_stop, finished, wait_s=10)
    # Ctrl+C and Ctrl+Break belong to the signal handlers.
    assert handler(console.CTRL_C_EVENT) is False
    assert handler(console.CTRL_BREAK_EVENT) is False
    assert calls == []
    t0 = time.monotonic()
    assert handler(console.CTRL_CLOSE_EVENT) is True
    assert len(calls) == 1 and finished.is_set()
    assert time.monotonic() - t0 < 5  # returned when the shutdown finished, not at 10 s


def test_console_close_handler_gives_up_before_windows_kills_the_process() -> None:
    finished = threading.Event()  # a shutdown that never finishes
    handler = console.console_close_handler(lambda: None, finished, wait_s=0.3)
    t0 = time.monotonic()
    assert handler(console.CTRL_SHUTDOWN_EVENT) is True
    assert 0.25 <= time.monotonic() - t0 < 3
    assert console.CLOSE_WAIT_S < 5  # Windows ends the process about 5 s after the event


def test_shutdown_signals_per_platform(monkeypatch) -> None:
    class Windows:  # the signal module's names on Windows
        SIGINT, SIGTERM, SIGBREAK = 2, 15, 21

    assert console.shutdown_signals(Windows) == [2, 15, 21]
    assert console.shutdown_signals(signal) == [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        assert signal.SIGHUP not in console.shutdown_signals(signal)
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_closing_the_terminal_sigHUP_takes_the_shutdown_path(tmp_path) -> None:
    server = ServerProcess(str(tmp_path / "h.db"), "sim", "--sim-speed", "20",
                           "--shutdown-grace", "1")
    try:
        server.wait_ready()
        task_id = server.post("/", scan("H", list(range(1, 30)))).json()["task_id"]
        wait_until(lambda: server.task(task_id)["status"] == "running", 10, message="running")
        server.proc.send_signal(signal.SIGHUP)
        out, _ = server.proc.communicate(timeout=30)
        assert server.proc.returncode == 0, out
        assert "Server stopped." in out
    finally:
        server.stop()
    # The running task was stopped through the normal path and recorded, not abandoned.
    with sqlite3.connect(str(tmp_path / "h.db")) as db:
        status, result = db.execute("SELECT status, result FROM tasks WHERE task_id = ?",
                                    (task_id,)).fetchone()
    assert status == "failed" and "shut" in result.lower()


def test_pause_before_exit_only_for_a_failed_interactive_start_on_windows() -> None:
    asked: list[str] = []

    def read(prompt: str) -> str:
        asked.append(prompt)
        return ""

    console.pause_before_exit(1, interactive=True, windows=False, read=read)
    console.pause_before_exit(0, interactive=True, windows=True, read=read)
    console.pause_before_exit(1, interactive=False, windows=True, read=read)
    assert asked == []
    console.pause_before_exit(1, interactive=True, windows=True, read=read)
    assert len(asked) == 1 and "Enter" in asked[0]

    def closed(prompt: str) -> str:
        raise EOFError

    console.pause_before_exit(1, interactive=True, windows=True, read=closed)  # no raise


# -- one server per database ---------------------------------------------------------------
def test_second_server_on_the_same_database_is_refused_and_changes_nothing(tmp_path) -> None:
    db = str(tmp_path / "one.db")
    first = ServerProcess(db, "sim", "--sim-speed", "20")  # one bottle per second
    try:
        first.wait_ready()
        task_id = first.post("/", scan("L", [1, 2, 3, 4])).json()["task_id"]
        wait_until(lambda: first.task(task_id)["status"] == "running", 10, message="running")
        second = subprocess.run(
            [sys.executable, "main.py", "serve", "--mode", "queue", "--host", "127.0.0.1",
             "--port", str(free_port()), "--db", db, "--sim-speed", "200"],
            cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert os.path.abspath(db) in lines[0] and "in use by another server" in lines[0]
        assert f"process {first.proc.pid}" in lines[0]
        assert first.task(task_id)["status"] == "running"  # not failed by a recovery
        assert first.wait_final(task_id)["status"] == "completed"
    finally:
        first.terminate()
        first.stop()
    with sqlite3.connect(db) as conn:
        (status,) = conn.execute("SELECT status FROM tasks WHERE task_id = ?",
                                 (task_id,)).fetchone()
    assert status == "completed"


def test_in_process_second_server_refused(make_server, tmp_path) -> None:
    db = str(tmp_path / "same.db")
    server = make_server(db=db)
    with pytest.raises(InstanceLockHeld, match="in use by another server"):
        make_server(db=db)
    assert requests.get(server.url + "/health", timeout=5).status_code == 200


_HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from tasks.store.instance_lock import InstanceLock
InstanceLock({db!r}).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_stale_lock_from_a_killed_process_is_taken_over(tmp_path) -> None:
    db = str(tmp_path / "stale.db")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER.format(root=ROOT, db=db)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(InstanceLockHeld) as held:
            InstanceLock(db).acquire()
        assert held.value.pid == holder.pid
    finally:
        holder.kill()
        holder.wait(10)
    assert os.path.exists(db + ".lock")  # the file stays; the kernel freed the lock
    lock = InstanceLock(db)
    lock.acquire()
    try:
        with open(db + ".lock", encoding="ascii") as fh:
            assert fh.read().strip() == str(os.getpid())
    finally:
        lock.release()


# -- paths ---------------------------------------------------------------------------------
def test_default_database_is_in_the_project_folder_whatever_the_cwd(tmp_path,
                                                                    monkeypatch) -> None:
    expected = os.path.join(ROOT, "data", "tasks.db")
    assert main.db_path(None, "data/tasks.db") == expected
    monkeypatch.chdir(tmp_path)
    assert main.db_path(None, "data/tasks.db") == expected
    assert main.db_path("mine.db", "data/tasks.db") == str(tmp_path / "mine.db")


def test_check_from_another_directory_names_the_project_database(tmp_path) -> None:
    out = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), "check",
                          "--host", "127.0.0.1", "--port", str(free_port()),
                          "--sim-speed", "200", "--sim-transport", "tcp"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert os.path.join(ROOT, "data", "tasks.db") in out.stdout
    assert "built-in simulator (socket://127.0.0.1:" in out.stdout
    assert not (tmp_path / "data").exists()


# -- COM ports -----------------------------------------------------------------------------
def test_windows_access_denied_is_a_busy_port() -> None:
    # pyserial's exact text on Windows when another program has the port open.
    exc = serial.SerialException(
        "could not open port 'COM3': PermissionError(13, 'Access is denied.', None, 5)")
    message = describe_open_error("COM3", exc)
    assert message.startswith("cannot open COM3: port is busy or not permitted")
    missing = serial.SerialException("could not open port 'COM9': FileNotFoundError(2, "
                                     "'The system cannot find the file specified.', None, 2)")
    assert "no such port" in describe_open_error("COM9", missing)


def test_ports_sort_naturally(monkeypatch) -> None:
    from serial.tools import list_ports as tools
    from serial.tools.list_ports_common import ListPortInfo

    ports = []
    for name in ("COM10", "COM3", "COM1"):
        info = ListPortInfo(name, skip_link_detection=True)
        info.description = f"USB Serial Device ({name})"
        ports.append(info)
    monkeypatch.setattr(tools, "comports", lambda: ports)
    assert [p["device"] for p in list_ports()] == ["COM1", "COM3", "COM10"]
    assert list_ports()[0]["description"] == "USB Serial Device (COM1)"


def test_json_replies_name_their_charset_for_windows_powershell(client) -> None:
    """Windows PowerShell 5.1 decodes a reply without a charset as ISO-8859-1: the
    guide's 任务已加入队列 would arrive garbled in Invoke-RestMethod."""
    r = client.post("/", {"cmd_type": "PING"})
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    assert r.content.decode("utf-8").count("任务已加入队列") == 1
    bad = client.post("/", {"cmd_type": "DANCE"})
    assert bad.status_code == 422
    assert bad.headers["Content-Type"] == "application/json; charset=utf-8"
