"""The physical floor of a completion on this machine (docs/performance.md "Third round").

The same hops as the server's completion path and nothing else: a robot process writes
a line on a pty after `--gap` s of quiet (a 50 ms MOVE_TO by default, as in
bench/features/completion.py); a reader thread reads it (select + os.read) and hands it
to a worker thread (queue.Queue); the worker commits one row (SQLite WAL,
synchronous=FULL, the WAL aged and restarted first) and sets an Event; a waiter thread
wakes and writes 90 bytes on a TCP socket; a client process reads them. Each stamp is
CLOCK_MONOTONIC after the robot's write, so the figures line up with completion.py's
hops. With a gap of a few ms the CPUs never fall idle: the wake-ups cost less.

Run: .venv/bin/python bench/features/floor.py [--gap 0.05] [--n 40]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import select
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tty

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, BENCH)
from common import Row, fmt, percentile, print_table  # noqa: E402

LINE = b'{"id": 1, "type": "result", "success": true, "message": "ok", "data": {}}\n'


def robot(path: str, n: int, gap: float) -> None:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    wrote = []
    for _ in range(n):
        time.sleep(gap)  # the command's time on the robot
        wrote.append(time.monotonic())
        os.write(fd, LINE)
        os.read(fd, 100)  # the host's next command: one task after another
    print(json.dumps(wrote), flush=True)


def client(port: int, n: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    got = []
    for _ in range(n):
        sock.recv(100)
        got.append(time.monotonic())
    print(json.dumps(got), flush=True)


def host(n: int, gap: float) -> dict[str, list[float]]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    tmp = tempfile.mkdtemp(prefix="robot-floor-")
    db = sqlite3.connect(os.path.join(tmp, "t.db"), isolation_level=None,
                         check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t(x)")
    for i in range(3000):  # grow the WAL to a working size, then restart it
        db.execute("INSERT INTO t VALUES (?)", (i,))
    db.execute("PRAGMA wal_checkpoint(RESTART)")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    me = os.path.abspath(__file__)
    reader_p = subprocess.Popen([sys.executable, me, "--client", str(listener.getsockname()[1]),
                                 "--n", str(n)], stdout=subprocess.PIPE, text=True)
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    robot_p = subprocess.Popen([sys.executable, me, "--robot", os.ttyname(slave), "--n", str(n),
                                "--gap", str(gap)], stdout=subprocess.PIPE, text=True)
    inbox: queue.Queue[int] = queue.Queue()
    final = threading.Event()
    marks: dict[str, list[float]] = {"read": [], "worker": [], "commit": [], "woken": []}

    def reader() -> None:
        for i in range(n):
            select.select([master], [], [])
            os.read(master, 4096)
            marks["read"].append(time.monotonic())
            inbox.put(i)

    def worker() -> None:
        for i in range(n):
            inbox.get()
            marks["worker"].append(time.monotonic())
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?)", (i,))
            db.execute("COMMIT")
            marks["commit"].append(time.monotonic())
            final.set()

    def waiter() -> None:
        for _ in range(n):
            final.wait()
            final.clear()
            marks["woken"].append(time.monotonic())
            conn.sendall(b"x" * 90)
            os.write(master, b"next\n")

    threads = [threading.Thread(target=f) for f in (reader, worker, waiter)]
    for t in threads:
        t.start()
    assert robot_p.stdout is not None and reader_p.stdout is not None
    wrote = json.loads(robot_p.stdout.read())
    marks["client"] = json.loads(reader_p.stdout.read())
    for t in threads:
        t.join()
    robot_p.wait(5)
    reader_p.wait(5)
    db.close()
    return {k: [(b - a) * 1000 for a, b in zip(wrote, v, strict=True)]
            for k, v in marks.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--gap", type=float, default=0.05)
    p.add_argument("--robot", help=argparse.SUPPRESS)
    p.add_argument("--client", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.robot:
        robot(args.robot, args.n, args.gap)
        return
    if args.client:
        client(args.client, args.n)
        return
    rows = []
    for gap in (args.gap, 0.003):
        hops = host(args.n, gap)
        for name, label in (("read", "the reader has the line"),
                            ("worker", "the worker has it"),
                            ("commit", "COMMIT returned"), ("woken", "the waiter runs"),
                            ("client", "the client has the reply")):
            v = hops[name]
            rows.append(Row(f"floor, {gap * 1000:g} ms between lines: {label}: p50 / worst ms",
                            f"{fmt(percentile(v, 50), 3)} / {fmt(max(v), 2)}", verdict="info"))
    print_table("The floor of a completion (one row, no server)", rows)


if __name__ == "__main__":
    main()
