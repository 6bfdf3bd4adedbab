"""Webhooks' cost and speed (docs/performance.md "Webhooks"), side by side in one run.

- The queue with and without subscribers: a burst of tasks on a fast simulated robot run
  (a) with no subscription, (b) with one healthy receiver, (c) with three, (d) with one
  that hangs; scenarios alternate over --reps rounds, each on a fresh database. Reported:
  tasks/s, the median gap between one task's end and the next one's start (from the
  database's times), and each as a ratio of (a) of the same round.
- Event latency: a task's end (its committed `ended`) to the receiver holding the POST.
- The tail of a burst: from the last task's end to its event's arrival (the sender
  keeping up with a queue that ends a task every few milliseconds).

Run: .venv/bin/python bench/features/webhooks.py [--tasks 200] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import requests  # noqa: E402

from server.runtime import RobotServer  # noqa: E402
from settings import Settings  # noqa: E402
from tests.webhook_receiver import Receiver  # noqa: E402

SCAN = {"cmd_type": "SCAN_QRCODE", "params": {"rack": "A", "positions": [1, 2, 3]}}
SCENARIOS = ("none", "one", "three", "hanging")


def settings(db: str) -> Settings:
    return replace(Settings(), host="127.0.0.1", port=0, robot="sim", sim_speed=20000.0,
                   db=db, robot_timeout=5.0, command_timeouts={}, shutdown_grace=1.0,
                   reconnect_min=0.05, reconnect_max=0.5, robot_settle=0.05,
                   webhook_timeout=60.0, log_level="WARNING")


class RemoteReceiver:
    """tests/webhook_receiver.py's Receiver in a process of its own, so its threads do not
    share the server's interpreter lock; it reports what it got when told to stop."""

    def __init__(self, hang: bool) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--receiver",
                                      "hang" if hang else "ok"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def finish(self) -> list[tuple[float, str, str]]:
        """(wall time received, type, task_id or "") of each POST."""
        out, _ = self.proc.communicate("stop\n", timeout=60)
        return [tuple(x) for x in json.loads(out)]


def serve_receiver(mode: str) -> None:
    receiver = Receiver(then="hang" if mode == "hang" else 200)
    print(receiver.url, flush=True)
    sys.stdin.readline()
    offset = time.time() - time.monotonic()
    got = [(r.time + offset, r.type, r.json["data"].get("task_id", "")) for r in receiver.received]
    receiver.release.set()
    print(json.dumps(got), flush=True)
    receiver.close()


def run(scenario: str, tasks: int) -> dict[str, float]:
    receivers: list[RemoteReceiver] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = RobotServer(settings(os.path.join(tmp, "t.db")), static_dir=None)
        server.start()
        try:
            count = {"none": 0, "one": 1, "three": 3, "hanging": 1}[scenario]
            for _ in range(count):
                receivers.append(RemoteReceiver(hang=scenario == "hanging"))
                r = requests.post(server.url + "/webhooks", timeout=10,
                                  json={"url": receivers[-1].url, "events": ["*"]})
                assert r.status_code == 201, r.text
            session = requests.Session()
            session.post(server.url + "/queue/pause", timeout=10)
            ids = [session.post(server.url + "/", json=SCAN, timeout=10).json()["task_id"]
                   for _ in range(tasks)]
            session.post(server.url + "/queue/resume", timeout=10)
            last = ids[-1]
            while session.get(f"{server.url}/task/{last}", params={"wait": 10},
                              timeout=30).json()["status"] not in ("completed", "failed"):
                pass
            with sqlite3.connect(server.settings.db) as conn:
                rows = conn.execute("SELECT started, ended FROM tasks ORDER BY seq").fetchall()
                ended = dict(conn.execute("SELECT task_id, ended FROM tasks"))
            gaps = [b[0] - a[1] for a, b in zip(rows, rows[1:], strict=False)]
            out = {"tasks_s": len(rows) / (rows[-1][1] - rows[0][0]),
                   "gap_ms": statistics.median(gaps) * 1000}
            if scenario in ("one", "three"):
                def delivered() -> int:
                    with sqlite3.connect(server.settings.db) as conn:
                        return int(conn.execute("SELECT count(*) FROM deliveries WHERE "
                                                "status = 'delivered'").fetchone()[0])
                deadline = time.monotonic() + 120
                while delivered() < count * (tasks + 2) and time.monotonic() < deadline:
                    time.sleep(0.05)  # a bench's wait for the tail, not a test's sync
                got = [g for g in receivers[0].finish() if g[1].startswith("task.")]
                lat = sorted((at - ended[task_id]) * 1000 for at, _, task_id in got)
                out["latency_p50_ms"] = lat[len(lat) // 2]
                out["latency_p95_ms"] = lat[int(len(lat) * 0.95)]
                out["tail_ms"] = (max(at for at, _, _ in got) - rows[-1][1]) * 1000
            return out
        finally:
            server.stop()
            for receiver in receivers:
                if receiver.proc.poll() is None:
                    receiver.finish()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--receiver", choices=("ok", "hang"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.receiver:
        return serve_receiver(args.receiver)
    logging.basicConfig(level=logging.ERROR)  # not a "queue paused" line per run
    results: dict[str, list[dict[str, float]]] = {s: [] for s in SCENARIOS}
    for rep in range(args.reps):
        order = SCENARIOS[rep % 4:] + SCENARIOS[:rep % 4]  # each goes first once in 4
        for scenario in order:
            results[scenario].append(run(scenario, args.tasks))
    base = results["none"]
    print(f"{args.tasks} tasks per run, {args.reps} rounds; median over rounds "
          "(ratio: to 'none' of the same round)")
    print(f"{'subscribers':<12}{'tasks/s':>9}{'ratio':>7}{'gap ms':>8}{'lat p50':>9}"
          f"{'lat p95':>9}{'tail ms':>9}")
    for scenario in SCENARIOS:
        runs = results[scenario]
        rate = statistics.median(r["tasks_s"] for r in runs)
        ratio = statistics.median(r["tasks_s"] / b["tasks_s"] for r, b in zip(runs, base,
                                                                           strict=True))
        gap = statistics.median(r["gap_ms"] for r in runs)
        extra = "".join(f"{statistics.median(r[k] for r in runs):>9.1f}" if k in runs[0]
                        else f"{'-':>9}" for k in ("latency_p50_ms", "latency_p95_ms",
                                                   "tail_ms"))
        print(f"{scenario:<12}{rate:>9.1f}{ratio:>7.2f}{gap:>8.2f}{extra}")


if __name__ == "__main__":
    main()
