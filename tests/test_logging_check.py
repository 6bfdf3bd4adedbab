"""Operations: the log file of a served task's life, and `main.py check`."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SCAN, wait_until
from tests.proc import ServerProcess, free_port
from tests.test_client_cli import _main_has_client_commands


def test_log_file_has_the_tasks_life_and_access_lines(tmp_path) -> None:
    log_file = tmp_path / "server.log"
    server = ServerProcess(str(tmp_path / "tasks.db"), "sim", "--sim-speed", "200",
                           "--log-file", str(log_file))
    try:
        server.wait_ready()
        r = server.post("/", SCAN)
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        assert server.wait_final(task_id)["status"] == "completed"

        def lines() -> list[str]:
            return log_file.read_text(encoding="utf-8").splitlines()

        completed = re.compile(rf"task {task_id} SCAN_QRCODE completed in (\d+\.\d+) s")
        polled = f'"GET /task/{task_id}?wait=5 HTTP/1.1" 200'
        # The access line is written just after the reply is sent: wait for it too.
        wait_until(lambda: any(completed.search(line) for line in lines())
                   and any(polled in line for line in lines()), 10,
                   message="the completed and access lines in the log file")
        text = lines()
    finally:
        server.stop()
    mine = [line for line in text if f"task {task_id} " in line]
    assert any(f"task {task_id} SCAN_QRCODE pending" in line for line in mine), mine
    assert any(f"task {task_id} SCAN_QRCODE running" in line for line in mine), mine
    duration = next(float(m.group(1)) for line in mine if (m := completed.search(line)))
    assert 0 < duration < 30
    # The submit's "pending" is its access line's note, logged as the 202 is sent, while
    # the worker may already be starting the task: running, then completed, is an order.
    assert any('"POST / HTTP/1.1" 202' in line and line.endswith(" pending") for line in mine)
    order = [next(i for i, line in enumerate(mine) if f" {word}" in line)
             for word in ("running", "completed in")]
    assert order == sorted(order)
    # Every line carries a time stamp and a level.
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ", line) for line in mine)
    access = [line for line in text if "server.access" in line]
    assert any('"POST / HTTP/1.1" 202' in line for line in access), access
    assert any(polled in line for line in access), access


# -- main.py check -------------------------------------------------------------------------
needs_check = pytest.mark.skipif(
    not _main_has_client_commands(),
    reason="main.py does not have the check subcommand yet (the lead's check wiring patch "
           "is not applied)")


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", "check", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@needs_check
def test_check_passes_with_the_simulator(tmp_path) -> None:
    out = check("--robot", "sim", "--sim-speed", "200", "--db", str(tmp_path / "d" / "t.db"),
                "--host", "127.0.0.1", "--port", str(free_port()))
    assert out.returncode == 0, out.stderr
    assert "answers PING (protocol json, firmware robot-sim" in out.stdout
    assert "configuration OK" in out.stdout and out.stderr == ""
    assert not (tmp_path / "d").exists()  # a check creates nothing


@needs_check
def test_check_accepts_an_existing_task_database(tmp_path, make_server) -> None:
    server = make_server(db=str(tmp_path / "t.db"))
    server.stop()
    out = check("--robot", "sim", "--db", str(tmp_path / "t.db"), "--host", "127.0.0.1",
                "--port", str(free_port()))
    assert out.returncode == 0, out.stderr
    assert "is a task database" in out.stdout


@pytest.mark.parametrize("args, reason", [
    (["--robot", "/dev/does-not-exist"], "robot: cannot open /dev/does-not-exist"),
    (["--port", "70000"], "port: '70000' is not a port number"),
    (["--port", "eighty"], "port: 'eighty' is not a port number"),
    (["--db", "{tmp}/not-a-db"], "not-a-db: not a usable task database"),
    (["--db", "{tmp}"], "is a directory"),
])
@needs_check
def test_check_fails_with_one_clear_line(tmp_path, args, reason) -> None:
    (tmp_path / "not-a-db").write_text("hello\n" * 200, encoding="utf-8")
    defaults = {"--robot": "sim", "--db": str(tmp_path / "ok.db"), "--host": "127.0.0.1",
                "--port": str(free_port())}
    given = dict(zip(args[::2], [a.format(tmp=tmp_path) for a in args[1::2]], strict=True))
    flat = [x for k, v in {**defaults, **given}.items() for x in (k, v)]
    out = check(*flat, "--sim-speed", "200")
    assert out.returncode == 1
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith("check failed: ") and reason in out.stderr, out.stderr


@needs_check
def test_check_fails_when_the_port_is_taken(tmp_path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        out = check("--robot", "sim", "--db", str(tmp_path / "t.db"), "--host", "127.0.0.1",
                    "--port", str(s.getsockname()[1]))
    assert out.returncode == 1 and "already in use" in out.stderr
    assert len(out.stderr.splitlines()) == 1


@pytest.mark.parametrize("args, reason", [
    (["--robot", "/dev/does-not-exist"], "/dev/does-not-exist"),
    (["--port", "70000"], "'70000'"),
    (["--db", "{tmp}"], "是目录"),
    (["--db", "{tmp}/a-file/t.db"], "是文件"),
    (["--commands", "{tmp}/missing.json"], "文件或目录不存在"),
    (["--host", "198.51.100.250"], "本机没有这个地址"),  # TEST-NET-2: no PC has it
])
@needs_check
def test_check_fails_in_chinese_with_no_english_word(tmp_path, args, reason) -> None:
    from tests.test_i18n_zh_only import english_words

    (tmp_path / "a-file").write_text("", encoding="utf-8")
    defaults = {"--robot": "sim", "--db": str(tmp_path / "ok.db"), "--host": "127.0.0.1",
                "--port": str(free_port())}
    given = dict(zip(args[::2], [a.format(tmp=tmp_path) for a in args[1::2]], strict=True))
    flat = [x for k, v in {**defaults, **given}.items() for x in (k, v)]
    out = check(*flat, "--sim-speed", "200", "--lang", "zh")
    assert out.returncode == 1, out.stdout + out.stderr
    line, = out.stderr.splitlines()
    assert line.startswith("检查未通过: ") and reason in line, line
    assert english_words(line) == [], line
    assert all(english_words(passed) == [] for passed in out.stdout.splitlines()), out.stdout
