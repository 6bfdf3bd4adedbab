"""Sequences (docs/sequences.md) against the same work as single tasks, in one run.

* gap on the wire: the robot's result line of step k -> the next command line it reads,
  for a sequence of 51 fast steps and for 51 single tasks queued back to back (both
  queued while paused, then resumed), split at the store's COMMIT of step k's end;
* 1,000 steps, queued while paused: the POST /sequences round trip, resume -> last step
  done (with its gaps and the server's CPU time), GET /sequences/<id> latency and body
  size, the server's RSS; against 1,000 single tasks POSTed back to back on one
  connection and read back with GET /tasks pages (each case in a fresh server, both at
  the default --max-queue 1000); then the queue's limit with 1,000 pending steps.

Timestamps are the simulator's own (bench/serve.py hooks: line read, line written,
COMMIT returned), CLOCK_MONOTONIC in the server process. No background load.

Run: .venv/bin/python bench/sequences.py [--steps 51] [--rounds 3] [--big 1000]
"""

from __future__ import annotations

import argparse
import bisect
import http.client
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    HOST,
    Row,
    ServerProcess,
    fmt,
    median,
    percentile,
    print_table,
    temp_dir,
)

SIM_SPEED = 1000.0  # HOME takes 3 s / 1000 = 3 ms on the simulated robot
MAX_QUEUE = 1000  # the server's default --max-queue
HOME = {"cmd_type": "HOME"}
FINAL = ("completed", "failed", "cancelled")


class Conn:
    """One keep-alive connection; `call` answers (status, seconds, raw body)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=60)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, float, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        t0 = time.monotonic()
        self.conn.request(method, path, body=data, headers=headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        return resp.status, time.monotonic() - t0, raw

    def json(self, method: str, path: str, body: Any = None) -> Any:
        status, _, raw = self.call(method, path, body)
        doc = json.loads(raw)
        if status >= 400:
            raise RuntimeError(f"{method} {path}: {status} {doc}")
        return doc

    def wait_final(self, task_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doc = self.json("GET", f"/task/{task_id}?wait=10")
            if doc["status"] in FINAL:
                return doc
        raise RuntimeError(f"task {task_id} did not finish within {timeout} s")

    def close(self) -> None:
        self.conn.close()


# -- gap between steps on the wire ----------------------------------------------------------
def wire_events(marks: list[list[Any]]) -> tuple[list[tuple[float, Any]],
                                                 dict[Any, float], list[float]]:
    """Commands read (time, id) in order, result lines written {id: time}, COMMITs."""
    commands: list[tuple[float, Any]] = []
    results: dict[Any, float] = {}
    commits: list[float] = []
    for t, kind, text in marks:
        if kind == "commit":
            commits.append(t)
            continue
        for line in text.splitlines():
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if not isinstance(m, dict):
                continue
            if kind == "rx" and "cmd" in m:
                commands.append((t, m.get("id")))
            elif kind == "tx" and m.get("type") == "result":
                results.setdefault(m.get("id"), t)
    return commands, results, sorted(commits)


def gaps_of(marks: list[list[Any]]) -> dict[str, list[float]]:
    """ms: command k's result line -> command k+1 read ("gap"), paired by the
    command's id; split at the first COMMIT after the result (the end of task k):
    "to_commit", "after_commit"."""
    commands, results, commits = wire_events(marks)
    out: dict[str, list[float]] = {"gap": [], "to_commit": [], "after_commit": []}
    for (_, msg_id), (t_next, _) in zip(commands, commands[1:], strict=False):
        done = results.get(msg_id)
        if done is None:
            continue
        out["gap"].append((t_next - done) * 1000)
        i = bisect.bisect_left(commits, done)
        if i < len(commits) and commits[i] <= t_next:
            out["to_commit"].append((commits[i] - done) * 1000)
            out["after_commit"].append((t_next - commits[i]) * 1000)
    return out


def gap_round(srv: ServerProcess, conn: Conn, n: int, as_sequence: bool) -> dict[str, list[float]]:
    """n HOME queued while paused (one sequence, or n single tasks), then resumed."""
    conn.json("POST", "/queue/pause")
    if as_sequence:
        last = conn.json("POST", "/sequences", {"steps": [HOME] * n})["task_ids"][-1]
    else:
        last = [conn.json("POST", "/", HOME)["task_id"] for _ in range(n)][-1]
    srv.call("marks")
    conn.json("POST", "/queue/resume")
    doc = conn.wait_final(last)
    assert doc["status"] == "completed", doc
    return gaps_of(srv.call("marks")["marks"])


def measure_gaps(tmp: str, n: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    pooled: dict[str, dict[str, list[float]]] = {
        k: {"gap": [], "to_commit": [], "after_commit": []} for k in ("sequence", "single")}
    with ServerProcess(os.path.join(tmp, "gaps.db"), sim_speed=SIM_SPEED, max_queue=MAX_QUEUE,
                       log_file=os.path.join(tmp, "gaps.log")) as srv:
        conn = Conn(srv.port)
        conn.wait_final(conn.json("POST", "/", HOME)["task_id"])  # warm-up
        for r in range(rounds):  # alternate the order: neither always comes first
            order = (True, False) if r % 2 == 0 else (False, True)
            for as_sequence in order:
                got = gap_round(srv, conn, n, as_sequence)
                for key, values in got.items():
                    pooled["sequence" if as_sequence else "single"][key].extend(values)
        conn.close()
    return pooled


# -- 1,000 steps -----------------------------------------------------------------------------
def big(tmp: str, n: int, as_sequence: bool) -> dict[str, Any]:
    """n HOME in a fresh server at the default --max-queue, submitted while paused (one
    POST /sequences, or n POST / back to back on one connection), then resumed."""
    out: dict[str, Any] = {}
    name = "bigseq" if as_sequence else "bigone"
    with ServerProcess(os.path.join(tmp, name + ".db"), sim_speed=SIM_SPEED,
                       max_queue=MAX_QUEUE, log_file=os.path.join(tmp, name + ".log")) as srv:
        conn = Conn(srv.port)
        conn.wait_final(conn.json("POST", "/", HOME)["task_id"])  # warm-up
        conn.json("POST", "/queue/pause")
        out["rss_before"] = srv.call("rss")["rss_kib"]
        body = {"name": "bench", "steps": [HOME] * n}
        t0 = time.monotonic()
        if as_sequence:
            out["request_bytes"] = len(json.dumps(body).encode())
            status, took, raw = conn.call("POST", "/sequences", body)
            assert status == 202, raw
            reply = json.loads(raw)
            sid, last = reply["sequence_id"], reply["task_ids"][-1]
            out["post_ms"] = [took * 1000]
        else:
            out["post_ms"] = []
            for _ in range(n):
                status, took, raw = conn.call("POST", "/", HOME)
                assert status == 202, raw
                out["post_ms"].append(took * 1000)
            last = json.loads(raw)["task_id"]
        out["submit_ms"] = (time.monotonic() - t0) * 1000
        out["rss_submitted"] = srv.call("rss")["rss_kib"]
        srv.call("marks")
        cpu0, t0 = srv.cpu_seconds(), time.monotonic()
        conn.json("POST", "/queue/resume")
        doc = conn.wait_final(last, timeout=120)
        out["run_s"] = time.monotonic() - t0
        out["cpu_s"] = srv.cpu_seconds() - cpu0
        assert doc["status"] == "completed", doc
        out["gaps"] = gaps_of(srv.call("marks")["marks"])
        out["rss_after"] = srv.call("rss")["rss_kib"]
        # Reading the state of all n: the sequence's document, or GET /tasks pages of
        # 500 (the most a page holds).
        times, size = [], 0
        for _ in range(20 if as_sequence else 10):
            t1, size, cursor, pages = time.monotonic(), 0, None, 0
            while True:
                if as_sequence:
                    path = f"/sequences/{sid}"
                else:
                    path = "/tasks?limit=500" + (f"&cursor={cursor}" if cursor else "")
                status, _, raw = conn.call("GET", path)
                assert status == 200, raw
                size += len(raw)
                pages += 1
                cursor = None if as_sequence else json.loads(raw)["next_cursor"]
                if as_sequence or pages * 500 >= n or cursor is None:
                    break
            times.append((time.monotonic() - t1) * 1000)
        out["read_ms"], out["read_bytes"], out["read_pages"] = times, size, pages
        out["rss_read"] = srv.call("rss")["rss_kib"]
        if as_sequence:
            out.update(limit(conn, body))
        conn.close()
    return out


def limit(conn: Conn, body: dict[str, Any]) -> dict[str, Any]:
    """With the queue paused, a full-size sequence fills the default queue."""
    out: dict[str, Any] = {}
    conn.json("POST", "/queue/pause")
    status, _, raw = conn.call("POST", "/sequences", body)
    out["full_accept"] = status
    sid = json.loads(raw).get("sequence_id")
    status, _, raw = conn.call("POST", "/", HOME)
    out["full_single"] = (status, json.loads(raw).get("code"))
    status, _, raw = conn.call("POST", "/sequences", {"steps": [HOME]})
    out["full_sequence"] = (status, json.loads(raw).get("code"))
    if sid:
        status, took, raw = conn.call("POST", f"/sequences/{sid}/cancel")
        out["cancel"] = (status, took * 1000)
    conn.json("POST", "/queue/resume")
    return out


# -- report ----------------------------------------------------------------------------------
def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def pcts(values: list[float], qs: tuple[int, ...] = (50, 90, 100), digits: int = 2) -> str:
    return " / ".join(fmt(percentile(values, q), digits) for q in qs)


def rows(g: dict[str, dict[str, list[float]]], s: dict[str, Any], o: dict[str, Any],
         n_steps: int, n_big: int) -> list[Row]:
    out = []
    seq, one = g["sequence"]["gap"], g["single"]["gap"]
    out.append(Row(f"result -> next command on the wire, {n_steps} HOME queued while paused "
                   f"(n={len(seq)} / {len(one)}): p50 / p90 / worst ms", pcts(seq), pcts(one),
                   f"{ratio(percentile(seq, 50), percentile(one, 50))} p50, "
                   f"{ratio(percentile(seq, 100), percentile(one, 100))} worst",
                   verdict="info"))
    for key, label in (("to_commit", "result -> COMMIT of that step's end"),
                       ("after_commit", "COMMIT -> next command")):
        a, b = g["sequence"][key], g["single"][key]
        out.append(Row(f"  split: {label}: p50 / p90 / worst ms", pcts(a), pcts(b),
                       ratio(median(a), median(b)) + " p50", verdict="info"))
    out.append(Row(f"submit {n_big:,} (paused): one POST /sequences vs {n_big:,} POST / "
                   "back to back, ms", fmt(s["submit_ms"], 1), fmt(o["submit_ms"], 0),
                   ratio(s["submit_ms"], o["submit_ms"]), verdict="info"))
    out.append(Row("  request bytes; one POST / p50 / worst ms", f"{s['request_bytes']:,}",
                   pcts(o["post_ms"], (50, 100)), verdict="info"))
    out.append(Row(f"resume -> last of {n_big:,} done (HOME, 3 ms each): s; per step ms",
                   f"{s['run_s']:.2f}; {s['run_s'] * 1000 / n_big:.2f}",
                   f"{o['run_s']:.2f}; {o['run_s'] * 1000 / n_big:.2f}",
                   ratio(s["run_s"], o["run_s"]), verdict="info"))
    for key, label in (("gap", "gaps on the wire in that run"),
                       ("after_commit", "  split: COMMIT -> next command")):
        a, b = s["gaps"][key], o["gaps"][key]
        out.append(Row(f"  {label} (n={len(a)} / {len(b)}): p50 / p90 / worst ms", pcts(a),
                       pcts(b), ratio(percentile(a, 50), percentile(b, 50)) + " p50",
                       verdict="info"))
    out.append(Row("  server CPU in that run: s; per step ms",
                   f"{s['cpu_s']:.2f}; {s['cpu_s'] * 1000 / n_big:.2f}",
                   f"{o['cpu_s']:.2f}; {o['cpu_s'] * 1000 / n_big:.2f}",
                   ratio(s["cpu_s"], o["cpu_s"]), verdict="info"))
    out.append(Row(f"read all {n_big:,} states: GET /sequences/<id> vs GET /tasks "
                   f"x{o['read_pages']} pages of 500: p50 / worst ms",
                   pcts(s["read_ms"], (50, 100)), pcts(o["read_ms"], (50, 100)),
                   ratio(percentile(s["read_ms"], 50), percentile(o["read_ms"], 50)),
                   verdict="info"))
    out.append(Row("  body bytes (completed)", f"{s['read_bytes']:,}", f"{o['read_bytes']:,}",
                   ratio(s["read_bytes"], o["read_bytes"]), verdict="info"))
    out.append(Row("server RSS MiB: before / submitted (pending) / all done / after the reads",
                   " / ".join(mib(s[k]) for k in ("rss_before", "rss_submitted", "rss_after",
                                                 "rss_read")),
                   " / ".join(mib(o[k]) for k in ("rss_before", "rss_submitted", "rss_after",
                                                 "rss_read")), verdict="info"))
    out.append(Row(f"--max-queue {MAX_QUEUE}, paused: a {n_big:,}-step sequence; then "
                   "POST /; then a 1-step sequence",
                   f"{s['full_accept']}; {s['full_single'][0]} {s['full_single'][1]}; "
                   f"{s['full_sequence'][0]} {s['full_sequence'][1]}", verdict="info"))
    if "cancel" in s:
        out.append(Row(f"  POST /sequences/<id>/cancel of that pending {n_big:,}-step "
                       "sequence: status, ms", f"{s['cancel'][0]}, {fmt(s['cancel'][1], 1)}",
                       verdict="info"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=51, help="steps (tasks) per gap round")
    p.add_argument("--rounds", type=int, default=3, help="gap rounds of each kind")
    p.add_argument("--big", type=int, default=1000, help="steps of the big sequence")
    args = p.parse_args()
    t0 = time.monotonic()
    with temp_dir() as tmp:
        g = measure_gaps(tmp, args.steps, args.rounds)
        s = big(tmp, args.big, as_sequence=True)
        o = big(tmp, args.big, as_sequence=False)
    print_table(f"Sequences vs single tasks (sim speed {SIM_SPEED:g}; figure = sequence, "
                "reference = single tasks)", rows(g, s, o, args.steps, args.big))
    print(f"(took {time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
