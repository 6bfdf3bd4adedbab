"""Shared bench machinery: the reference server, the server host process, load
generators (wrk, or bench/loadgen.py in its own process), percentiles and tables.

Everything listens on 127.0.0.1 only, and every loop is bounded in count and time.
Processes (server under test, reference, load generators) are separate so that
neither the load nor the measuring code shares a GIL with the server.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
PYTHON = sys.executable
HOST = "127.0.0.1"

# ~200 bytes, like a small task document.
REFERENCE_BODY = json.dumps({
    "task_id": "20240101-000000-abcdef", "status": "completed", "cmd_type": "MOVE_TO",
    "submit_time": "2024-01-01 00:00:00", "start_time": "2024-01-01 00:00:01",
    "end_time": "2024-01-01 00:00:03", "result": {"success": True, "message": "MOVE_TO完成"},
}, ensure_ascii=False).encode()

MOVE = {"cmd_type": "MOVE_TO", "params": {"x": 1, "y": 2, "z": 3}}


# -- statistics ----------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


@dataclass
class Row:
    """One line of a result table."""

    what: str
    figure: str
    reference: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""  # "met", "MISSED", "info"


def print_table(title: str, rows: Sequence[Row], file: Any = None) -> str:
    headers = ("what", "figure", "reference", "ratio", "target", "verdict")
    data = [(r.what, r.figure, r.reference, r.ratio, r.target, r.verdict) for r in rows]
    lines = [f"| {' | '.join(headers)} |", "|" + "---|" * len(headers)]
    lines += [f"| {' | '.join(cells)} |" for cells in data]
    text = f"\n## {title}\n\n" + "\n".join(lines) + "\n"
    print(text, file=file or sys.stdout, flush=True)
    return text


def verdict(ok: bool | None) -> str:
    return "info" if ok is None else ("met" if ok else "MISSED")


# -- processes -------------------------------------------------------------------------------
def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_port(port: int, timeout: float = 10.0) -> float:
    """Poll until 127.0.0.1:port accepts a connection; return the time it did."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return time.monotonic()
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {HOST}:{port}") from None
            time.sleep(0.005)


def http_request(port: int, method: str, path: str, body: Any = None,
                 timeout: float = 10.0, token: str | None = None) -> tuple[int, Any]:
    """One request on a new connection (setup and checks only, not measurements)."""
    import http.client
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw
    finally:
        conn.close()


class ReferenceServer:
    """The bare ThreadingHTTPServer of the issue, in a process of its own."""

    def __enter__(self) -> ReferenceServer:
        self.proc = subprocess.Popen([PYTHON, os.path.join(BENCH, "reference.py")],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        self.port = int(json.loads(line)["port"])
        self.pid = self.proc.pid
        return self

    def __exit__(self, *exc: Any) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class ServerProcess:
    """The real server (bench/serve.py) in its own process, driven over stdin/stdout."""

    def __init__(self, db: str, *, sim_speed: float = 200.0, max_queue: int = 1_000_000,
                 log_file: str | None = None, log_level: str | None = None,
                 extra: Sequence[str] = ()) -> None:
        self.db = db
        self.args = [PYTHON, os.path.join(BENCH, "serve.py"), "--db", db,
                     "--sim-speed", str(sim_speed), "--max-queue", str(max_queue),
                     "--log-file", log_file or os.devnull, *extra]
        if log_level:
            self.args += ["--log-level", log_level]

    def __enter__(self) -> ServerProcess:
        self.spawned = time.monotonic()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.info = self._read()
        self.port = int(self.info["port"])
        self.pid = self.proc.pid
        return self

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (Linux /proc)."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench/serve.py exited ({self.proc.wait(5)})")
        return json.loads(line)

    def call(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def __exit__(self, *exc: Any) -> None:
        with contextlib.suppress(Exception):
            self.call("quit")
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class FinalEvents(threading.Thread):
    """GET /events on a raw socket; stamps (CLOCK_MONOTONIC) the arrival of each task's
    final event. Reads chunked and close-delimited streams alike: a chunk's size line is
    a line of its own, which the parser skips."""

    FINAL = ("completed", "failed", "cancelled")

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True, name="sse-client")
        self.sock = socket.create_connection((HOST, port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(f"GET /events HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
        self.final: dict[str, float] = {}

    def run(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            now = time.monotonic()
            buf += chunk
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                lines = [x.strip() for x in block.decode("utf-8", "replace").split("\n")]
                if "event: task" not in lines:
                    continue
                data = json.loads(next(x[6:] for x in lines if x.startswith("data: ")))
                if data.get("status") in self.FINAL:
                    self.final.setdefault(data["task_id"], now)

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def temp_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="robot-bench-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- load ------------------------------------------------------------------------------------
@dataclass
class Load:
    rps: float
    p50: float  # ms
    p90: float
    p99: float
    requests: int
    errors: int  # socket errors and non-2xx
    tool: str
    raw: dict[str, Any] = field(default_factory=dict)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        return math.nan
    return float(m.group(1)) * _UNITS[m.group(2)]


def have_wrk() -> bool:
    return shutil.which("wrk") is not None and not os.environ.get("BENCH_NO_WRK")


def run_load(port: int, path: str, *, method: str = "GET", body: Any = None,
             connections: int = 16, duration: float = 4.0, tmp: str | None = None) -> Load:
    """Closed-loop keep-alive load for `duration` s: wrk if installed, else bench/loadgen.py."""
    if have_wrk():
        return _run_wrk(port, path, method=method, body=body, connections=connections,
                        duration=duration, tmp=tmp)
    out = loadgen(port, path, method=method, body=body, connections=connections,
                  duration=duration)
    return Load(out["rps"], out["p50"], out["p90"], out["p99"], out["requests"],
                out["errors"] + out["non2xx"], "loadgen.py", out)


def _run_wrk(port: int, path: str, *, method: str, body: Any, connections: int,
             duration: float, tmp: str | None) -> Load:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{duration:g}s", "--latency",
            "--timeout", "5s"]
    script = None
    if method != "GET" or body is not None:
        fd, script = tempfile.mkstemp(suffix=".lua", dir=tmp)
        payload = json.dumps(body) if body is not None else ""
        with os.fdopen(fd, "w") as f:
            f.write(f'wrk.method = "{method}"\n')
            f.write(f"wrk.body = [[{payload}]]\n")
            f.write('wrk.headers["Content-Type"] = "application/json"\n')
        args += ["-s", script]
    args.append(f"http://{HOST}:{port}{path}")
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 30,
                             check=True).stdout
    finally:
        if script:
            os.unlink(script)
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return Load(rps, _wrk_ms(lat.get("50", "")), _wrk_ms(lat.get("90", "")),
                _wrk_ms(lat.get("99", "")), total, errors, "wrk", {"stdout": out})


def loadgen(port: int, path: str, *, method: str = "GET", body: Any = None,
            connections: int = 16, duration: float = 4.0, rate: float = 0.0,
            max_requests: int = 10_000_000) -> dict[str, Any]:
    """bench/loadgen.py in its own process; blocks until it is done."""
    proc = start_loadgen(port, path, method=method, body=body, connections=connections,
                         duration=duration, rate=rate, max_requests=max_requests)
    return finish_loadgen(proc, duration)


def start_loadgen(port: int, path: str, *, method: str = "GET", body: Any = None,
                  connections: int = 16, duration: float = 4.0, rate: float = 0.0,
                  max_requests: int = 10_000_000) -> subprocess.Popen[str]:
    args = [PYTHON, os.path.join(BENCH, "loadgen.py"), "--port", str(port), "--path", path,
            "--method", method, "--connections", str(connections),
            "--duration", str(duration), "--rate", str(rate),
            "--max-requests", str(max_requests)]
    if body is not None:
        args += ["--body", json.dumps(body)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def finish_loadgen(proc: subprocess.Popen[str], duration: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=duration + 60)
    return json.loads(out)
