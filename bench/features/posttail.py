"""POST's tail and the WAL under sustained submits (issue 34: checkpoints never inside a
COMMIT), before and after, side by side in one run.

16 keep-alive clients POST MOVE_TO for --duration s (wrk, else bench/loadgen.py) to a
fresh server on a fresh database per round, in a process of its own (bench/serve.py,
INFO access lines to a log file as in production); the queue is paused (the submit path
alone) unless --running (the simulated robot then runs tasks meanwhile: the worker's
commits and the webhook dispatcher's compete with the submits'). Rounds alternate: before,
after; then after, before; ... "before" is the checkout at BENCH_SERVER_ROOT (default
/tmp/an/wt-before, a worktree of 7ca2dd7: SQLite's automatic checkpoint inside the COMMIT
that passes 1,000 pages); "after" is this tree (a checkpointer thread).

Per round: submits/s, POST p50/p99/max (ms), the WAL file's size sampled every 0.25 s
(max; final: at the end of the load; idle: once the server had --idle s without a
submit), and the WAL's restarts during the load (the checkpoint counter in the WAL file's
header: each restart is a completed checkpoint after which the WAL was written from its
beginning again). The table: median over rounds (max: the largest), after beside before.

Run: /tmp/venvM/bin/python bench/features/posttail.py [--duration 60] [--reps 2]
     [--running] [--idle 2] [--before-root /tmp/an/wt-before]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sqlite3
import struct
import sys
import threading
import time
from typing import Any

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, BENCH)
from audit import environ  # noqa: E402
from common import (  # noqa: E402
    MOVE,
    ROOT,
    Load,
    Row,
    ServerProcess,
    _wrk_ms,
    fmt,
    have_wrk,
    http_request,
    loadgen,
    median,
    print_table,
    run_load,
    temp_dir,
)

CLIENTS = 16
SAMPLE_S = 0.25
BEFORE_ROOT = os.environ.get("BENCH_SERVER_ROOT") or "/tmp/an/wt-before"
P99_TARGET_MS = 10.0
WAL_BOUND = 64 * 2**20


def wal_size(db: str) -> int:
    try:
        return os.stat(db + "-wal").st_size
    except OSError:
        return 0


def wal_restarts(db: str) -> int | None:
    """The checkpoint sequence number in the WAL file's header (big-endian u32 at 12),
    which SQLite increments each time the WAL starts again; None: no header yet."""
    try:
        with open(db + "-wal", "rb") as f:
            head = f.read(32)
    except OSError:
        return None
    return struct.unpack_from(">I", head, 12)[0] if len(head) == 32 else None


class Sampler(threading.Thread):
    """The WAL file's size every SAMPLE_S until stopped."""

    def __init__(self, db: str) -> None:
        super().__init__(name="wal-sampler", daemon=True)
        self.db = db
        self.sizes: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.sizes.append(wal_size(self.db))
            self.done.wait(SAMPLE_S)

    def stop(self) -> list[int]:
        self.done.set()
        self.join()
        return self.sizes


def post_max_ms(raw: dict[str, Any]) -> float:
    """The slowest POST of a load: wrk's Latency max, or bench/loadgen.py's."""
    if "stdout" in raw:
        m = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", raw["stdout"])
        return _wrk_ms(m.group(1)) if m else float("nan")
    return float(raw.get("max", "nan"))


def post_load(port: int, duration: float, rate: float, tmp: str) -> Load:
    """Closed loop (wrk, else loadgen.py), or --rate submits/s over the clients (loadgen)."""
    if not rate:
        return run_load(port, "/", method="POST", body=MOVE, connections=CLIENTS,
                        duration=duration, tmp=tmp)
    out = loadgen(port, "/", method="POST", body=MOVE, connections=CLIENTS, duration=duration,
                  rate=rate)
    return Load(out["rps"], out["p50"], out["p90"], out["p99"], out["requests"],
                out["errors"] + out["non2xx"], "loadgen.py", out)


def one_round(side: str, root: str, tmp: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    db = os.path.join(tmp, f"{side}-{n}.db")
    srv = ServerProcess(db, log_file=os.path.join(tmp, f"{side}-{n}.log"),
                        extra=["--no-hooks"])
    with environ(BENCH_SERVER_ROOT=root):
        srv.__enter__()
    try:
        if not args.running:
            status, doc = http_request(srv.port, "POST", "/queue/pause")
            if status != 200:
                raise RuntimeError(f"{side}: POST /queue/pause answered {status} {doc}")
        post_load(srv.port, 1.0, args.rate, tmp)  # warm-up, not counted
        before = wal_restarts(db)
        sampler = Sampler(db)
        sampler.start()
        load = post_load(srv.port, args.duration, args.rate, tmp)
        sizes = sampler.stop()
        final = wal_size(db)
        after = wal_restarts(db)
        # Idle: after --idle s without a submit, one more, then the WAL's size (a WAL
        # restarted while idle is overwritten from its beginning: it does not grow).
        time.sleep(args.idle)
        http_request(srv.port, "POST", "/", MOVE)
        idle = wal_size(db)
    finally:
        srv.__exit__(None, None, None)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    restarts = (after - before) % 2**32 if before is not None and after is not None else None
    return {"rps": load.rps, "p50": load.p50, "p99": load.p99, "max": post_max_ms(load.raw),
            "errors": load.errors, "requests": load.requests, "wal_max": max(sizes, default=0),
            "wal_final": final, "wal_idle": idle, "restarts": restarts, "tasks": tasks,
            "tool": load.tool}


def mib(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"


def table(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    b, a = runs["before"], runs["after"]

    def med(side: list[dict[str, Any]], key: str) -> float:
        return median([r[key] for r in side if r[key] is not None])

    def big(side: list[dict[str, Any]], key: str) -> float:
        return max(r[key] for r in side)

    def ratio(x: float, y: float) -> str:
        return f"{y / x:.2f}x" if x else "-"

    p99_a, wal_a = med(a, "p99"), big(a, "wal_max")
    rows = [
        Row("submits/s (median)", fmt(med(a, "rps")), fmt(med(b, "rps")),
            ratio(med(b, "rps"), med(a, "rps")), "", "info"),
        Row("POST p50 ms (median)", fmt(med(a, "p50"), 2), fmt(med(b, "p50"), 2),
            ratio(med(b, "p50"), med(a, "p50")), "", "info"),
        Row("POST p99 ms (median)", fmt(p99_a, 2), fmt(med(b, "p99"), 2),
            ratio(med(b, "p99"), p99_a), f"<= {P99_TARGET_MS:g}",
            "met" if p99_a <= P99_TARGET_MS else "MISSED"),
        Row("POST p99 ms (worst round)", fmt(big(a, "p99"), 2), fmt(big(b, "p99"), 2),
            ratio(big(b, "p99"), big(a, "p99")), "", "info"),
        Row("POST max ms (worst round)", fmt(big(a, "max"), 1), fmt(big(b, "max"), 1),
            ratio(big(b, "max"), big(a, "max")), "", "info"),
        Row("WAL max, sampled every 0.25 s", mib(wal_a), mib(big(b, "wal_max")), "",
            "<= 64 MiB", "met" if wal_a <= WAL_BOUND else "MISSED"),
        Row("WAL at the end of the load (median)", mib(med(a, "wal_final")),
            mib(med(b, "wal_final")), "", "", "info"),
        Row(f"WAL after {args.idle:g} s idle and one submit (median)", mib(med(a, "wal_idle")),
            mib(med(b, "wal_idle")), "", "", "info"),
        Row("WAL restarts during the load (median)", fmt(med(a, "restarts"), 0),
            fmt(med(b, "restarts"), 0), "", "", "info"),
        Row("errors (socket or non-2xx, all rounds)", str(sum(r["errors"] for r in a)),
            str(sum(r["errors"] for r in b)), "", "0",
            "met" if not any(r["errors"] for r in a + b) else "MISSED"),
    ]
    mode = "running" if args.running else "paused"
    pace = f"{args.rate:g}/s" if args.rate else "closed loop"
    print_table(f"POST / with {CLIENTS} clients ({pace}), queue {mode}, {args.reps} x "
                f"{args.duration:g} s "
                f"per side, alternating (figure: after; reference: before)", rows)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load per round")
    p.add_argument("--reps", type=int, default=2, help="rounds per side")
    p.add_argument("--idle", type=float, default=2.0, help="idle seconds before the last POST")
    p.add_argument("--rate", type=float, default=0.0,
                   help="submits/s over the clients (bench/loadgen.py); 0: as fast as they go")
    p.add_argument("--running", action="store_true", help="the robot runs tasks meanwhile")
    p.add_argument("--before-root", default=BEFORE_ROOT)
    args = p.parse_args()
    if not os.path.isfile(os.path.join(args.before_root, "bench", "serve.py")):
        raise SystemExit(f"no checkout at {args.before_root} (git worktree add ... 7ca2dd7)")
    print(f"# machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, SQLite "
          f"{sqlite3.sqlite_version}, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"{'wrk' if have_wrk() else 'bench/loadgen.py'}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    roots = {"before": args.before_root, "after": ROOT}
    with temp_dir() as tmp:
        for rep in range(args.reps):
            order = ("before", "after") if rep % 2 == 0 else ("after", "before")
            for side in order:
                r = one_round(side, roots[side], tmp, rep, args)
                runs[side].append(r)
                print(f"  round {rep + 1} {side:<6} {r['rps']:7.0f} submits/s  p50 "
                      f"{r['p50']:6.2f}  p99 {r['p99']:7.2f}  max {r['max']:7.1f} ms  WAL max "
                      f"{mib(r['wal_max'])} final {mib(r['wal_final'])} idle "
                      f"{mib(r['wal_idle'])}  restarts {r['restarts']}  errors {r['errors']}",
                      file=sys.stderr, flush=True)
    table(runs, args)


if __name__ == "__main__":
    main()
