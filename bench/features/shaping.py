"""The cost of shaping the queue (docs/performance.md "Shaping the queue"), side by side
in one run.

- A move: POST /task/<id>/move to a random position, with 100 and with 1000 tasks
  waiting (each move rewrites the keys of the tasks between the two places, in one
  transaction): latency p50/p95.
- Reading a waiting task: GET /task/<id> of the last of 1000 (its ETA and waiting_for walk
  the queue), and GET /tasks?status=pending&limit=500 (waiting_for for a page).
- Skipping: the worker's throughput on a burst of tasks with nothing ahead of them, and
  with 500 tasks ahead whose not_before is tomorrow (each take walks past them); the
  scenarios alternate over --reps rounds; the ratio is to "nothing ahead" of the same round.

Run: .venv/bin/python bench/features/shaping.py [--tasks 200] [--reps 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import requests  # noqa: E402

from server.runtime import RobotServer  # noqa: E402
from settings import Settings  # noqa: E402
from tasks.models import format_time  # noqa: E402

PING = {"cmd_type": "PING"}


def start(db: str) -> RobotServer:
    server = RobotServer(replace(Settings(), host="127.0.0.1", port=0, robot="sim",
                                 sim_speed=20000.0, db=db, robot_timeout=5.0,
                                 command_timeouts={}, shutdown_grace=1.0, reconnect_min=0.05,
                                 reconnect_max=0.5, robot_settle=0.05, log_level="WARNING",
                                 max_queue=5000))
    server.start()
    return server


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def timed(call: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()  # type: ignore[operator]
        out.append((time.perf_counter() - t0) * 1000)
    return out


def reads_and_moves(tmp: str) -> None:
    for waiting in (100, 1000):
        one_size(tmp, waiting)


def one_size(tmp: str, waiting: int) -> None:
    server = start(os.path.join(tmp, f"moves-{waiting}.db"))
    s = requests.Session()
    s.post(server.url + "/queue/pause", timeout=10)
    ids = [s.post(server.url + "/", json=PING, timeout=10).json()["task_id"]
           for _ in range(waiting)]
    rnd = random.Random(1)

    def one_move() -> None:
        r = s.post(f"{server.url}/task/{rnd.choice(ids)}/move",
                   json={"position": rnd.randint(1, waiting)}, timeout=10)
        assert r.status_code == 200, r.text

    moves = timed(one_move, 200)
    print(f"move, {waiting:5d} waiting: p50 {pct(moves, .5):6.2f} ms  "
          f"p95 {pct(moves, .95):6.2f} ms")
    if waiting == 1000:
        last = list(server.manager.state.pending)[-1]
        gets = timed(lambda: s.get(f"{server.url}/task/{last}", timeout=10), 200)
        print(f"GET /task of the last of {waiting}: p50 {pct(gets, .5):6.2f} ms  "
              f"p95 {pct(gets, .95):6.2f} ms")
        pages = timed(lambda: s.get(server.url + "/tasks", timeout=10,
                                    params={"status": "pending", "limit": 500}), 50)
        print(f"GET /tasks?status=pending&limit=500: p50 {pct(pages, .5):6.2f} ms  "
              f"p95 {pct(pages, .95):6.2f} ms")
    server.stop()


def burst(tmp: str, name: str, tasks: int, ahead: int) -> float:
    server = start(os.path.join(tmp, f"burst-{name}-{time.monotonic_ns()}.db"))
    s = requests.Session()
    s.post(server.url + "/queue/pause", timeout=10)
    tomorrow = format_time(time.time() + 86400)
    for _ in range(ahead):
        s.post(server.url + "/", json={**PING, "not_before": tomorrow}, timeout=10)
    ids = [s.post(server.url + "/", json=PING, timeout=10).json()["task_id"]
           for _ in range(tasks)]
    t0 = time.perf_counter()
    s.post(server.url + "/queue/resume", timeout=10)
    while server.manager.views.count(status="completed") < tasks:
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    assert all(s.get(f"{server.url}/task/{i}", timeout=10).json()["status"] == "completed"
               for i in ids[-3:])
    server.stop()
    return tasks / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        reads_and_moves(tmp)
        rates: dict[str, list[float]] = {"nothing ahead": [], "500 not_before ahead": []}
        ratios = []
        for _ in range(args.reps):
            base = burst(tmp, "plain", args.tasks, 0)
            skip = burst(tmp, "skip", args.tasks, 500)
            rates["nothing ahead"].append(base)
            rates["500 not_before ahead"].append(skip)
            ratios.append(skip / base)
        for name, values in rates.items():
            print(f"burst of {args.tasks}, {name:22s}: {statistics.median(values):7.1f} tasks/s")
        print(f"ratio (500 ahead / nothing ahead), median of {args.reps} rounds: "
              f"{statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
