"""A bounded keep-alive HTTP load generator on raw sockets, meant to run in a process
of its own (so it never shares a GIL with the server it measures).

Modes:
* load (default): `--connections` threads, one keep-alive connection each, for
  `--duration` s or `--max-requests` in all; `--rate` (requests/s over all
  connections, 0 = as fast as possible) paces an open-ish loop. Prints one JSON
  summary: requests, errors, non2xx, rps, p50/p90/p99/max in ms.
* hold (`--hold N`): open N connections, send one request on each (a long-poll or
  GET /events), report how many got a 200 head / another status / nothing, then keep
  them open until stdin closes or `--duration` s pass.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import select
import signal
import socket
import sys
import threading
import time

HOST = "127.0.0.1"
STOP = threading.Event()  # SIGTERM: finish early and still print the summary


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def build_request(method: str, path: str, body: str | None, port: int) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
    data = body.encode() if body is not None else b""
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    return (head + "\r\n").encode() + data


class Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = b""

    def open(self) -> None:
        self.sock = socket.create_connection((HOST, self.port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def exchange(self, request: bytes) -> int:
        """Send one request, read one response (Content-Length framed); its status."""
        if self.sock is None:
            self.open()
        assert self.sock is not None
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            rest += chunk
        self.buf = rest[length:]
        if close:
            self.close()
        return status


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


def run_load(args: argparse.Namespace) -> dict[str, object]:
    request = build_request(args.method, args.path, args.body, args.port)
    latencies: list[list[float]] = [[] for _ in range(args.connections)]
    counts = {"errors": 0, "non2xx": 0}
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + args.duration
    per_conn = args.max_requests // args.connections or 1
    interval = args.connections / args.rate if args.rate > 0 else 0.0

    def worker(i: int) -> None:
        conn = Conn(args.port)
        mine = latencies[i]
        next_at = start + interval * i / args.connections
        for _ in range(per_conn):
            if interval:
                delay = next_at - time.monotonic()
                if delay > 0 and STOP.wait(delay):
                    break
                next_at += interval
            if time.monotonic() >= deadline or STOP.is_set():
                break
            t0 = time.monotonic()
            try:
                status = conn.exchange(request)
            except OSError:
                conn.close()
                with lock:
                    counts["errors"] += 1
                time.sleep(0.01)
                continue
            mine.append((time.monotonic() - t0) * 1000)
            if not 200 <= status < 400:
                with lock:
                    counts["non2xx"] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.duration + 30)
    elapsed = time.monotonic() - start
    flat = [v for per in latencies for v in per]
    return {"requests": len(flat), "errors": counts["errors"], "non2xx": counts["non2xx"],
            "rps": len(flat) / elapsed, "p50": pct(flat, 50), "p90": pct(flat, 90),
            "p99": pct(flat, 99), "max": max(flat) if flat else math.nan}


def run_hold(args: argparse.Namespace) -> None:
    request = build_request("GET", args.path, None, args.port)
    socks: list[socket.socket] = []
    failed_connect = 0
    for _ in range(args.hold):
        try:
            s = socket.create_connection((HOST, args.port), timeout=5)
            s.sendall(request)
            socks.append(s)
        except OSError:
            failed_connect += 1
    # Which got a head back within a moment (SSE answers at once; long-polls don't).
    statuses: dict[str, int] = {}
    pending = {s.fileno(): s for s in socks}
    deadline = time.monotonic() + args.head_wait
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select(list(pending.values()), [], [], 0.05)
        for s in ready:
            data = s.recv(4096)
            code = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"
            statuses[code] = statuses.get(code, 0) + 1
            del pending[s.fileno()]
    statuses["no answer yet"] = len(pending)
    print(json.dumps({"opened": len(socks), "connect_failed": failed_connect,
                      "statuses": statuses}), flush=True)
    # Hold until told (stdin closes) or the bound passes.
    select.select([sys.stdin], [], [], args.duration)
    for s in socks:
        s.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/")
    p.add_argument("--method", default="GET")
    p.add_argument("--body")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--max-requests", type=int, default=10_000_000)
    p.add_argument("--hold", type=int, default=0)
    p.add_argument("--head-wait", type=float, default=1.0)
    args = p.parse_args()
    _raise_nofile()
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    if args.hold:
        run_hold(args)
    else:
        print(json.dumps(run_load(args)), flush=True)


if __name__ == "__main__":
    main()
