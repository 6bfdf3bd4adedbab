"""Soak, mix-up mode (bench/soak.py --mode mixup): kill -9 cycles against a text-protocol
robot that is still working when the server comes back (issue 27).

The robot is tests/text_robots.py's ``TextRobot`` in this process, so it outlives every
kill: it answers PING and STOP at once, **ignores STOP** and **queues** commands that
arrive while it works (the worst firmware the soak met). The server runs
``--robot-protocol text --auto-resume``: every restart that found an interrupted task
resumes at once. Retrying clients submit SCAN_QRCODEs, each for a rack of its own
(``C<client>K<k>``); the robot's bottle codes name the rack they were scanned in. At the
end: tasks completed with another rack's codes (must be 0), scans the robot received
while busy, racks scanned twice, out-of-step failures.

``BENCH_SERVER_ROOT`` runs another checkout's main.py (e.g. the commit before the fix,
for the side-by-side figure in docs/durability.md); ``--settle`` is then left out if
that checkout has no ``--robot-settle``.
"""

from __future__ import annotations

import argparse
import os
import random
import threading
import time
from collections import Counter
from typing import Any

import requests
from common import ROOT, Row, temp_dir

from soaks.clients import Client, list_tasks
from soaks.harness import SOAK_TIMEOUT, MainServer, free_port, keep_logs, log, run_bounded
from tests.text_robots import TextRobot


class ScanClient(Client):
    """Submits scans of racks of its own, each retried with its key until 202
    (clients.Client's loop); remembers which rack each accepted task scans."""

    name_prefix = "mixup-client"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.acked: dict[str, str] = {}  # task_id -> rack

    def request(self, k: int) -> tuple[str, dict[str, Any]]:
        rack = f"C{self.idx}K{k}"
        return (f"mixup-{self.run_id}-{self.idx}-{k}",
                {"cmd_type": "SCAN_QRCODE",
                 "params": {"rack": rack, "positions": list(range(1, self.rng.randint(2, 6)))}})

    def accepted(self, key: str, k: int, body: dict[str, Any], r: requests.Response,
                 attempts: int) -> None:
        self.acked[r.json()["task_id"]] = body["params"]["rack"]


def _foreign(task: dict[str, Any]) -> bool:
    """A completed scan holding a bottle that is not its own rack's, or not its positions."""
    params = task.get("params") or {}
    rack, asked = params.get("rack"), params.get("positions") or []
    bottles = (task.get("result") or {}).get("scanned_bottles") or []
    got = [(b.get("position"), b.get("code")) for b in bottles]
    return got != [(p, f"{rack}-{p:02d}") for p in asked]


def _supports_settle() -> bool:
    root = os.environ.get("BENCH_SERVER_ROOT") or ROOT
    with open(os.path.join(root, "main.py"), encoding="utf-8") as fh:
        return "--robot-settle" in fh.read()


def run_mixup(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    figures: dict[str, Any] = {"mode": "mixup", "seed": args.seed, "clients": args.clients}
    robot = TextRobot(per_bottle=args.per_bottle, busy_every=0.05, stop_aborts=False,
                      queue_commands=True).start()
    settle = ["--robot-settle", str(args.settle)] if _supports_settle() else []
    figures["settle_flag"] = bool(settle)
    with temp_dir() as tmp:
        server = MainServer(["--mode", "queue", "--robot", robot.path, "--robot-protocol", "text",
                             "--db", os.path.join(tmp, "tasks.db"), "--auto-resume",
                             "--log-level", "WARNING", *settle], free_port(),
                            os.path.join(tmp, "server.out"))
        stop = threading.Event()
        clients = [ScanClient(i, server.url, str(args.seed), stop, random.Random(rng.random()),
                              args.think, args.give_up) for i in range(args.clients)]
        kills = 0
        tasks: list[dict[str, Any]] = []
        try:
            server.start()
            server.wait_health()
            for c in clients:
                c.start()
            for _ in range(args.cycles):
                time.sleep(rng.uniform(*args.interval))
                server.kill9()
                server.start()
                server.wait_health()
                kills += 1
                log(f"mixup: kill {kills}/{args.cycles}; robot busy: {robot.busy}")
            stop.set()
            for c in clients:
                c.join(args.give_up + 15)
            session = requests.Session()
            deadline = time.monotonic() + args.drain_timeout
            while time.monotonic() < deadline:
                status = session.get(server.url + "/queue/status", timeout=SOAK_TIMEOUT).json()
                if status.get("pending_tasks") == 0 and not status.get("running_task"):
                    break
                time.sleep(0.2)
            tasks = list_tasks(session, server.url, time.monotonic() + 60)
        except (requests.RequestException, ValueError, KeyError, RuntimeError) as exc:
            figures["error"] = f"{type(exc).__name__}: {exc}"
            log(f"mixup soak aborted: {figures['error']}")
        finally:
            stop.set()
            server.kill9()
            run_bounded(robot.stop, 15)
            keep_logs(tmp, args.keep_logs, "mixup")
    statuses = Counter(t["status"] + (f"({(t.get('result') or {}).get('code')})"
                                      if t["status"] != "completed" else "") for t in tasks)
    completed = [t for t in tasks if t["status"] == "completed"]
    scans = Counter(line.split()[1] for line in robot.scans() if len(line.split()) > 1)
    figures.update({
        "kills": kills, "acknowledged": sum(len(c.acked) for c in clients),
        "tasks": len(tasks), "completed": len(completed),
        "foreign_codes": sum(1 for t in completed if _foreign(t)),
        "out_of_step": statuses.get("failed(robot_out_of_step)", 0),
        "sent_while_busy": len(robot.sent_while_busy),
        "racks_scanned_twice": sum(1 for n in scans.values() if n > 1),
        "statuses": dict(statuses), "wall_s": time.monotonic() - t0,
    })
    ok = figures["foreign_codes"] == 0 and "error" not in figures
    return figures, ok


def mixup_rows(f: dict[str, Any]) -> list[Row]:
    def zero(what: str, key: str) -> Row:
        return Row(what, str(f[key]), target="0", verdict="met" if f[key] == 0 else "MISSED")
    rows = [
        Row("kill -9 + restart (auto-resume)", str(f["kills"]), verdict="info"),
        Row("acknowledged scans", str(f["acknowledged"]), verdict="info"),
        Row("completed scans", str(f["completed"]), verdict="info"),
        zero("completed with another rack's codes", "foreign_codes"),
        zero("scans sent while the robot was busy", "sent_while_busy"),
        zero("racks the robot scanned twice", "racks_scanned_twice"),
        Row("failed robot_out_of_step (caught, queue held)", str(f["out_of_step"]),
            verdict="info"),
        Row("statuses", ", ".join(f"{k} {v}" for k, v in sorted(f["statuses"].items())),
            verdict="info"),
        Row("--robot-settle given", str(f["settle_flag"]), verdict="info"),
        Row("wall s", f"{f['wall_s']:.1f}", verdict="info"),
    ]
    if "error" in f:
        rows.append(Row("error", f["error"], verdict="MISSED"))
    return rows
