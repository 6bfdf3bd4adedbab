"""One server per database file, whatever its name (issue 27).

A symlink to the file or to its directory, a relative path with ``..``, a bind mount of
the directory or of the file alone: each reaches the first server's database, so each
meets its lock, and the first server's running task is left alone. A file with several
names (hard links) is refused outright: SQLite keeps one journal per name.

Real server subprocesses, real SQLite files, real mounts: the second server runs in a
private mount namespace (``unshare -m``; ``-rm`` when not root), so no mount outlives it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tasks.store import TaskStore
from tasks.store.instance_lock import DatabaseHardLinked, InstanceLock, InstanceLockHeld
from tests.conftest import ROOT, wait_until
from tests.proc import ServerProcess, free_port, scan

# One bottle a second: a six-position scan keeps the first server's robot busy ~6 s,
# long enough for a second server and a check to be refused meanwhile.
SLOW = ("--sim-speed", "20")
POSITIONS = [1, 2, 3, 4, 5, 6]
MOUNT_THEN_EXEC = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'


def main_py(*args: str, cwd: str = ROOT, prefix: tuple[str, ...] = (),
            lang: str = "en") -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, os.path.join(ROOT, "main.py"), *args],
                          cwd=cwd, capture_output=True, text=True, encoding="utf-8",
                          timeout=60,
                          env={**os.environ, "ROBOT_LANG": lang, "PYTHONIOENCODING": "utf-8"})


def serve_args(db: str) -> tuple[str, ...]:
    return ("serve", "--mode", "queue", "--host", "127.0.0.1", "--port", str(free_port()),
            "--db", db, "--sim-speed", "200")


def check_args(db: str) -> tuple[str, ...]:
    return ("check", "--host", "127.0.0.1", "--port", str(free_port()), "--db", db,
            "--sim-speed", "200", "--sim-transport", "tcp")


def one_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, (out.returncode, out.stdout, out.stderr)
    return lines[0]


@pytest.fixture(scope="module")
def unshare_flags(tmp_path_factory) -> str:
    """The unshare(1) flags that give a private mount namespace where bind mounts work;
    the test is skipped, with the reason, where this machine cannot."""
    unshare = shutil.which("unshare")
    if not sys.platform.startswith("linux") or unshare is None:
        pytest.skip("bind mounts need Linux and unshare(1)")
    flags = "-m" if os.geteuid() == 0 else "-rm"
    a, b = tmp_path_factory.mktemp("probe-a"), tmp_path_factory.mktemp("probe-b")
    probe = subprocess.run([unshare, flags, "sh", "-c", MOUNT_THEN_EXEC, "sh", str(a), str(b),
                            "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        reason = f"this machine cannot bind-mount (unshare {flags}): {probe.stderr.strip()}"
        print(reason)
        pytest.skip(reason)
    return flags


@dataclass
class Second:
    """How the second server names the first one's database."""

    db: str
    expect: str  # in its one line, English
    expect_zh: str  # the same refusal through `check --lang zh`
    cwd: str = ROOT
    prefix: tuple[str, ...] = ()


def by_pid(pid: int) -> tuple[str, str]:
    return f"in use by another server (process {pid})", f"正被另一个服务器使用（进程 {pid}）"


OTHER_PATH = ("in use by another server through another path to the same file",
              "通过同一文件的另一个路径")
HARD_LINKS = ("the file has 2 names (hard links)", "该文件有 2 个名字（硬链接）")


def file_symlink(tmp, real_db, pid, flags) -> Second:
    os.symlink(real_db, tmp / "link.db")
    return Second(str(tmp / "link.db"), *by_pid(pid))


def dir_symlink(tmp, real_db, pid, flags) -> Second:
    return Second(real_db, *by_pid(pid))  # the first server came in through dirlink/


def relative_dotdot(tmp, real_db, pid, flags) -> Second:
    (tmp / "elsewhere" / "deeper").mkdir(parents=True)
    return Second("../../real/tasks.db", *by_pid(pid), cwd=str(tmp / "elsewhere" / "deeper"))


def dir_bind_mount(tmp, real_db, pid, flags) -> Second:
    (tmp / "mnt").mkdir()
    return Second(str(tmp / "mnt" / "tasks.db"), *by_pid(pid),
                  prefix=("unshare", flags, "sh", "-c", MOUNT_THEN_EXEC, "sh",
                          str(tmp / "real"), str(tmp / "mnt")))


def file_bind_mount(tmp, real_db, pid, flags) -> Second:
    # Only the file is mounted: the first server's lock file is not to be seen there.
    (tmp / "other").mkdir()
    (tmp / "other" / "alias.db").touch()
    return Second(str(tmp / "other" / "alias.db"), *OTHER_PATH,
                  prefix=("unshare", flags, "sh", "-c", MOUNT_THEN_EXEC, "sh", real_db,
                          str(tmp / "other" / "alias.db")))


def hard_link_made_while_running(tmp, real_db, pid, flags) -> Second:
    os.link(real_db, tmp / "hard.db")
    return Second(str(tmp / "hard.db"), *HARD_LINKS)


CASES: dict[str, Callable[..., Second]] = {f.__name__: f for f in (
    file_symlink, dir_symlink, relative_dotdot, dir_bind_mount, file_bind_mount,
    hard_link_made_while_running)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_another_name_of_the_database_is_refused_while_the_first_runs(
        tmp_path, request, case) -> None:
    flags = request.getfixturevalue("unshare_flags") if "mount" in case else ""
    (tmp_path / "real").mkdir()
    real_db = str(tmp_path / "real" / "tasks.db")
    first_db = real_db
    if case == "dir_symlink":
        # The first server creates its database through a symlinked directory.
        os.symlink(tmp_path / "real", tmp_path / "dirlink")
        first_db = str(tmp_path / "dirlink" / "tasks.db")
    first = ServerProcess(first_db, "sim", *SLOW)
    try:
        first.wait_ready()
        assert os.path.isfile(real_db)
        task_id = first.post("/", scan("R", POSITIONS)).json()["task_id"]
        wait_until(lambda: first.task(task_id)["status"] == "running", 10, message="running")
        second = CASES[case](tmp_path, real_db, first.proc.pid, flags)

        line = one_line(main_py(*serve_args(second.db), cwd=second.cwd, prefix=second.prefix))
        assert line.startswith("Cannot start: ") and second.expect in line, line
        assert os.path.normpath(os.path.join(second.cwd, second.db)) in line
        zh = one_line(main_py(*check_args(second.db), "--lang", "zh", cwd=second.cwd,
                              prefix=second.prefix, lang="zh"))
        assert zh.startswith("检查未通过: 数据库: ") and second.expect_zh in zh, zh

        assert first.task(task_id)["status"] == "running"  # no second recovery failed it
        # Still the first server's to end: cancelled now rather than waited for (the
        # scan is long only so that it runs through the second server's attempts).
        assert first.post(f"/task/{task_id}/cancel").status_code in (200, 202)
        assert first.wait_final(task_id)["status"] == "cancelled"
    finally:
        first.terminate()
        first.stop()
    with sqlite3.connect(real_db) as conn:
        rows = conn.execute("SELECT task_id, status FROM tasks").fetchall()
    assert rows == [(task_id, "cancelled")]
    if case == "hard_link_made_while_running":
        assert not os.path.exists(tmp_path / "hard.db-wal")  # never opened by SQLite


def make_database(path: str) -> None:
    store = TaskStore(path)
    store.open()
    store.close()


def test_a_database_with_two_names_is_refused_at_start(tmp_path) -> None:
    db, other = str(tmp_path / "tasks.db"), str(tmp_path / "other.db")
    make_database(db)
    os.link(db, other)
    for name in (db, other):
        line = one_line(main_py(*serve_args(name)))
        assert line.startswith(f"Cannot start: the task database {name} is refused: "
                               f"the file has 2 names (hard links)"), line
    zh = one_line(main_py(*serve_args(other), lang="zh"))
    assert zh.startswith(f"无法启动: 拒绝使用任务数据库 {other}：该文件有 2 个名字（硬链接）"), zh
    check = one_line(main_py(*check_args(db)))
    assert check.startswith("check failed: database: the task database"), check
    assert "2 names (hard links)" in check
    assert not os.path.exists(other + "-wal")  # SQLite never opened the second name
    os.unlink(other)
    lock = InstanceLock(db)
    lock.acquire()  # one name again: accepted
    try:
        st = os.stat(db)
        assert lock.identity == (st.st_dev, st.st_ino)
    finally:
        lock.release()


def test_the_hard_link_refusal_is_a_store_error_with_a_code(tmp_path) -> None:
    db = str(tmp_path / "t.db")
    make_database(db)
    os.link(db, tmp_path / "t2.db")
    lock = InstanceLock(db)
    with pytest.raises(DatabaseHardLinked) as refused:
        lock.acquire()
    assert refused.value.code == "db_hard_links" and refused.value.links == 2
    assert not lock.held
    lock.release()  # harmless when not held


def test_first_start_through_a_symlinked_directory_creates_and_locks_the_real_file(
        tmp_path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "dirlink")
    first = InstanceLock(str(tmp_path / "dirlink" / "new.db"))
    first.acquire()
    try:
        real = tmp_path / "real" / "new.db"
        assert first.path == str(real) + ".lock"
        if sys.platform.startswith("linux"):
            assert real.is_file() and real.stat().st_size == 0  # SQLite takes an empty file
            assert first.identity == (real.stat().st_dev, real.stat().st_ino)
        with pytest.raises(InstanceLockHeld, match="in use by another server") as held:
            InstanceLock(str(real)).acquire()
        assert held.value.pid == os.getpid()
        assert f"the task database {real} is in use" in str(held.value)
    finally:
        first.release()
    again = InstanceLock(str(real))
    again.acquire()
    again.release()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the file lock is Linux's")
def test_the_database_file_itself_is_locked(tmp_path) -> None:
    """What a bind mount of the file alone meets: a lock file this server cannot see
    (here: removed), and the database file's own lock."""
    db = str(tmp_path / "t.db")
    make_database(db)
    first = InstanceLock(db)
    first.acquire()
    try:
        os.unlink(first.path)
        with pytest.raises(InstanceLockHeld, match="through another path") as held:
            InstanceLock(db).acquire()
        assert held.value.pid is None and held.value.code == "db_in_use_other_name"
        store = TaskStore(db)  # SQLite's own locks are not hindered by it
        store.open()
        assert sum(store.status_counts().values()) == 0
        store.close()
    finally:
        first.release()


def test_a_directory_given_as_database_is_not_called_hard_linked(tmp_path) -> None:
    (tmp_path / "d").mkdir()  # a directory's link count is 2 or more
    lock = InstanceLock(str(tmp_path / "d"))
    lock.acquire()  # the store then says what is wrong with it
    lock.release()
