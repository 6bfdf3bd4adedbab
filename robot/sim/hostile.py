"""The simulator's hostile fault modes: a robot that misbehaves in volume ("flood",
"noise") or in shape ("deep_result"), so tests and the soak script can prove that such a
robot cannot hurt the host.

- "flood": after a motion command's ack, progress lines at ``flood_rate`` per second for
  ``flood_seconds`` (real time, whatever the sim speed), then the command as usual.
- "noise": after a motion command's ack, ``os.urandom`` bytes at ``noise_rate`` per second
  for ``noise_seconds``, every chunk ending with ``\\n`` so the next real line starts
  clean, then the command as usual.
- "deep_result": a successful result whose data also has ``"nested"``, a list
  ``deep_levels`` deep.

The functions take the engine and the job; the settings are the ones the job captured
when it started (``SimEngine.hostile_settings``), so changing them mid-command does not
affect it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

FLOOD_RATE = 1000.0
FLOOD_SECONDS = 20.0
NOISE_RATE = 1_000_000
NOISE_SECONDS = 5.0
DEEP_LEVELS = 985
BEFORE_MOTION = ("flood", "noise")
FLOOD_TICK_S = 0.01
NOISE_TICK_S = 0.02
# After a stall (a host that stopped reading) at most this much backlog goes in one
# write: the flood resumes as a burst, not as one unbounded buffer.
MAX_BACKLOG_S = 0.1
# Stands in for the deep list while the wire formats the line: json.dumps itself gives up
# with RecursionError near 1000 levels, so the list is spliced in as text.
_DEEP_MARK = "robot-sim-deep-result"


@dataclass(frozen=True)
class Settings:
    flood_rate: float
    flood_seconds: float
    flood_items: bool
    noise_rate: int
    noise_seconds: float
    deep_levels: int


class Job(Protocol):
    """What a hostile mode reads of the engine's job (robot/sim/engine.py's ``_Job``)."""

    msg_id: Any
    cmd: str
    mode: str | None
    hostile: Settings  # captured when the job started
    stop: threading.Event


class Engine(Protocol):
    """What a hostile mode uses of the engine (robot/sim/engine.py's ``SimEngine``):
    described here, so this module does not import the engine that imports it."""

    heartbeat_s: float
    _wire: Any

    def _send(self, obj: dict[str, Any], *, job: Any = None, cmd: str | None = None) -> None:
        ...

    def _send_many(self, events: list[dict[str, Any]], *, job: Any = None) -> None: ...

    def _write(self, data: bytes) -> None: ...


def before_motion(engine: Engine, job: Job) -> bool:
    """Flood or noise for a motion job; False if a STOP ended it (the command's own
    wait then ends at once with the usual "aborted" result)."""
    if job.mode == "flood":
        return flood(engine, job)
    if job.mode == "noise":
        return noise(engine, job)
    return True


def _paced(job: Job, rate: float, seconds: float, tick: float,
           send: Callable[[int, int], None]) -> bool:
    """Call ``send(already_sent, count)`` every ``tick`` so that ``rate`` units per second
    go out for ``seconds``; False if STOPped.

    What is due is computed from the elapsed time, not counted per tick, so a slow
    write or a late wake-up does not lower the rate: the next batch is larger.
    """
    total = round(rate * seconds)
    if total <= 0:
        return not job.stop.is_set()
    start = time.monotonic()
    end = start + seconds
    burst = max(1, int(rate * MAX_BACKLOG_S))
    sent = 0
    while True:
        now = time.monotonic()
        finished = now >= end
        due = total if finished else min(total, int(rate * (now - start)))
        if due > sent:
            count = min(due - sent, burst)
            send(sent, count)
            sent += count
        if finished:
            return not job.stop.is_set()
        next_tick = start + tick * (int((now - start) / tick) + 1)
        if job.stop.wait(max(min(next_tick, end) - time.monotonic(), 0.0)):
            return False


def flood(engine: Engine, job: Job) -> bool:
    """Progress lines for the job at the flood rate, a batch of whole lines per write."""
    cfg = job.hostile
    if engine._wire.name != "json":
        # The text protocol has no line for a progress without a bottle: nothing to flood.
        return not job.stop.is_set()

    def send(sent: int, count: int) -> None:
        events: list[dict[str, Any]] = []
        for k in range(sent + 1, sent + count + 1):
            event: dict[str, Any] = {"id": job.msg_id, "type": "progress", "done": k,
                                     "total": None, "message": f"flood {k}"}
            if cfg.flood_items:
                event["item"] = {"flood": k}
            events.append(event)
        engine._send_many(events, job=job)

    return _paced(job, cfg.flood_rate, cfg.flood_seconds, FLOOD_TICK_S, send)


def noise(engine: Engine, job: Job) -> bool:
    """Random bytes at the noise rate, in chunks that each end with a newline.

    Heartbeats still go out between chunks: noise is not a valid message, so without
    them a long noise would look to the host like a silent robot.
    """
    cfg = job.hostile
    next_beat = time.monotonic() + engine.heartbeat_s

    def send(sent: int, count: int) -> None:
        nonlocal next_beat
        engine._write(os.urandom(count - 1) + b"\n")
        if time.monotonic() >= next_beat:
            engine._send({"type": "heartbeat"}, job=job)
            next_beat = time.monotonic() + engine.heartbeat_s

    return _paced(job, cfg.noise_rate, cfg.noise_seconds, NOISE_TICK_S, send)


def wants_deep(job: Job, success: bool) -> bool:
    # Not PING: the host's handshake must still get the link ready, or nothing else
    # (the commands whose deep result is the test) would ever be sent.
    return success and job.mode == "deep_result" and job.cmd != "PING"


def deep_list_text(levels: int) -> bytes:
    """``[[...[1]...]]`` with ``levels`` brackets (at least one)."""
    levels = max(1, levels)
    return b"[" * levels + b"1" + b"]" * levels


def send_deep_result(engine: Engine, event: dict[str, Any], job: Job) -> None:
    """The result ``event`` with ``data.nested`` added, as one line."""
    cfg = job.hostile
    data = dict(event.get("data") or {})
    data["nested"] = _DEEP_MARK
    body = engine._wire.format({**event, "data": data}, job.cmd)
    if body is None:
        return
    # A wire that does not carry data (text) has no mark: its line goes out unchanged.
    body = body.replace(json.dumps(_DEEP_MARK).encode(), deep_list_text(cfg.deep_levels), 1)
    engine._write(body + engine._wire.newline)
