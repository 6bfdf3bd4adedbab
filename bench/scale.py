"""History size: the same requests with 100 and with 100,000 finished tasks in the store;
start-up time to the first accepted request; RSS.

For each size: a fresh database (bench/filldb.py), the server started in its own
process (start-up = spawn -> first answered GET /health, and RobotServer.start()
alone), then GET /task/<id> (a task from the middle of the history), GET
/queue/status and POST / (queue paused) with 16 keep-alive clients, median of --reps
runs, and the reference for GET /queue/status in the same run.

Run: .venv/bin/python bench/scale.py [--reps 3] [--duration 3] [--big 100000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    MOVE,
    ReferenceServer,
    Row,
    ServerProcess,
    fmt,
    http_request,
    median,
    print_table,
    run_load,
    temp_dir,
    verdict,
)
from filldb import fill  # noqa: E402


def first_answer(port: int, timeout: float = 20.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http_request(port, "GET", "/health", timeout=2)[0] == 200:
                return time.monotonic()
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not answer")
        time.sleep(0.002)


def one_size(tmp: str, n: int, reps: int, duration: float, ref_port: int) -> dict[str, Any]:
    db = os.path.join(tmp, f"hist{n}.db")
    fill_s = fill(db, n)
    out: dict[str, Any] = {"n": n, "fill_s": fill_s}
    with ServerProcess(db, log_file=os.path.join(tmp, f"hist{n}.log")) as srv:
        out["startup_spawn_s"] = first_answer(srv.port) - srv.spawned
        out["startup_start_s"] = srv.info["start_s"]
        out["rss_start"] = srv.call("rss")["rss_kib"]
        http_request(srv.port, "POST", "/queue/pause")
        task = f"task_hist_{n // 2:08d}"
        cases = [("GET /task/<id>", "GET", f"/task/{task}", None),
                 ("GET /queue/status", "GET", "/queue/status", None),
                 ("POST / (paused)", "POST", "/", MOVE)]
        for name, method, path, body in cases:
            loads = [run_load(srv.port, path, method=method, body=body, duration=duration,
                              tmp=tmp) for _ in range(reps)]
            out[name] = loads
            print(f"  {n:>7} tasks  {name:<18} {median([x.rps for x in loads]):8.0f} req/s  "
                  f"p99 {median([x.p99 for x in loads]):7.2f} ms", file=sys.stderr, flush=True)
        out["ref_status"] = [run_load(ref_port, "/queue/status", duration=duration, tmp=tmp)
                             for _ in range(reps)]
        out["rss_end"] = srv.call("rss")["rss_kib"]
    return out


def measure(reps: int, duration: float, small: int, big: int) -> list[dict[str, Any]]:
    with temp_dir() as tmp, ReferenceServer() as ref:
        return [one_size(tmp, n, reps, duration, ref.port) for n in (small, big)]


def rows(results: list[dict[str, Any]]) -> list[Row]:
    small, big = results
    n = f"{big['n']:,}"
    out = []
    for name in ("GET /task/<id>", "GET /queue/status", "POST / (paused)"):
        t_small = 1000 / median([x.rps for x in small[name]])  # ms of server time per request
        t_big = 1000 / median([x.rps for x in big[name]])
        ratio = t_big / t_small
        out.append(Row(f"{name}: time per request at {n} / at {small['n']} tasks (1/req/s, "
                       "16 clients)", f"{t_big:.3f} ms / {t_small:.3f} ms", "",
                       f"{ratio:.2f}x", "<= 1.5x", verdict(ratio <= 1.5)))
        out.append(Row(f"{name}: p99 ms at {n} / at {small['n']}",
                       f"{fmt(median([x.p99 for x in big[name]]))} / "
                       f"{fmt(median([x.p99 for x in small[name]]))}", verdict="info"))
    srv = median([x.rps for x in big["GET /queue/status"]])
    ref = median([x.rps for x in big["ref_status"]])
    out.append(Row(f"GET /queue/status with {n} tasks: req/s", fmt(srv), fmt(ref),
                   f"{srv / ref:.2f}x", ">= 0.65x", verdict(srv / ref >= 0.65)))
    for r in (small, big):
        ok = r["startup_spawn_s"] <= 2.0 if r is big else None
        out.append(Row(f"start-up with {r['n']:,} tasks: spawn -> first answer "
                       "(RobotServer.start() alone) s",
                       f"{r['startup_spawn_s']:.2f} ({r['startup_start_s']:.3f})", "", "",
                       "<= 2 s" if r is big else "", verdict(ok)))
    out.append(Row(f"RSS MiB with {n} tasks: after start / after the loads",
                   f"{big['rss_start'] / 1024:.1f} / {big['rss_end'] / 1024:.1f}", "", "",
                   "< 100 MB", verdict(big["rss_end"] / 1024 * 1.048576 < 100)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--small", type=int, default=100)
    p.add_argument("--big", type=int, default=100_000)
    args = p.parse_args()
    print_table("History size", rows(measure(args.reps, args.duration, args.small, args.big)))


if __name__ == "__main__":
    main()
