"""Prometheus metrics: a tiny registry and the text exposition format, by hand.

Two kinds of numbers, on purpose:
- read at scrape time from state the server already keeps (task counts per status,
  which the manager holds incrementally and the store keeps across restarts and
  pruning; queue depth; the robot link's connected flag and reconnect count; whether
  the task database takes writes; the size of its WAL file), so they can never drift
  from `GET /queue/status`, `GET /robot` and `GET /health`;
- fed by hooks, for what nothing else records: task durations
  (`observe_task`, called when a task that ran ends) and HTTP responses by status
  class (`count_http`, called for every response sent).

Format: https://prometheus.io/docs/instrumenting/exposition_formats/ (text 0.0.4).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from tasks.models import TaskStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# 0.1 s (a PING-like command) to 10 min (a full rack scan at real speed).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TASK_STATUSES = tuple(s.value for s in TaskStatus if s.is_final)
HTTP_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def _value(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return repr(float(v)) if v != int(v) else str(int(v))


def _escape(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


class Histogram:
    """One histogram per label value set; cumulative buckets as Prometheus wants."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(sorted(buckets))
        self._series: dict[tuple[tuple[str, str], ...], list[float]] = {}

    def observe(self, value: float, labels: Mapping[str, str]) -> None:
        key = tuple(sorted(labels.items()))
        # counts per bucket (not cumulative) + the +Inf bucket, then sum
        series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                series[i] += 1
                break
        else:
            series[len(self.buckets)] += 1
        series[-1] += value

    def samples(self, name: str) -> Iterable[str]:
        for key, series in sorted(self._series.items()):
            labels = dict(key)
            running = 0.0
            for i, bound in enumerate((*self.buckets, math.inf)):
                running += series[i]
                yield f"{name}_bucket{_labels({**labels, 'le': _value(bound)})} {_value(running)}"
            yield f"{name}_sum{_labels(labels)} {_value(series[-1])}"
            yield f"{name}_count{_labels(labels)} {_value(running)}"


class Metrics:
    """Process-wide metrics of one server. Thread-safe; hooks are cheap (one lock)."""

    def __init__(self, buckets: Sequence[float] = DURATION_BUCKETS) -> None:
        self._lock = threading.Lock()
        self._durations = Histogram(buckets)
        self._http: dict[str, int] = dict.fromkeys(HTTP_CLASSES, 0)
        self._store_state: Callable[[], tuple[bool, str | None]] | None = None
        self._wal_bytes: Callable[[], int] | None = None
        self._identity: dict[str, str] | None = None

    def identify(self, name: str, labels: Mapping[str, str]) -> None:
        """This server's name and labels (--name, --labels): the robot_server_info series,
        so one monitoring view tells a lab's robot PCs apart (or joins on them)."""
        self._identity = {"name": name, **labels}

    def watch_store(self, state: Callable[[], tuple[bool, str | None]]) -> None:
        """Where the store gauge is read at scrape time: () -> (writable, error)."""
        self._store_state = state

    def watch_wal(self, size: Callable[[], int]) -> None:
        """Where the WAL gauge is read at scrape time: () -> the WAL file's bytes."""
        self._wal_bytes = size

    # -- hooks -------------------------------------------------------------------------------
    def observe_task(self, cmd_type: str, status: str, duration: float | None) -> None:
        """A task that ran on the robot ended (any final status) after `duration` s."""
        if duration is None or duration < 0 or math.isnan(duration):
            return  # cancelled while pending: it never ran, so it has no duration
        with self._lock:
            self._durations.observe(duration, {"cmd_type": cmd_type})

    def count_http(self, status: int) -> None:
        cls = f"{int(status) // 100}xx"
        with self._lock:
            self._http[cls] = self._http.get(cls, 0) + 1

    # -- exposition ------------------------------------------------------------------------
    def render(self, queue: Mapping[str, Any], robot: Mapping[str, Any]) -> str:
        """The text format, from `manager.queue_status()` and `app.robot_info()`."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(samples)

        if self._identity is not None:  # an info metric: a gauge of 1 carrying labels
            family("robot_server_info", "gauge",
                   "This robot server's name and labels (--name, --labels); always 1.",
                   [f"robot_server_info{_labels(self._identity)} 1"])
        finished = {"completed": queue.get("completed_tasks", 0),
                    "failed": queue.get("failed_tasks", 0),
                    "cancelled": queue.get("cancelled_tasks", 0)}
        family("robot_tasks_total", "counter", "Tasks that reached a final state, by status.",
               (f"robot_tasks_total{_labels({'status': s})} {_value(finished[s])}"
                for s in TASK_STATUSES))
        family("robot_queue_depth", "gauge", "Tasks waiting in the queue (pending).",
               [f"robot_queue_depth {_value(queue.get('pending_tasks', 0))}"])
        family("robot_task_running", "gauge", "1 while a task is on the robot.",
               [f"robot_task_running {1 if queue.get('running_task') else 0}"])
        family("robot_queue_paused", "gauge", "1 while the queue is paused (held).",
               [f"robot_queue_paused {1 if queue.get('paused') else 0}"])
        with self._lock:
            durations = list(self._durations.samples("robot_task_duration_seconds"))
            http = dict(self._http)
        family("robot_task_duration_seconds", "histogram",
               "Time on the robot of tasks that ran, by command type.", durations)
        family("robot_connected", "gauge", "1 while the serial link to the robot is open.",
               [f"robot_connected {1 if robot.get('connected') else 0}"])
        family("robot_link_reconnects_total", "counter",
               "Times the robot link was re-established.",
               [f"robot_link_reconnects_total {_value(robot.get('reconnects') or 0)}"])
        family("robot_link_skipped_lines_total", "counter",
               "Lines from the robot that were skipped (noise, invalid, stale, too long).",
               [f"robot_link_skipped_lines_total {_value(robot.get('skipped_lines') or 0)}"])
        if self._store_state is not None:
            writable = self._store_state()[0]
            family("robot_task_store_writable", "gauge",
                   "1 while the task database takes writes (0: submits get 503).",
                   [f"robot_task_store_writable {1 if writable else 0}"])
        if self._wal_bytes is not None:
            family("robot_server_db_wal_bytes", "gauge",
                   "Size of the task database's write-ahead log file (bytes).",
                   [f"robot_server_db_wal_bytes {_value(self._wal_bytes())}"])
        family("robot_http_requests_total", "counter", "HTTP responses sent, by status class.",
               (f"robot_http_requests_total{_labels({'class': c})} {_value(n)}"
                for c, n in sorted(http.items())))
        return "\n".join(out) + "\n"
