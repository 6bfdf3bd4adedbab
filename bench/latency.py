"""Latencies measured on the wire, with CLOCK_MONOTONIC shared by all processes.

Under background load (bench/loadgen.py in its own process: 16 clients polling
GET /queue/status at about 500 requests/s in all):
* completion -> client: the simulator's write of the result line (and the store's
  commit of the final state) -> the moment a client has the final state, via
  `GET /task/<id>?wait=` (long-poll) and via `GET /events` (SSE), both open at once;
* POST /robot/stop -> the simulator reads the STOP line (client send time -> read);
* gap on the wire between a result and the next command, with a backlog;
Then, without background load: 1,000 open long-poll/SSE connections vs. ordinary
requests' p99 and the server's RSS.

Run: .venv/bin/python bench/latency.py [--tasks 60] [--stops 30]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    BENCH,
    HOST,
    PYTHON,
    FinalEvents,
    Row,
    ServerProcess,
    finish_loadgen,
    fmt,
    http_request,
    median,
    percentile,
    print_table,
    run_load,
    start_loadgen,
    temp_dir,
    verdict,
)

SIM_SPEED = 40.0  # MOVE_TO takes 2 s / 40 = 50 ms; one bottle of SCAN_QRCODE 0.5 s


def move(i: int, y: int = 0) -> dict[str, Any]:
    """A MOVE_TO whose params identify it on the wire (x in -999..999)."""
    return {"cmd_type": "MOVE_TO", "params": {"x": i % 1999 - 999, "y": y, "z": 0}}


def sim_lines(marks: list[list[Any]]) -> list[tuple[float, str, dict[str, Any] | str]]:
    out = []
    for t, kind, text in marks:
        if kind == "commit":
            out.append((t, kind, text))
            continue
        for line in text.splitlines():
            try:
                out.append((t, kind, json.loads(line)))
            except ValueError:
                pass
    return out


def completion(srv: ServerProcess, n: int) -> dict[str, list[float]]:
    """Submit n MOVE_TO one after another; stamp the long-poll and SSE arrivals."""
    sse = FinalEvents(srv.port)
    sse.start()
    conn = http.client.HTTPConnection(HOST, srv.port, timeout=30)
    arrivals: dict[str, tuple[int, float, bool]] = {}
    srv.call("marks")
    for i in range(n):
        body = move(i, 1)
        x = body["params"]["x"]
        conn.request("POST", "/", json.dumps(body), {"Content-Type": "application/json"})
        task_id = json.loads(conn.getresponse().read())["task_id"]
        sent = time.monotonic()
        conn.request("GET", f"/task/{task_id}?wait=10")
        doc = json.loads(conn.getresponse().read())
        arrivals[task_id] = (x, time.monotonic(), sent)
        assert doc["status"] == "completed", doc
    deadline = time.monotonic() + 5
    while len(sse.final) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    sse.close()
    conn.close()
    lines = sim_lines(srv.call("marks")["marks"])
    id_of_x = {m["params"]["x"]: m["id"] for t, k, m in lines
               if k == "rx" and isinstance(m, dict) and m.get("cmd") == "MOVE_TO"
               and m["params"].get("y") == 1}
    result_at = {m["id"]: t for t, k, m in lines
                 if k == "tx" and isinstance(m, dict) and m.get("type") == "result"}
    commit_at = {m: t for t, k, m in lines if k == "commit"}
    out: dict[str, list[float]] = {"longpoll": [], "sse": [], "longpoll_commit": [],
                                   "sse_commit": [], "late_requests": []}
    for task_id, (x, got, sent) in arrivals.items():
        wrote = result_at[id_of_x[x]]
        if sent > wrote:  # the long-poll was not waiting yet: not a wake-up measurement
            out["late_requests"].append(1)
            continue
        out["longpoll"].append((got - wrote) * 1000)
        out["longpoll_commit"].append((got - commit_at[task_id]) * 1000)
        if task_id in sse.final:
            out["sse"].append((sse.final[task_id] - wrote) * 1000)
            out["sse_commit"].append((sse.final[task_id] - commit_at[task_id]) * 1000)
    return out


def stops(srv: ServerProcess, n: int) -> list[float]:
    """A SCAN runs; POST /robot/stop; the simulator reads STOP. Client send -> sim read."""
    conn = http.client.HTTPConnection(HOST, srv.port, timeout=30)
    out = []
    for i in range(n):
        http_request(srv.port, "POST", "/queue/resume")
        status, doc = http_request(srv.port, "POST", "/", {
            "cmd_type": "SCAN_QRCODE", "params": {"rack": "B", "positions": [1, 2, 3, 4, 5]}})
        task_id = doc["task_id"]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # bounded: until it runs on the robot
            if http_request(srv.port, "GET", f"/task/{task_id}")[1]["status"] == "running":
                break
            time.sleep(0.005)
        time.sleep(0.02 + 0.01 * (i % 5))
        srv.call("marks")
        body = b""
        sent = time.monotonic()
        conn.request("POST", "/robot/stop", body)
        conn.getresponse().read()
        http_request(srv.port, "GET", f"/task/{task_id}?wait=10")
        read_at = [t for t, k, m in sim_lines(srv.call("marks")["marks"])
                   if k == "rx" and isinstance(m, dict) and m.get("cmd") == "STOP"]
        if read_at:
            out.append((read_at[0] - sent) * 1000)
    conn.close()
    http_request(srv.port, "POST", "/queue/resume")
    return out


def gaps(srv: ServerProcess, n: int) -> list[float]:
    """n tasks queued while paused, then resumed: result line -> next command line."""
    http_request(srv.port, "POST", "/queue/pause")
    ids = [http_request(srv.port, "POST", "/", move(i, 2))[1]["task_id"]
           for i in range(n)]
    srv.call("marks")
    http_request(srv.port, "POST", "/queue/resume")
    http_request(srv.port, "GET", f"/task/{ids[-1]}?wait=30")
    lines = [(t, k, m) for t, k, m in sim_lines(srv.call("marks")["marks"])
             if isinstance(m, dict)]
    out = []
    last_result: float | None = None
    for t, kind, m in lines:
        if kind == "tx" and m.get("type") == "result":
            last_result = t
        elif kind == "rx" and m.get("cmd") == "MOVE_TO" and last_result is not None:
            out.append((t - last_result) * 1000)
            last_result = None
    return out


def open_connections(tmp: str, total: int = 1000, sse: int = 200,
                     probe_s: float = 3.0) -> dict[str, Any]:
    """Ordinary GET p99 and RSS with `total` long-lived requests open (sse of them SSE)."""
    with ServerProcess(os.path.join(tmp, "conn.db"), sim_speed=SIM_SPEED,
                       log_file=os.path.join(tmp, "conn.log")) as srv:
        status, doc = http_request(srv.port, "POST", "/", move(1))
        done = doc["task_id"]
        http_request(srv.port, "GET", f"/task/{done}?wait=10")
        http_request(srv.port, "POST", "/queue/pause")
        waiting = http_request(srv.port, "POST", "/", move(2))[1]["task_id"]
        base = [run_load(srv.port, f"/task/{done}", duration=probe_s, tmp=tmp)
                for _ in range(2)]
        rss_base = srv.call("rss")
        holders, held = [], []
        for path, count in (("/events", sse), (f"/task/{waiting}?wait=60", total - sse)):
            proc = subprocess.Popen(
                [PYTHON, os.path.join(BENCH, "loadgen.py"), "--port", str(srv.port), "--path",
                 path, "--hold", str(count), "--duration", "50"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            held.append(json.loads(proc.stdout.readline()))
            holders.append(proc)
        time.sleep(0.5)
        rss_loaded = srv.call("rss")
        loaded = [run_load(srv.port, f"/task/{done}", duration=probe_s, tmp=tmp)
                  for _ in range(2)]
        # Wake-up of every waiter at once: resume, the task finishes, 800 answers go out.
        for proc in holders:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(30)
    return {"base": base, "loaded": loaded, "rss_base": rss_base, "rss_loaded": rss_loaded,
            "held": held}


def measure(n_tasks: int, n_stops: int, n_gap: int) -> dict[str, Any]:
    with temp_dir() as tmp:
        with ServerProcess(os.path.join(tmp, "tasks.db"), sim_speed=SIM_SPEED,
                           log_file=os.path.join(tmp, "server.log")) as srv:
            # Warm up: the first task makes the ETA history and opens connections.
            http_request(srv.port, "GET", "/task/" + http_request(
                srv.port, "POST", "/", move(0))[1]["task_id"] + "?wait=10")
            bg = start_loadgen(srv.port, "/queue/status", connections=16, rate=500,
                               duration=90)
            t0 = time.monotonic()
            comp = completion(srv, n_tasks)
            stop = stops(srv, n_stops)
            gap = gaps(srv, n_gap)
            bg.terminate()
            bg_out = None
            try:
                bg_out = finish_loadgen(bg, 5)
            except Exception:
                pass
            elapsed = time.monotonic() - t0
        conns = open_connections(tmp)
    return {"completion": comp, "stop": stop, "gap": gap, "conns": conns,
            "background": bg_out, "elapsed": elapsed}


def rows(r: dict[str, Any]) -> list[Row]:
    c = r["completion"]
    out = []
    for key, label in (("longpoll", "long-poll ?wait="), ("sse", "SSE /events")):
        v = c[key]
        p50, p99 = percentile(v, 50), percentile(v, 99)
        out.append(Row(f"completion -> client, {label} (sim result write; n={len(v)}): "
                       "p50 / p99 ms", f"{fmt(p50, 2)} / {fmt(p99, 2)}", "", "",
                       "p50 <= 2, p99 <= 10", verdict(p50 <= 2 and p99 <= 10)))
        w = c[key + "_commit"]
        out.append(Row(f"completion -> client, {label} (store commit): p50 / p99 ms",
                       f"{fmt(percentile(w, 50), 2)} / {fmt(percentile(w, 99), 2)}",
                       verdict="info"))
    lp50 = percentile(c["longpoll"], 50)
    out.append(Row("completion -> client, the guide's 2 s polling (computed: uniform wait "
                   "+ long-poll p50): mean / p99 ms", f"{fmt(1000 + lp50)} / "
                   f"{fmt(1980 + lp50)}", "", "", "", "info"))
    s = r["stop"]
    out.append(Row(f"POST /robot/stop -> STOP read by the robot (n={len(s)}): p50 / p99 ms",
                   f"{fmt(percentile(s, 50), 2)} / {fmt(percentile(s, 99), 2)}", "", "",
                   "p99 <= 10", verdict(percentile(s, 99) <= 10)))
    g = r["gap"]
    out.append(Row(f"result -> next command on the wire, backlog (n={len(g)}): p50 / p99 ms",
                   f"{fmt(percentile(g, 50), 2)} / {fmt(percentile(g, 99), 2)}", "", "",
                   "p50 <= 2", verdict(percentile(g, 50) <= 2)))
    bg = r["background"]
    if bg:
        out.append(Row("background load GET /queue/status: req/s, p99 ms",
                       f"{fmt(bg['rps'])}, {fmt(bg['p99'], 2)}", verdict="info"))
    k = r["conns"]
    base = median([x.p99 for x in k["base"]])
    loaded = median([x.p99 for x in k["loaded"]])
    held = "; ".join(f"{h['opened']} opened, statuses {h['statuses']}" for h in k["held"])
    out.append(Row("open long-lived connections (SSE; long-poll)", held, verdict="info"))
    out.append(Row("GET /task/<id> p99 ms, 16 clients: with them / without",
                   f"{fmt(loaded, 2)} / {fmt(base, 2)}", "", f"{loaded / base:.2f}x",
                   "<= 2x", verdict(loaded <= 2 * base)))
    out.append(Row("GET /task/<id> req/s: with them / without",
                   f"{fmt(median([x.rps for x in k['loaded']]))} / "
                   f"{fmt(median([x.rps for x in k['base']]))}", verdict="info"))
    out.append(Row("server RSS MiB (threads): with them / without",
                   f"{k['rss_loaded']['rss_kib'] / 1024:.1f} ({k['rss_loaded']['threads']}) / "
                   f"{k['rss_base']['rss_kib'] / 1024:.1f} ({k['rss_base']['threads']})",
                   verdict="info"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=60)
    p.add_argument("--stops", type=int, default=30)
    p.add_argument("--gap-tasks", type=int, default=60)
    args = p.parse_args()
    print_table("Latency", rows(measure(args.tasks, args.stops, args.gap_tasks)))


if __name__ == "__main__":
    main()
