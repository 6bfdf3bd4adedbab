"""A progress flood's cost to clients (issue 34), before and after, side by side in one run.

The simulator floods HOME with --items progress lines, each with an item, at --rate a
second (robot/sim/hostile.py: 10,000 items at 1,000/s by default, the most a command
keeps without a total), in the server of bench/serve.py (its own process: this tree, or
BENCH_SERVER_ROOT's checkout for "before"). Meanwhile:
- one SSE client (GET /events over HTTP/1.0, so the body is the frames' own bytes) records
  every frame: the task's `progress` frames' sizes (max, p50, count) and all the bytes
  of the frames about the task (its progress and task events);
- one client reads GET /task/<id> of the flooded task every --every s (a keep-alive
  connection), until the task is final: latency p50/p99/max, and the items it got.
The server's CPU seconds over the task are read from /proc. Sides alternate over --reps
rounds (before first in odd rounds); each round on a fresh database.

Run: .venv/bin/python bench/features/flood.py [--before /tmp/an/wt-before] [--reps 1]
     [--items 10000] [--rate 1000] [--every 0.1]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import statistics
import sys
import threading
import time
from typing import Any

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, BENCH)
from common import (  # noqa: E402
    HOST,
    ROOT,
    Row,
    ServerProcess,
    fmt,
    http_request,
    percentile,
    print_table,
    temp_dir,
    verdict,
)

FLOOD_ENV = "BENCH_FLOOD"  # "rate,seconds" for the child server
FRAME_LIMIT = 4096
HOME = {"cmd_type": "HOME", "params": {}}


# -- the child: bench/serve.py with its simulator flooding ---------------------------------
def serve_flooded() -> None:
    """Child mode: bench/serve.py, its simulator in the flood fault mode with items."""
    rate, seconds = (float(x) for x in os.environ[FLOOD_ENV].split(","))
    sys.argv = [os.path.join(BENCH, "serve.py"), *sys.argv[2:]]
    import serve  # bench/serve.py: BENCH_SERVER_ROOT's server, or this tree's

    plain = serve.make_server

    def make_server(**settings: Any) -> Any:
        server = plain(**settings)
        start = server.start

        def start_flooding() -> None:
            start()
            sim = server.simulator
            sim.flood_rate, sim.flood_seconds, sim.flood_items = rate, seconds, True
            sim.set_fault("flood")

        server.start = start_flooding
        return server

    serve.make_server = make_server
    serve.main()


# -- the measuring side ------------------------------------------------------------------------
class Frames:
    """GET /events over HTTP/1.0, every frame's (size, event, task_id) as it arrives."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.sock.sendall(b"GET /events HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                          b"Accept: text/event-stream\r\n\r\n")
        self.sock.settimeout(None)
        self.frames: list[tuple[int, str, str | None, str | None]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        buffer, head = b"", True
        with contextlib.suppress(OSError):
            while True:
                data = self.sock.recv(1 << 20)
                if not data:
                    return
                buffer += data
                if head:
                    if b"\r\n\r\n" not in buffer:
                        continue
                    buffer, head = buffer.split(b"\r\n\r\n", 1)[1], False
                start = 0
                while (end := buffer.find(b"\n\n", start)) >= 0:
                    self._frame(buffer[start:end + 2])
                    start = end + 2
                buffer = buffer[start:]

    def _frame(self, frame: bytes) -> None:
        kind = task_id = status = None
        for line in frame.split(b"\n"):
            if line.startswith(b"event: "):
                kind = line[7:].decode()
            elif line.startswith(b"data: ") and kind in ("progress", "task"):
                data = json.loads(line[6:])
                task_id, status = data.get("task_id"), data.get("status")
        with self.lock:
            self.frames.append((len(frame), kind or "", task_id, status))

    def of(self, task_id: str) -> list[tuple[int, str, str | None, str | None]]:
        with self.lock:
            return [f for f in self.frames if f[2] == task_id]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


def wait_robot(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, health = http_request(port, "GET", "/health")
        if status == 200 and isinstance(health, dict) and health["robot"].get("connected"):
            return
        time.sleep(0.05)
    raise RuntimeError("the simulated robot did not connect")


def one_run(tmp: str, side: str, root: str, args: argparse.Namespace,
            n: int) -> dict[str, Any]:
    seconds = args.items / args.rate
    db = os.path.join(tmp, f"{side}-{n}.db")
    srv = ServerProcess(db, log_level="WARNING", extra=("--no-hooks",))
    srv.args[1:2] = [os.path.abspath(__file__), "--serve-flooded"]
    saved = dict(os.environ)
    os.environ.update({"BENCH_SERVER_ROOT": root, FLOOD_ENV: f"{args.rate},{seconds}"})
    try:
        srv.__enter__()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        wait_robot(srv.port)
        frames = Frames(srv.port)
        conn = http.client.HTTPConnection(HOST, srv.port, timeout=30)
        cpu0 = srv.cpu_seconds()
        status, reply = http_request(srv.port, "POST", "/", HOME)
        assert status == 202, reply
        task_id = reply["task_id"]
        gets: list[float] = []
        most = 0
        while True:
            t0 = time.perf_counter()
            conn.request("GET", f"/task/{task_id}")
            resp = conn.getresponse()
            body = resp.read()
            gets.append((time.perf_counter() - t0) * 1000)
            doc = json.loads(body)
            most = max(most, len((doc.get("progress") or {}).get("items") or []))
            if doc["status"] not in ("pending", "running"):
                break
            time.sleep(max(0.0, args.every - (time.perf_counter() - t0)))
        cpu = srv.cpu_seconds() - cpu0
        conn.close()
        deadline = time.monotonic() + 10
        while not any(f[1] == "task" and f[3] == doc["status"] for f in frames.of(task_id)):
            if time.monotonic() > deadline:
                raise RuntimeError("no final task event")
            time.sleep(0.01)
        mine = frames.of(task_id)
        frames.close()
        sizes = [f[0] for f in mine if f[1] == "progress"]
        return {"sizes": sizes, "bytes": sum(f[0] for f in mine), "gets": gets,
                "items": len((doc.get("progress") or {}).get("items") or []), "most": most,
                "status": doc["status"], "cpu": cpu}
    finally:
        srv.__exit__(None, None, None)


def table(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> list[Row]:
    def pooled(side: str, key: str) -> list[float]:
        return [v for run in runs[side] for v in run[key]]

    def each(side: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[side])

    rows = []
    figures = [
        ("progress frames per task", lambda s: each(s, "count"), None),
        ("progress frame max, bytes", lambda s: max(pooled(s, "sizes")), FRAME_LIMIT),
        ("progress frame p50, bytes", lambda s: percentile(pooled(s, "sizes"), 50), None),
        ("progress frames, bytes in all", lambda s: each(s, "progress_bytes"), None),
        ("SSE bytes about the task (with its task events)", lambda s: each(s, "bytes"),
         None),
        ("GET /task during the flood, p50 ms", lambda s: percentile(pooled(s, "gets"), 50),
         None),
        ("GET /task during the flood, p99 ms", lambda s: percentile(pooled(s, "gets"), 99),
         None),
        ("GET /task during the flood, max ms", lambda s: max(pooled(s, "gets")), None),
        ("GET /task reads", lambda s: len(pooled(s, "gets")), None),
        ("server CPU over the task, s", lambda s: each(s, "cpu"), None),
        ("items in the final GET /task", lambda s: each(s, "items"), None),
    ]
    for run in runs["before"] + runs["after"]:
        run["count"], run["progress_bytes"] = len(run["sizes"]), sum(run["sizes"])
    for what, figure, limit in figures:
        before, after = figure("before"), figure("after")
        ratio = f"{after / before:.3f}x" if before else "-"
        rows.append(Row(what, fmt(after), fmt(before), ratio,
                        f"<= {limit}" if limit else "",
                        verdict(after <= limit) if limit else "info"))
    return rows


def main() -> None:
    if sys.argv[1:2] == ["--serve-flooded"]:
        serve_flooded()
        return
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--before", default=os.environ.get("BENCH_BEFORE_ROOT", "/tmp/an/wt-before"),
                   help="a checkout of the commit before (a git worktree)")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--rate", type=float, default=1000.0, help="progress lines a second")
    p.add_argument("--every", type=float, default=0.1, help="s between GET /task reads")
    args = p.parse_args()
    if not os.path.isfile(os.path.join(args.before, "server", "runtime.py")):
        raise SystemExit(f"no checkout at {args.before} (git worktree add it)")
    print(f"# machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; {args.items:,} items at "
          f"{args.rate:g}/s, GET /task every {args.every:g} s", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    with temp_dir() as tmp:
        for rep in range(args.reps):
            order = ("before", "after") if rep % 2 == 0 else ("after", "before")
            for side in order:
                run = one_run(tmp, side, args.before if side == "before" else ROOT, args, rep)
                runs[side].append(run)
                print(f"round {rep + 1} {side}: {run['status']}, {len(run['sizes'])} progress "
                      f"frames, max {max(run['sizes']):,} B, GET p50 "
                      f"{percentile(run['gets'], 50):.1f} ms", flush=True)
    print_table(f"A {args.items:,}-item progress flood: after (figure) and before (reference)",
                table(runs, args))


if __name__ == "__main__":
    main()
