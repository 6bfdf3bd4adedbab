"""A room full of dashboards: GET /events for 950 and 1,000 clients (docs/performance.md
"Fan-out"), this tree and, with --before, an older checkout (BENCH_SERVER_ROOT).

The real server (bench/serve.py, production settings) in its own process; the SSE clients
held by another one (this file with --holder: one thread, a selector, RLIMIT_NOFILE
raised), which stamps with CLOCK_MONOTONIC the arrival of every task's final event on
each stream. While they are connected:
- what the streams were answered (statuses of their heads);
- ordinary requests: POST / and GET /queue/status, each on a new connection (admission
  at every request): statuses and latency; GET /queue/status from 16 keep-alive clients
  for 2 s (bench/loadgen.py): req/s, p99, errors; a long-poll `?wait=`'s status;
- completion -> clients over --tasks tasks (MOVE_TO, one at a time): the simulator's write
  of the result line (bench/serve.py marks) -> the final event at the first and at the
  last of the streams; p50/p99 of each;
- idle for --idle s: the server's CPU (utime + stime from /proc/<pid>/stat, before and
  after) as % of one core, its RSS and threads (and both before the clients came).
Each task's figures (result write -> commit, -> first, -> last client) go to stderr.
An older checkout refuses most streams: its rows say what it answered.

Run: .venv/bin/python bench/features/fanout.py [--clients 950,1000] [--tasks 10]
     [--idle 20 (or 60)] [--before /tmp/an/wt-before]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, BENCH)
from common import (  # noqa: E402
    HOST,
    PYTHON,
    Row,
    ServerProcess,
    fmt,
    http_request,
    percentile,
    print_table,
    run_load,
    temp_dir,
    verdict,
)

SIM_SPEED = 40.0  # MOVE_TO takes 2 s / 40 = 50 ms
FINAL = (b'"status": "completed"', b'"status": "failed"', b'"status": "cancelled"')
TASK_ID = b'data: {"task_id": "'
ORDINARY_N = 30  # each of POST / and GET /queue/status, on new connections


# -- the holder process -----------------------------------------------------------------
class Stream:
    __slots__ = ("sock", "buf", "status")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf, self.status = sock, b"", ""


def hold(port: int, count: int) -> None:
    """Open `count` streams; then answer `status`, `finals` and `quit` on stdin."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    request = (f"GET /events HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()
    sel = selectors.DefaultSelector()
    failed, opened, closed, received = 0, 0, 0, 0
    statuses: dict[str, int] = {}
    # task_id -> the arrival of its final event on each stream, since the last `finals`
    finals: dict[str, list[float]] = {}
    for _ in range(count):
        try:
            sock = socket.create_connection((HOST, port), timeout=5)
            sock.sendall(request)
        except OSError:
            failed += 1
            continue
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, Stream(sock))
        opened += 1
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    while True:
        for key, _ in sel.select():
            stream = key.data
            if stream is None:
                command = sys.stdin.readline().strip()
                if command in ("quit", ""):
                    return
                if command == "status":
                    reply: Any = {"opened": opened, "connect_failed": failed,
                                  "statuses": statuses, "open": opened - closed,
                                  "bytes": received}
                else:  # finals: {task_id: [arrivals]} since the last ask
                    reply, finals = finals, {}
                print(json.dumps(reply), flush=True)
                continue
            try:
                data = stream.sock.recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            t = time.monotonic()
            received += len(data)
            if not data:
                sel.unregister(stream.sock)
                stream.sock.close()
                closed += 1
                if not stream.status:
                    statuses["closed"] = statuses.get("closed", 0) + 1
                continue
            buf = stream.buf + data
            if not stream.status:
                if b"\r\n\r\n" not in buf:
                    stream.buf = buf
                    continue
                head, _, buf = buf.partition(b"\r\n\r\n")
                stream.status = head.split(b" ", 2)[1].decode()
                at = buf.find(b'"code": "') + 9  # a refusal's code, if its body is here
                if stream.status != "200" and at >= 9:
                    stream.status += " " + buf[at:buf.find(b'"', at)].decode()
                statuses[stream.status] = statuses.get(stream.status, 0) + 1
            if b"\n\n" not in buf:
                stream.buf = buf
                continue
            # SSE blocks (a chunk's size line, if any, stays in front of the next block).
            *blocks, stream.buf = buf.split(b"\n\n")
            for block in blocks:
                if b"\nevent: task\n" in block and any(f in block for f in FINAL):
                    # The task document's first key, found without parsing it: this
                    # loop must keep up with 1,000 streams.
                    at = block.find(TASK_ID) + len(TASK_ID)
                    if at >= len(TASK_ID):
                        task_id = block[at:block.find(b'"', at)].decode()
                        finals.setdefault(task_id, []).append(t)


# -- the measuring side -----------------------------------------------------------------
class Holder:
    def __init__(self, port: int, count: int) -> None:
        self.proc = subprocess.Popen([PYTHON, __file__, "--holder", str(port), str(count)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def call(self, command: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # the holder ends at end of input
        self.proc.wait(30)


def timed(port: int, method: str, path: str, body: Any = None) -> tuple[int | str, float]:
    """One request on a new connection: (status or the error's name, ms)."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json"} if data else {})
        response = conn.getresponse()
        response.read()
        return response.status, (time.monotonic() - t0) * 1000
    except OSError as exc:
        return type(exc).__name__, (time.monotonic() - t0) * 1000
    finally:
        conn.close()


def counted(values: list[int | str]) -> str:
    return ", ".join(f"{k}: {values.count(k)}" for k in sorted(set(values), key=str))


def move(x: int) -> dict[str, Any]:
    return {"cmd_type": "MOVE_TO", "params": {"x": x, "y": 7, "z": 0}}


def result_writes(marks: list[list[Any]]) -> dict[int, float]:
    """x of each MOVE_TO -> when the simulator wrote its result line (serve.py marks)."""
    ids: dict[Any, int] = {}
    wrote: dict[Any, float] = {}
    for t, kind, text in marks:
        for line in str(text).splitlines() if kind in ("rx", "tx") else ():
            with contextlib.suppress(ValueError, AttributeError):
                msg = json.loads(line)
                if kind == "rx" and msg.get("cmd") == "MOVE_TO":
                    ids[msg["id"]] = msg["params"]["x"]
                elif kind == "tx" and msg.get("type") == "result":
                    wrote.setdefault(msg["id"], t)
    return {x: wrote[i] for i, x in ids.items() if i in wrote}


def wait_finals(holder: Holder, task_id: str, expect: int, got: dict[str, list[float]],
                timeout: float = 10.0) -> list[float]:
    deadline = time.monotonic() + timeout
    while True:
        for key, times in holder.call("finals").items():
            got.setdefault(key, []).extend(times)
        if len(got.get(task_id, [])) >= expect or time.monotonic() > deadline:
            return got.get(task_id, [])
        time.sleep(0.01)


@contextlib.contextmanager
def server_at(root: str | None, tmp: str, name: str) -> Iterator[ServerProcess]:
    saved = os.environ.get("BENCH_SERVER_ROOT")
    if root:
        os.environ["BENCH_SERVER_ROOT"] = root
    try:
        srv = ServerProcess(os.path.join(tmp, f"{name}.db"), sim_speed=SIM_SPEED,
                            log_file=os.path.join(tmp, f"{name}.log"))
        srv.__enter__()
    finally:
        os.environ.pop("BENCH_SERVER_ROOT", None)
        if saved is not None:
            os.environ["BENCH_SERVER_ROOT"] = saved
    try:
        yield srv
    finally:
        srv.__exit__(None, None, None)


def measure(root: str | None, clients: int, tasks: int, idle: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with temp_dir() as tmp, server_at(root, tmp, f"fanout-{clients}") as srv:
        port = srv.port
        timed(port, "POST", "/", move(0))  # warm up: the first task's path
        out["rss_before"] = srv.call("rss")
        load = run_load(port, "/queue/status", connections=16, duration=2.0, tmp=tmp)
        out["load_alone"] = {"rps": load.rps, "p99": load.p99, "errors": load.errors}
        holder = Holder(port, clients)
        try:
            deadline = time.monotonic() + 30
            while True:  # every stream answered (or closed), or 30 s
                held = holder.call("status")
                if sum(held["statuses"].values()) >= held["opened"] \
                        or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            out["held"] = held
            ok = held["statuses"].get("200", 0)
            # Ordinary requests while they are connected, each on a new connection.
            post = [timed(port, "POST", "/", move(500 + i)) for i in range(ORDINARY_N)]
            get = [timed(port, "GET", "/queue/status") for _ in range(ORDINARY_N)]
            out["post"], out["get"] = post, get
            out["longpoll"] = timed(port, "GET", "/queue/status?wait=0.2")[0]
            load = run_load(port, "/queue/status", connections=16, duration=2.0, tmp=tmp)
            out["load"] = {"rps": load.rps, "p99": load.p99, "errors": load.errors}
            # The ordinary POSTs' tasks run first (50 ms each): let the queue drain.
            drain = time.monotonic() + 30
            while time.monotonic() < drain:
                status, doc = http_request(port, "GET", "/queue/status")
                if status != 200 or not doc.get("queue_size") and not doc.get("running_task"):
                    break
                time.sleep(0.1)
            # Completion -> clients, one task at a time, once the streams are quiet (the
            # holder, one thread, may still be reading the events of the ordinary phase).
            quiet = time.monotonic() + 60
            seen = -1
            while time.monotonic() < quiet:
                now_bytes = holder.call("status")["bytes"]
                if now_bytes == seen:
                    break
                seen = now_bytes
                time.sleep(0.3)
            srv.call("marks")
            got: dict[str, list[float]] = {}
            per_task: list[tuple[int, str, list[float]]] = []
            for i in range(tasks):
                status, doc = http_request(port, "POST", "/", move(i + 1))
                if status != 202:
                    per_task.append((i + 1, "", []))
                    continue
                task_id = doc["task_id"]
                per_task.append((i + 1, task_id, wait_finals(holder, task_id, ok, got)))
            marks = srv.call("marks")["marks"]
            wrote = result_writes(marks)
            committed = {m[2]: m[0] for m in marks if m[1] == "commit"}
            first, last, reached, commit = [], [], [], []
            for x, task_id, times in per_task:
                if x in wrote and times:
                    first.append((min(times) - wrote[x]) * 1000)
                    last.append((max(times) - wrote[x]) * 1000)
                    if task_id in committed:
                        commit.append((committed[task_id] - wrote[x]) * 1000)
                reached.append(len(times))
            out["first"], out["last"], out["reached"] = first, last, reached
            out["commit"] = commit
            print("per task, ms: commit", [round(v, 1) for v in commit], "first",
                  [round(v, 1) for v in first], "last", [round(v, 1) for v in last],
                  file=sys.stderr, flush=True)
            # Idle: nothing but the keep-alive comments.
            time.sleep(1.0)
            cpu0, t0 = srv.cpu_seconds(), time.monotonic()
            time.sleep(idle)
            cpu1, t1 = srv.cpu_seconds(), time.monotonic()
            out["idle_cpu_pct"] = (cpu1 - cpu0) / (t1 - t0) * 100
            out["rss_idle"] = srv.call("rss")
            out["held_after"] = holder.call("status")
        finally:
            holder.close()
    return out


def rows(label: str, clients: int, r: dict[str, Any]) -> list[Row]:
    held = r["held"]
    post_ms = [ms for s, ms in r["post"] if s == 202]
    get_ms = [ms for s, ms in r["get"] if s == 200]
    post_ok = len(post_ms) == len(r["post"])
    get_ok = len(get_ms) == len(r["get"])
    last = r["last"]
    p99 = percentile(last, 99)
    rss0, rss1 = r["rss_before"], r["rss_idle"]
    tag = f"{label}, {clients} SSE clients"
    return [
        Row(f"{tag}: streams answered", f"{counted_dict(held['statuses'])} "
            f"(connect failed {held['connect_failed']}; still open {r['held_after']['open']})",
            verdict=verdict(held["statuses"].get("200", 0) == clients)),
        Row(f"{tag}: POST / on new connections (n={len(r['post'])}): statuses; p50 / p99 ms",
            f"{counted([s for s, _ in r['post']])}; "
            f"{fmt(percentile(post_ms, 50), 2)} / {fmt(percentile(post_ms, 99), 2)}",
            target="all 202", verdict=verdict(post_ok)),
        Row(f"{tag}: GET /queue/status on new connections (n={len(r['get'])}): statuses; "
            "p50 / p99 ms", f"{counted([s for s, _ in r['get']])}; "
            f"{fmt(percentile(get_ms, 50), 2)} / {fmt(percentile(get_ms, 99), 2)}",
            target="all 200", verdict=verdict(get_ok)),
        Row(f"{tag}: GET /queue/status, 16 keep-alive clients 2 s: req/s, p99 ms, errors "
            "(reference: before the clients came)",
            f"{fmt(r['load']['rps'])}, {fmt(r['load']['p99'], 2)}, {r['load']['errors']}",
            f"{fmt(r['load_alone']['rps'])}, {fmt(r['load_alone']['p99'], 2)}, "
            f"{r['load_alone']['errors']}", verdict="info"),
        Row(f"{tag}: a long-poll ?wait= meanwhile: status", str(r["longpoll"]),
            verdict="info"),
        Row(f"{tag}: result write -> final state committed: p50 / p99 ms",
            f"{fmt(percentile(r['commit'], 50), 2)} / {fmt(percentile(r['commit'], 99), 2)}",
            verdict="info"),
        Row(f"{tag}: completion -> first client (sim result write; n={len(r['first'])}): "
            "p50 / p99 ms", f"{fmt(percentile(r['first'], 50), 2)} / "
            f"{fmt(percentile(r['first'], 99), 2)}", verdict="info"),
        Row(f"{tag}: completion -> last client (n={len(last)}; clients reached per task "
            f"{min(r['reached'], default=0)}-{max(r['reached'], default=0)}): p50 / p99 ms",
            f"{fmt(percentile(last, 50), 1)} / {fmt(p99, 1)}", target="p99 <= 100",
            verdict=verdict(bool(last) and p99 <= 100)),
        Row(f"{tag}: idle CPU, % of one core", f"{r['idle_cpu_pct']:.2f}", target="<= 1",
            verdict=verdict(r["idle_cpu_pct"] <= 1.0)),
        Row(f"{tag}: server RSS MiB (threads): idle with them / before they came",
            f"{rss1['rss_kib'] / 1024:.1f} ({rss1['threads']}) / "
            f"{rss0['rss_kib'] / 1024:.1f} ({rss0['threads']})", verdict="info"),
    ]


def counted_dict(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(d.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", default="950,1000", help="comma-separated counts")
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--idle", type=float, default=20.0)
    p.add_argument("--before", default=None, help="an older checkout (BENCH_SERVER_ROOT)")
    p.add_argument("--holder", nargs=2, type=int, metavar=("PORT", "COUNT"),
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.holder:
        hold(*args.holder)
        return
    table: list[Row] = []
    for clients in (int(c) for c in args.clients.split(",")):
        for label, root in (("after", None), ("before", args.before)):
            if label == "before" and not root:
                continue
            table += rows(label, clients, measure(root, clients, args.tasks, args.idle))
    print_table(f"Fan-out ({args.tasks} tasks, idle {args.idle:g} s)", table)


if __name__ == "__main__":
    main()
