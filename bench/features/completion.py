"""Completion -> client, hop by hop (docs/performance.md "Third round").

The real server in its own process (bench/serve.py --hops, production logging and
interpreter settings), the simulator robot on a pty. n MOVE_TO tasks one after another;
for each, a `GET /task/<id>?wait=` long-poll is waiting and a `GET /events` stream is
open. Every figure is CLOCK_MONOTONIC (shared by all processes on Linux), from the
moment the simulator wrote the result line:
* the hops inside the server (bench/serve.py's hooks: line read, routed, worker has it,
  the final state's transaction, waiters woken, reply written), p50 and worst;
* the long-poll client and the SSE client having the final state: p50 and worst;
* the cyclic garbage collector's pauses that fell inside a task's window.

With --robot-process the simulator runs in a process of its own, as a lab's robot is
(no interpreter shared with the server). Unloaded, then under ~500 GET /queue/status
per second (bench/loadgen.py in its own process). With --before DIR, the same against
another checkout (a worktree of an earlier commit), alternating, side by side.

Run: .venv/bin/python bench/features/completion.py [--tasks 40] [--before /tmp/wt]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, BENCH)
from audit import environ  # noqa: E402
from common import (  # noqa: E402
    HOST,
    FinalEvents,
    Row,
    ServerProcess,
    finish_loadgen,
    fmt,
    percentile,
    print_table,
    start_loadgen,
    temp_dir,
    verdict,
)

SIM_SPEED = 40.0  # MOVE_TO takes 2 s / 40 = 50 ms
HOPS = ("line_read", "routed", "worker", "commit_begin", "commit_done", "waiters_set",
        "published", "worker_back", "waiter_woken", "reply_written")


class RawClient:
    """One keep-alive connection read by hand: a reply is stamped the moment its last
    byte is in, before any parsing (http.client's header parsing would add ~0.1 ms)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = f"{HOST}:{port}"

    def request(self, method: str, path: str, body: Any = None) -> tuple[dict[str, Any], float]:
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        self.sock.sendall((head + "\r\n").encode() + data)
        buf = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buf += chunk
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                continue
            length = next(int(line.split(b":", 1)[1]) for line in buf[:end].split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            if len(buf) >= end + 4 + length:
                return json.loads(buf[end + 4:end + 4 + length]), time.monotonic()

    def close(self) -> None:
        self.sock.close()


def run_tasks(srv: ServerProcess, n: int) -> list[dict[str, float]]:
    """n tasks one after another; per task, each hop's time after the result line (ms)."""
    sse = FinalEvents(srv.port)
    sse.start()
    conn = RawClient(srv.port)
    spans: list[tuple[str, float, float]] = []
    srv.call("hops")
    for i in range(n):
        body = {"cmd_type": "MOVE_TO", "params": {"x": i % 999, "y": 3, "z": 0}}
        task_id = conn.request("POST", "/", body)[0]["task_id"]
        sent = time.monotonic()
        doc, got = conn.request("GET", f"/task/{task_id}?wait=10")
        spans.append((task_id, sent, got))
        assert doc["status"] == "completed", doc
    deadline = time.monotonic() + 5
    while len(sse.final) < n and time.monotonic() < deadline:
        time.sleep(0.01)  # bounded: the last SSE events are on their way
    sse.close()
    conn.close()
    hops = srv.call("hops")["hops"]
    out = []
    for task_id, sent, got in spans:
        mine: dict[str, float] = {}
        pauses = []
        for t, name in hops:
            if sent < t <= got:
                mine.setdefault(name, t)
                if name.startswith("gc"):
                    pauses.append(float(name.split(":")[1]))
        start = mine.get("sim_write")
        if start is None:  # the robot answered before the long-poll was waiting
            continue
        row = {name: (mine[name] - start) * 1000 for name in HOPS if name in mine}
        row["client"] = (got - start) * 1000
        row["gc_ms"] = sum(pauses)  # collections between the long-poll's send and reply
        if task_id in sse.final:
            row["sse"] = (sse.final[task_id] - start) * 1000
        out.append(row)
    return out


def age_wal(port: int, n: int) -> None:
    """n PINGs one after another, then a pause: the WAL file grows to a working size and
    is checkpointed and restarted, as on a server that has run a while, so the measured
    commits overwrite WAL pages instead of growing the file (an fdatasync that grows a
    file costs about twice one that does not, here)."""
    conn = RawClient(port)
    for _ in range(n):
        task_id = conn.request("POST", "/", {"cmd_type": "PING"})[0]["task_id"]
        conn.request("GET", f"/task/{task_id}?wait=10")
    conn.close()
    time.sleep(2.0)  # idle: the checkpointer's RESTART (CHECKPOINT_IDLE_S) has its turn


def measure(root: str | None, n: int, loaded: bool, wal_warmup: int,
            robot_process: bool) -> list[dict[str, float]]:
    extra = ["--hops", "--robot-process"] if robot_process else ["--hops"]
    with temp_dir() as tmp, environ(BENCH_SERVER_ROOT=root), ServerProcess(
            os.path.join(tmp, "tasks.db"), sim_speed=SIM_SPEED,
            log_file=os.path.join(tmp, "server.log"), extra=extra) as srv:
        run_tasks(srv, 10)  # warm up: ETA history, connections
        if wal_warmup:
            age_wal(srv.port, wal_warmup)
        bg = start_loadgen(srv.port, "/queue/status", connections=16, rate=500,
                           duration=120) if loaded else None
        try:
            return run_tasks(srv, n)
        finally:
            if bg is not None:
                bg.terminate()
                try:
                    finish_loadgen(bg, 5)
                except Exception:  # noqa: BLE001 (its figures are not the point here)
                    pass


def rows(label: str, runs: list[dict[str, float]]) -> list[Row]:
    out = []
    for name in (*HOPS, "client", "sse"):
        values = [r[name] for r in runs if name in r]
        if not values:
            continue
        p50, worst = percentile(values, 50), max(values)
        if name in ("client", "sse"):
            what = "long-poll client has it" if name == "client" else "SSE client has it"
            out.append(Row(f"{label}: {what} (n={len(values)}): p50 / worst ms",
                           f"{fmt(p50, 2)} / {fmt(worst, 2)}", "", "",
                           "p50 <= 1.0, worst <= 5", verdict(p50 <= 1.0 and worst <= 5)))
        else:
            out.append(Row(f"{label}: hop `{name}` after the result line: p50 / worst ms",
                           f"{fmt(p50, 3)} / {fmt(worst, 2)}", verdict="info"))
    gc_ms = [r["gc_ms"] for r in runs if r["gc_ms"]]
    out.append(Row(f"{label}: garbage collections inside a task's window: tasks with one, "
                   "worst pause ms", f"{len(gc_ms)} of {len(runs)}, "
                   f"{fmt(max(gc_ms) if gc_ms else 0.0, 2)}", verdict="info"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--before", default=None, help="another checkout to compare with")
    p.add_argument("--robot-process", action="store_true",
                   help="the simulated robot in a process of its own, as a real robot is")
    p.add_argument("--wal-warmup", type=int, default=300,
                   help="PINGs that age the WAL first (0: a fresh database's growing WAL)")
    args = p.parse_args()
    table: list[Row] = []
    for loaded in (False, True):
        load = "under 500 polls/s" if loaded else "unloaded"
        builds = [("this tree", None)]
        if args.before:
            builds.insert(0, ("before", args.before))
        for name, root in builds:
            table += rows(f"{name}, {load}", measure(root, args.tasks, loaded,
                                                       args.wal_warmup, args.robot_process))
    print_table("Completion -> client, hop by hop", table)


if __name__ == "__main__":
    main()
