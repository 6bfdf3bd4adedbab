"""Soak, hostile mode: one server facing a misbehaving robot (bench/soak.py --mode hostile).

The simulator in fault mode flood / noise / deep_result for a few tasks, then one healthy
task; reads must stay 200 and the healthy task must complete. Prints when the healthy task
ran, the server's RSS, its log lines and the robot's skipped lines (docs/durability.md).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections import Counter
from typing import Any

import requests
from common import Row, rss_kib, temp_dir

from robot.sim.simulator import FAULT_MODES
from soaks.harness import (
    SOAK_FINAL,
    SOAK_TIMEOUT,
    MainServer,
    free_port,
    ident,
    keep_logs,
    params_for,
    run_bounded,
    start_sim,
)

HOSTILE = ("flood", "noise", "deep_result")


# -- hostile mode ----------------------------------------------------------------------------
class Monitor(threading.Thread):
    """Reads GET /task/<id> and GET /tasks every 0.1 s; samples the server's RSS."""

    def __init__(self, url: str, pid: int) -> None:
        super().__init__(name="soak-monitor", daemon=True)
        self.url, self.pid = url, pid
        self.ids: list[str] = []
        self.stop = threading.Event()
        self.reads = self.ok = 0
        self.failures: Counter[str] = Counter()
        self.max_read_s = 0.0
        self.peak_rss = 0

    def run(self) -> None:
        session = requests.Session()
        while not self.stop.wait(0.1):
            try:
                self.peak_rss = max(self.peak_rss, rss_kib(self.pid))
            except OSError:
                pass
            for path in [f"/task/{t}" for t in list(self.ids)] + ["/tasks?limit=20"]:
                t0 = time.monotonic()
                try:
                    status = str(session.get(self.url + path, timeout=SOAK_TIMEOUT).status_code)
                except requests.RequestException as exc:
                    status = type(exc).__name__
                self.max_read_s = max(self.max_read_s, time.monotonic() - t0)
                self.reads += 1
                if status == "200":
                    self.ok += 1
                else:
                    what = "/task/<id>" if path.startswith("/task/") else "/tasks"
                    self.failures[f"{what} {status}"] += 1


def wait_final(session: requests.Session, url: str, task_id: str,
               deadline: float) -> dict[str, Any]:
    """The task once final, or as it is at the deadline (asked at least once)."""
    doc: dict[str, Any] = {"status": "unanswered"}
    while True:
        try:
            doc = session.get(f"{url}/task/{task_id}", params={"wait": 1},
                              timeout=SOAK_TIMEOUT).json()
        except (requests.RequestException, ValueError):
            time.sleep(0.2)
        if doc.get("status") in SOAK_FINAL or time.monotonic() >= deadline:
            return doc


def transcript_times(session: requests.Session, url: str, task_id: str) -> list[float]:
    """Times (epoch s) of the lines the server exchanged with the robot for the task."""
    try:
        doc = session.get(f"{url}/task/{task_id}/transcript", timeout=SOAK_TIMEOUT).json()
        return [float(e["t"]) for e in doc["transcript"] if e.get("dir") in ("tx", "rx")]
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return []


def count_lines(paths: list[str]) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as fh:
            total += sum(1 for _ in fh)
    return total


def log_lines_by_logger(paths: list[str]) -> Counter[str]:
    """Lines per logger name ("asctime LEVEL name: message"); continuation lines of a
    multi-line record (a traceback) count under "(continued)"."""
    names: Counter[str] = Counter()
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split(" ", 4)
                ok = len(parts) == 5 and parts[3].endswith(":")
                names[parts[3][:-1] if ok else "(continued)"] += 1
    return names


def describe(doc: dict[str, Any]) -> str:
    code = (doc.get("result") or {}).get("code")
    return doc.get("status", "?") + (f" ({code})" if code else "")


def run_hostile(args: argparse.Namespace, fault: str) -> tuple[dict[str, Any], bool]:
    if fault not in FAULT_MODES:
        raise SystemExit(f"the simulator has no fault mode {fault!r} (FAULT_MODES: "
                         f"{FAULT_MODES}); robot/sim/engine.py lacks the hostile modes")
    t_start = time.monotonic()
    seconds = {"flood": args.flood_seconds, "noise": args.noise_seconds}.get(fault, 0.0)
    budget = args.duration or (seconds * args.hostile_tasks + 60)
    f: dict[str, Any] = {"mode": "hostile", "fault": fault, "hostile_tasks": args.hostile_tasks,
                         "fault_seconds": seconds, "deadline_s": budget}
    with temp_dir() as tmp:
        sim = start_sim(tmp, args.speed)
        for name in ("flood_rate", "flood_seconds", "flood_items", "noise_rate",
                     "noise_seconds", "deep_levels"):
            setattr(sim, name, getattr(args, name))
        sim.set_fault(fault)
        log_file = os.path.join(tmp, "server.log")
        server = MainServer(["--mode", "queue", "--robot", sim.path, "--db",
                             os.path.join(tmp, "tasks.db"), "--log-level", "INFO",
                             "--log-file", log_file], free_port(), os.path.join(tmp, "server.out"))
        monitor: Monitor | None = None
        try:
            server.start()
            server.wait_health()
            assert server.pid is not None
            f["rss_start_kib"] = rss_kib(server.pid)
            monitor = Monitor(server.url, server.pid)
            monitor.start()
            session = requests.Session()
            ids = []
            for n in range(args.hostile_tasks):
                r = session.post(server.url + "/", json={"cmd_type": "MOVE_TO",
                                 "params": params_for(0, n)}, timeout=SOAK_TIMEOUT)
                ids.append(r.json()["task_id"])
            monitor.ids[:] = ids
            deadline = t_start + budget
            last = ident(params_for(0, args.hostile_tasks - 1))
            got = sim.wait_for_command(lambda c: c.get("cmd") == "MOVE_TO"
                                       and ident(c.get("params")) == last,
                                       max(deadline - time.monotonic(), 0.1))
            f["last_hostile_reached_robot"] = got is not None
            sim.set_fault(None)  # read at receipt: the next command is healthy
            r = session.post(server.url + "/", json={"cmd_type": "MOVE_TO",
                             "params": params_for(1, 0)}, timeout=SOAK_TIMEOUT)
            healthy = r.json()["task_id"]
            monitor.ids.append(healthy)
            docs = [wait_final(session, server.url, t, deadline) for t in ids]
            t_hostile = time.monotonic()
            doc = wait_final(session, server.url, healthy, t_hostile + args.healthy_timeout)
            t_healthy = time.monotonic()
            f.update({
                "hostile_status": [describe(d) for d in docs],
                "hostile_s": t_hostile - t_start,
                "hostile_progress_items": [len((d.get("progress") or {}).get("items") or [])
                                           for d in docs],
                "hostile_items_dropped": [(d.get("progress") or {}).get("items_dropped")
                                          for d in docs],
                "healthy_status": describe(doc),
                "healthy_seen_after_hostile_s": (t_healthy - t_hostile
                                                 if doc.get("status") in SOAK_FINAL else None),
                "healthy_duration_s": doc.get("duration_s"),
            })
            # The robot lines' own times: the client's view is blurred by how long reading
            # a big hostile document takes.
            hostile_t = transcript_times(session, server.url, ids[-1])
            healthy_t = transcript_times(session, server.url, healthy)
            if hostile_t and healthy_t and doc.get("status") in SOAK_FINAL:
                f["healthy_start_after_hostile_s"] = min(healthy_t) - max(hostile_t)
                f["healthy_end_after_hostile_s"] = max(healthy_t) - max(hostile_t)
            robot = session.get(server.url + "/robot", timeout=SOAK_TIMEOUT).json()
            queue = session.get(server.url + "/queue/status", timeout=SOAK_TIMEOUT).json()
            f.update({"skipped_lines": robot.get("skipped_lines"), "lines_in": robot.get(
                "lines_in"), "paused_at_end": queue.get("paused"),
                "pause_code": queue.get("pause_code")})
        except (requests.RequestException, ValueError, KeyError, RuntimeError) as exc:
            f["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            if monitor is not None:
                monitor.stop.set()
                monitor.join(15)
            server.stop()
            f["sim_stopped"] = run_bounded(sim.stop, 15)
            logs = [os.path.join(tmp, n) for n in os.listdir(tmp) if n.startswith("server.log")]
            by_logger = log_lines_by_logger(logs)
            f["log_file_lines"] = sum(by_logger.values())
            f["log_access_lines"] = by_logger.pop("server.access", 0)
            f["log_other_by_logger"] = dict(by_logger.most_common(5))
            f["stdout_lines"] = count_lines([server.out_path])
            keep_logs(tmp, args.keep_logs, fault)
    if monitor is not None:
        f.update({"reads": monitor.reads, "reads_200": monitor.ok,
                  "read_failures": dict(monitor.failures), "max_read_s": monitor.max_read_s,
                  "peak_rss_kib": max(monitor.peak_rss, f.get("rss_start_kib", 0))})
    f["wall_s"] = time.monotonic() - t_start
    ok = (f.get("healthy_status") == "completed" and f.get("reads", 0) > 0
          and f.get("reads") == f.get("reads_200"))
    return f, ok


def hostile_rows(f: dict[str, Any]) -> list[Row]:
    def g(key: str, digits: int = 2) -> str:
        v = f.get(key, "-")
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)
    reads_ok = f.get("reads", 0) > 0 and f.get("reads") == f.get("reads_200")
    rows = [
        Row("hostile task(s) final status", ", ".join(f.get("hostile_status", ["-"])),
            verdict="info"),
        Row("hostile task(s) progress items kept / dropped",
            f"{f.get('hostile_progress_items')} / {f.get('hostile_items_dropped')}",
            verdict="info"),
        Row("hostile phase s (submit to last hostile final)", g("hostile_s"), verdict="info"),
        Row("healthy next task", g("healthy_status"), target="completed",
            verdict="met" if f.get("healthy_status") == "completed" else "MISSED"),
        Row("healthy: first line to robot / its result, s after the hostile result",
            f"{g('healthy_start_after_hostile_s', 3)} / {g('healthy_end_after_hostile_s', 3)}",
            verdict="info"),
        Row("healthy seen final s after the hostile one (client)",
            g("healthy_seen_after_hostile_s"), verdict="info"),
        Row("GET /task, /tasks answered 200", f"{f.get('reads_200', 0)}/{f.get('reads', 0)}",
            target="all", verdict="met" if reads_ok else "MISSED"),
        Row("read failures", json.dumps(f.get("read_failures", {})), verdict="info"),
        Row("slowest read s", g("max_read_s"), verdict="info"),
        Row("server RSS start / peak MiB", f"{f.get('rss_start_kib', 0) / 1024:.1f} / "
            f"{f.get('peak_rss_kib', 0) / 1024:.1f}", verdict="info"),
        Row("log lines: --log-file (incl. rotated) / stdout",
            f"{f.get('log_file_lines')} / {f.get('stdout_lines')}", verdict="info"),
        Row("log-file lines not access log, by logger",
            f"{sum(f.get('log_other_by_logger', {}).values())} "
            f"{json.dumps(f.get('log_other_by_logger', {}))}", verdict="info"),
        Row("robot skipped_lines / lines_in", f"{g('skipped_lines')} / {g('lines_in')}",
            verdict="info"),
        Row("queue paused at end (pause_code)", f"{g('paused_at_end')} ({g('pause_code')})",
            verdict="info"),
        Row("wall s", g("wall_s"), verdict="info"),
    ]
    if "error" in f:
        rows.append(Row("error", f["error"], verdict="MISSED"))
    return rows
