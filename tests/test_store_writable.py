"""Writable or refused: a task database that cannot be written stops start-up with one
line, and one that stops taking writes while the server runs turns /health to 503 and
shows on the dashboard, until it takes writes again.

Real mounts: a small tmpfs per test, remounted read-only or filled up to ENOSPC. Needs
root (mount); without it the tests are skipped. As root, file modes do not stop writes,
so a read-only mount is the only honest "cannot write".
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests import test_dashboard as base
from tests.conftest import ROOT, SCAN, Client, wait_until
from tests.proc import ServerProcess, free_port

# The browser fixtures of tests/test_dashboard.py (assigned, not imported, so that the
# test functions' parameters of the same name are what pytest fills in).
browser = base.browser
dashboard = base.dashboard
Dashboard = base.Dashboard
needs_browser = base.needs_browser
expect = base.expect

PROBE_S = 5.0  # server/app.py STORE_PROBE_INTERVAL_S
PAGE_POLL_S = 10.0  # server/static/app.js HEALTH_MS
BIG_SCAN = {"cmd_type": "SCAN_QRCODE", "params": {"rack": "A", "positions": list(range(1, 97))}}


# -- real mounts -------------------------------------------------------------------------
def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


class Disk:
    """A tmpfs mounted at ``path``; ``read_only()``, ``fill()`` and ``free()`` change it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.filler = os.path.join(path, "filler")

    def read_only(self) -> None:
        r = _run("mount", "-o", "remount,ro", self.path)
        assert r.returncode == 0, f"remount read-only failed: {r.stderr}"

    def fill(self) -> int:
        """Write a file until the disk is full (ENOSPC, down to the last byte)."""
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for chunk in (1 << 16, 4096, 512, 1):
                try:
                    while True:
                        written += os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)
        assert os.statvfs(self.path).f_bavail == 0
        return written

    def free(self) -> None:
        os.remove(self.filler)


@pytest.fixture
def disk(tmp_path: Any) -> Iterator[Disk]:
    if os.name != "posix" or shutil.which("mount") is None:
        pytest.skip("needs mount(8) (Linux)")
    path = str(tmp_path / "disk")
    os.mkdir(path)
    r = _run("mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", path)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield Disk(path)
    finally:
        if _run("umount", path).returncode != 0:
            _run("umount", "-l", path)  # something still holds it: detach it anyway


def _leave_wal(db: str) -> None:
    """A real task database whose server died: -wal and -shm left beside it."""
    server = ServerProcess(db, "sim", "--sim-speed", "200")
    try:
        server.wait_ready()
        r = server.post("/", SCAN)
        assert r.status_code == 202, r.text
        server.kill9()
    finally:
        server.stop()
    for suffix in ("-wal", "-shm", ".lock"):
        assert os.path.exists(db + suffix), suffix


def _start_refused(db: str) -> tuple[float, str]:
    server = ServerProcess(db, "sim", "--sim-speed", "200")
    started = time.monotonic()
    try:
        out, _ = server.proc.communicate(timeout=20)
    finally:
        server.stop()
    assert server.proc.returncode == 1, out
    return time.monotonic() - started, out


# -- a. read-only at start-up -------------------------------------------------------------
@pytest.mark.parametrize("fresh", [False, True], ids=["existing-db-with-wal", "new-db"])
def test_read_only_disk_stops_start_up_with_one_line(disk: Disk, fresh: bool) -> None:
    if fresh:  # the server would create the directory and the file: it cannot
        db = os.path.join(disk.path, "data", "tasks.db")
    else:
        db = os.path.join(disk.path, "tasks.db")
        _leave_wal(db)
    disk.read_only()
    took, out = _start_refused(db)
    assert took < 10, f"refusing took {took:.1f} s"
    assert "Traceback" not in out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    line = lines[0]
    assert line.startswith("Cannot start: ") and db in line, line
    assert "cannot be written" in line and "read-only file system" in line, line
    assert f"{disk.path} is on a read-only file system" in line, line


def test_store_open_names_the_read_only_file_system(disk: Disk) -> None:
    # The lock file is what fails first under `serve`; the store's own proof (a real write
    # transaction, WAL recovery included) must say the same when it is reached.
    from tasks.errors import StoreError
    from tasks.store import TaskStore

    db = os.path.join(disk.path, "tasks.db")
    _leave_wal(db)
    disk.read_only()
    store = TaskStore(db)
    with pytest.raises(StoreError) as refused:
        store.open()
    text = str(refused.value)
    assert text.startswith(f"{db}: the task database cannot be written"), text
    assert f"{disk.path} is on a read-only file system" in text and "\n" not in text


# -- d. `check` on the same disk -----------------------------------------------------------
def test_check_reports_the_read_only_file_system(disk: Disk) -> None:
    db = os.path.join(disk.path, "tasks.db")
    _leave_wal(db)
    disk.read_only()
    run = subprocess.run([sys.executable, "main.py", "check", "--port", str(free_port()),
                          "--db", db], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.strip() == (f"check failed: database: {db} is on a read-only file "
                                  f"system ({disk.path}): the server cannot write it")


# -- b. the disk fills up while the server runs -------------------------------------------
def _health(server: ServerProcess) -> tuple[int, dict[str, Any]]:
    r = server.get("/health", timeout=10)
    return r.status_code, r.json()


def test_full_disk_turns_health_503_until_space_is_freed(disk: Disk) -> None:
    db = os.path.join(disk.path, "tasks.db")
    server = ServerProcess(db, "sim", "--sim-speed", "200")
    try:
        server.wait_ready()
        status, body = _health(server)
        assert status == 200 and body["store"] == {"writable": True, "error": None}, body
        assert re.search(r"^robot_task_store_writable 1$", server.get("/metrics").text, re.M)

        disk.fill()
        filled = time.monotonic()
        # Nothing writes now: the probe alone must notice (within its interval).
        status, body = wait_until(lambda: (h := _health(server))[0] == 503 and h,
                                  PROBE_S + 3, 0.1, "/health 503 on a full disk")
        noticed = time.monotonic() - filled
        assert body["status"] == "down" and body["worker_alive"] is True, body
        assert body["store"]["writable"] is False
        assert "full" in body["store"]["error"], body
        assert body["robot"]["connected"] is True  # the other fields keep their meaning
        assert re.search(r"^robot_task_store_writable 0$", server.get("/metrics").text, re.M)

        # SQLite may still find room in the pages it holds: submit until it does not.
        refused = None
        for _ in range(50):
            r = server.post("/", BIG_SCAN)
            if r.status_code == 503:
                refused = r
                break
            assert r.status_code == 202, r.text
        assert refused is not None, "every submit was stored on a full disk"
        assert refused.json()["code"] == "not_accepted" and refused.headers["Retry-After"]
        assert _health(server)[0] == 503

        disk.free()
        freed = time.monotonic()
        status, body = wait_until(lambda: (h := _health(server))[0] == 200 and h,
                                  PROBE_S + 3, 0.1, "/health 200 after the disk was freed")
        recovered = time.monotonic() - freed
        assert body["status"] == "ok" and body["store"] == {"writable": True, "error": None}
        task_id = server.post("/", SCAN).json()["task_id"]
        assert server.wait_final(task_id)["status"] == "completed"
        print(f"\n/health 503 {noticed:.2f} s after the disk filled, "
              f"200 {recovered:.2f} s after it was freed")
    finally:
        server.stop()


def test_many_health_requests_share_one_probe(make_server: Callable[..., Any]) -> None:
    server = make_server()
    real, probes = server.store.probe_write, []

    def slow_probe() -> str | None:
        probes.append(time.monotonic())
        time.sleep(0.3)  # a slow disk: the other requests arrive while it writes
        return real()

    server.store.probe_write = slow_probe
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:  # one connection each: no shared Session
        replies = list(pool.map(lambda _: requests.get(server.url + "/health", timeout=10),
                                range(160)))
    took = time.monotonic() - started
    assert {r.status_code for r in replies} == {200}
    assert all(r.json()["store"] == {"writable": True, "error": None} for r in replies)
    assert 1 <= len(probes) <= 1 + int(took // PROBE_S), (len(probes), took)


# -- c. the dashboard says so ------------------------------------------------------------------
@needs_browser
def test_dashboard_shows_the_store_alert_while_the_disk_is_full(
        disk: Disk, make_server: Callable[..., Any],
        dashboard: Callable[..., Dashboard]) -> None:
    server = make_server(db=os.path.join(disk.path, "tasks.db"))
    client = Client(server)
    tab = dashboard(server)
    # The page's clock is Playwright's (time flows as usual): the test moves it on by the
    # page's health period instead of waiting that long. Moved on by PAGE_POLL_S and no
    # more, the page must have asked /health again.
    tab.page.clock.install()
    page = tab.open()
    alert = page.locator("#store-alert")
    expect(alert).to_be_hidden()

    disk.fill()
    wait_until(lambda: client.post("/", BIG_SCAN).status_code == 503, 30, 0.01,
               "a submit refused on the full disk")
    since = time.monotonic()
    page.clock.fast_forward(int(PAGE_POLL_S * 1000))
    expect(alert).to_be_visible(timeout=base.T)
    shown = time.monotonic() - since
    expect(alert).to_contain_text("Task database cannot be written")
    expect(page.locator("#store-reason")).to_contain_text("database or disk is full")
    page.click('[data-lang="zh"]')  # the notice follows the language switch
    expect(alert).to_contain_text("任务数据库无法写入", timeout=base.T)
    expect(page.locator("#store-reason")).to_contain_text(re.compile("释放磁盘空间"))

    disk.free()
    freed = time.monotonic()
    # Nothing writes now: the server's probe (at most every PROBE_S, run by a /health
    # request) finds the disk writable again, then the page's next poll hides the alert.
    wait_until(lambda: client.get("/health").status_code == 200, PROBE_S + 3, 0.1,
               "/health 200 after the disk was freed")
    page.clock.fast_forward(int(PAGE_POLL_S * 1000))
    expect(alert).to_be_hidden(timeout=base.T)
    print(f"\nstore alert shown {shown:.1f} s after a refused submit, "
          f"hidden {time.monotonic() - freed:.1f} s after the disk was freed")
    task_id = client.submit()
    assert client.wait_final(task_id)["status"] == "completed"
    # Chromium logs each 503 of /health as a failed resource; nothing else may appear.
    assert not [e for e in tab.errors if "status of 503" not in e], tab.errors
