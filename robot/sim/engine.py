"""The simulated robot's command engine, shared by every wire protocol.

Commands arrive already parsed (robot/sim/wire.py) as a canonical name and params;
replies leave as protocol-neutral events, dicts shaped like the JSON protocol's
messages (``{"type": "ack" | "progress" | "result" | "heartbeat" | "log" | "alarm"}``),
which the wire adapter turns into its own line or into nothing. Jobs, durations,
STOP, and the fault modes therefore behave the same whatever the robot speaks.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from robot.sim import hostile as sim_hostile

log = logging.getLogger("robot.simulator")

FIRMWARE = "robot-sim 1.0"
FAULT_MODES = (None, "garbage", "hang_after_ack", "no_ack", "fail", "heartbeat_only", "alarm",
               "flood", "noise", "deep_result", *("foreign_item", "repeat_item", "short_count"))
# Scans out of step with their command (robot/link/fit.py must catch each): an extra bottle
# at a position not asked for, the first bottle twice, the last one missing.
OUT_OF_STEP_MODES = ("foreign_item", "repeat_item", "short_count")
MOTION = ("HOME", "MOVE_TO", "PICK", "PLACE", "SCAN_QRCODE", "DISPENSE")
# Seconds at speed 1.
DURATIONS = {"HOME": 3.0, "MOVE_TO": 2.0, "PICK": 4.0, "PLACE": 4.0, "DISPENSE": 3.0}
SCAN_PER_BOTTLE = 20.0
KNOWN = ("PING", "HOME", "MOVE_TO", "SCAN_QRCODE", "PICK", "PLACE", "GET_STATUS", "STOP",
         "DISPENSE")
ABORTED = "aborted"
ALARM_MESSAGE = "collision detected"
DISPENSE_NEEDS = "DISPENSE needs an integer position and a number volume_ul > 0"


def qr_code(rack: str, position: int) -> str:
    """Deterministic bottle code for (rack, position)."""
    digest = hashlib.sha1(f"{rack}:{position}".encode()).hexdigest()[:6]
    return f"{rack}-{position:02d}-{digest}"


def bottle_code(rack: str, position: int) -> str | None:
    """The code read at (rack, position), None where the simulated rack has no bottle."""
    # Every tenth slot is empty so hosts meet "no bottle" without a special fault mode.
    return None if position % 10 == 0 else qr_code(rack, position)


@dataclass
class Parsed:
    """One host line as a wire adapter understood it.

    record: what goes into ``received`` (None: the line is not a command at all).
    note: a log event to send instead of running the command. error: a failure
    result to send (after the ack, if the protocol has one) instead of running it.
    """

    record: dict[str, Any] | None = None
    msg_id: Any = None
    cmd: Any = None
    params: Any = field(default_factory=dict)
    note: str | None = None
    error: str | None = None


class _Job:
    def __init__(self, msg_id: Any, cmd: str, params: dict[str, Any], mode: str | None,
                 hostile: sim_hostile.Settings) -> None:
        self.msg_id = msg_id
        self.cmd = cmd
        self.params = params
        self.mode = mode  # captured at start: changing the mode later does not affect it
        self.hostile = hostile  # likewise the flood/noise/deep settings
        self.stop = threading.Event()
        self.done = threading.Event()
        self.thread: threading.Thread | None = None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class SimEngine:
    """Robot state and jobs. The subclass supplies ``_send(event, job=, cmd=)`` and
    ``_wire`` (whose ``stop_result_first`` orders STOP's reply against the abort), and
    for the hostile modes (robot/sim/hostile.py) ``_send_many`` and ``_write``."""

    speed: float
    heartbeat_s: float
    _wire: Any
    flood_rate: float = sim_hostile.FLOOD_RATE  # lines per second, real time
    flood_seconds: float = sim_hostile.FLOOD_SECONDS
    flood_items: bool = False
    noise_rate: int = sim_hostile.NOISE_RATE  # bytes per second
    noise_seconds: float = sim_hostile.NOISE_SECONDS
    deep_levels: int = sim_hostile.DEEP_LEVELS

    def _init_engine(self) -> None:
        self._cond = threading.Condition()
        self._job: _Job | None = None
        self._fault: str | None = None
        self._position = {"x": 0.0, "y": 0.0, "z": 0.0}
        self._homed = False
        self._holding: int | None = None

    def hostile_settings(self) -> sim_hostile.Settings:
        """The hostile settings as they are now, for a job that starts now."""
        return sim_hostile.Settings(float(self.flood_rate), float(self.flood_seconds),
                                    bool(self.flood_items), int(self.noise_rate),
                                    float(self.noise_seconds), int(self.deep_levels))

    def _send(self, obj: dict[str, Any], *, job: _Job | None = None,
              cmd: str | None = None) -> None:
        raise NotImplementedError

    def _send_many(self, events: list[dict[str, Any]], *, job: _Job | None = None) -> None:
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    # -- commands --------------------------------------------------------------------------
    def _on_command(self, parsed: Parsed, mode: str | None) -> None:
        msg_id, cmd, params = parsed.msg_id, parsed.cmd, parsed.params
        if mode == "no_ack":
            return
        if cmd == "STOP":
            self._on_stop(msg_id)
            return
        if parsed.note:
            self._send({"type": "log", "message": parsed.note})
            return
        self._send({"id": msg_id, "type": "ack"}, cmd=cmd)
        if parsed.error:
            self._result(msg_id, False, parsed.error, cmd=cmd)
            return
        job = _Job(msg_id, cmd, params, mode, self.hostile_settings())
        with self._cond:
            if self._job is not None:
                busy = True
            else:
                busy = False
                self._job = job
        if busy:
            self._result(msg_id, False, "busy", cmd=cmd)
            return
        job.thread = threading.Thread(target=self._run_job, args=(job,),
                                      name=f"robot-sim-{cmd}", daemon=True)
        job.thread.start()

    def _on_stop(self, msg_id: Any) -> None:
        with self._cond:
            job = self._job
        if job is None:
            self._send({"id": msg_id, "type": "ack"}, cmd="STOP")
            self._result(msg_id, True, "nothing to stop", cmd="STOP")
            return
        silent = job.mode == "hang_after_ack"
        if not silent:
            self._send({"id": msg_id, "type": "ack"}, cmd="STOP")
        if self._wire.stop_result_first:
            # Without ids the host tells STOP's reply from the abort by order alone: the
            # robot confirms the stop before the interrupted command's error.
            if not silent:
                self._result(msg_id, True, "STOP完成", cmd="STOP")
            job.stop.set()
            return
        job.stop.set()
        # STOP's own result comes after the running command's "aborted": wait off the
        # reader thread so further lines keep being read meanwhile.
        threading.Thread(target=self._finish_stop, args=(job, msg_id, silent),
                         name="robot-sim-stop", daemon=True).start()

    def _finish_stop(self, job: _Job, msg_id: Any, silent: bool) -> None:
        job.done.wait(5.0)
        if not silent:
            self._result(msg_id, True, "STOP完成", cmd="STOP")

    def _release(self, job: _Job) -> None:
        with self._cond:
            if self._job is job:
                self._job = None

    def _result(self, msg_id: Any, success: bool, message: str,
                data: dict[str, Any] | None = None, job: _Job | None = None,
                cmd: str | None = None) -> None:
        if job is not None:
            # Idle before the last line goes out: a host that sends its next command the
            # moment it reads this one must not be told "busy".
            self._release(job)
        event = {"id": msg_id, "type": "result", "success": success, "message": message,
                 "data": data or {}}
        if job is not None and sim_hostile.wants_deep(job, success):
            sim_hostile.send_deep_result(self, event, job)
            return
        self._send(event, job=job, cmd=cmd)

    def _alarm(self, job: _Job) -> None:
        self._release(job)
        self._send({"type": "alarm", "message": ALARM_MESSAGE}, job=job)

    def _wait(self, job: _Job, seconds: float) -> bool:
        """Sleep ``seconds`` (already scaled), sending heartbeats; False if STOPped."""
        deadline = time.monotonic() + seconds
        silent = job.mode in ("hang_after_ack", "no_ack")
        next_beat = time.monotonic() + self.heartbeat_s
        while True:
            now = time.monotonic()
            if now >= deadline:
                return not job.stop.is_set()
            wake = min(deadline, next_beat) - now
            if job.stop.wait(max(wake, 0.0)):
                return False
            if not silent and time.monotonic() >= next_beat:
                self._send({"type": "heartbeat"}, job=job)
                next_beat += self.heartbeat_s

    def _run_job(self, job: _Job) -> None:
        try:
            if job.mode == "hang_after_ack":
                job.stop.wait()
                return
            self._dispatch(job)
        except Exception:
            log.exception("simulator failed on %s", job.cmd)
            self._result(job.msg_id, False, "simulator error", job=job)
        finally:
            self._release(job)
            job.done.set()

    def _dispatch(self, job: _Job) -> None:
        cmd, p, msg_id = job.cmd, job.params, job.msg_id
        if cmd == "PING":
            data = {"firmware": FIRMWARE, "speed": self.speed}
            if isinstance(p.get("nonce"), str):
                data["nonce"] = p["nonce"]
            self._result(msg_id, True, "PING完成", data, job=job)
            return
        if cmd == "GET_STATUS":
            with self._cond:
                data = {"position": dict(self._position), "holding": self._holding,
                        "homed": self._homed, "fault_mode": self._fault, "firmware": FIRMWARE}
            self._result(msg_id, True, "GET_STATUS完成", data, job=job)
            return
        error = self._check_params(cmd, p)
        if error:
            self._result(msg_id, False, f"bad params: {error}", job=job)
            return
        if job.mode == "fail" and cmd in MOTION:
            self._result(msg_id, False, "simulated failure", job=job)
            return
        if job.mode in sim_hostile.BEFORE_MOTION and cmd in MOTION:
            # After a STOP here the command's own wait ends at once: the usual abort.
            sim_hostile.before_motion(self, job)
        if cmd == "SCAN_QRCODE":
            self._scan(job)
            return
        self._motion(job)

    def _motion(self, job: _Job) -> None:
        cmd, p = job.cmd, job.params
        duration = DURATIONS[cmd] / self.speed
        if job.mode == "heartbeat_only":
            duration = max(duration, 10 * self.heartbeat_s)
        # In "alarm" mode the collision comes halfway: the robot was seen to start.
        if not self._wait(job, duration / 2 if job.mode == "alarm" else duration):
            self._result(job.msg_id, False, ABORTED, {"completed": False}, job=job)
            return
        if job.mode == "alarm":
            self._alarm(job)
            return
        if cmd == "DISPENSE":
            self._result(job.msg_id, True, "DISPENSE完成",
                         {"position": p["position"], "volume_ul": p["volume_ul"]}, job=job)
            return
        with self._cond:
            if cmd == "HOME":
                self._position = {"x": 0.0, "y": 0.0, "z": 0.0}
                self._homed = True
            elif cmd == "MOVE_TO":
                self._position = {k: float(p[k]) for k in ("x", "y", "z")}
            elif cmd == "PICK":
                self._holding = int(p["position"])
            elif cmd == "PLACE":
                self._holding = None
        self._result(job.msg_id, True, f"{cmd}完成", {"position": dict(self._position)},
                     job=job)

    def _check_params(self, cmd: str, p: dict[str, Any]) -> str | None:
        if cmd == "MOVE_TO" and not all(_is_number(p.get(k)) for k in ("x", "y", "z")):
            return "MOVE_TO needs numbers x, y, z"
        if cmd in ("PICK", "PLACE") and not _is_int(p.get("position")):
            return f"{cmd} needs an integer position"
        if cmd == "SCAN_QRCODE":
            positions = p.get("positions")
            if not isinstance(p.get("rack"), str) or not isinstance(positions, list) or not all(
                    _is_int(x) for x in positions):
                return "SCAN_QRCODE needs rack (string) and positions (list of integers)"
        if cmd == "DISPENSE":
            volume: Any = p.get("volume_ul")
            if not (_is_int(p.get("position")) and _is_number(volume)
                    and math.isfinite(volume) and volume > 0):
                return DISPENSE_NEEDS
        return None

    def _scan(self, job: _Job) -> None:
        rack = job.params["rack"]
        positions = job.params["positions"]
        total = len(positions)
        scanned: list[dict[str, Any]] = []
        per_bottle = SCAN_PER_BOTTLE / self.speed
        if job.mode == "heartbeat_only":
            per_bottle = max(per_bottle, 10 * self.heartbeat_s / max(total, 1))
        if job.mode == "short_count":
            positions = positions[:-1]
        for done, position in enumerate(positions, start=1):
            if not self._wait(job, per_bottle):
                self._result(job.msg_id, False, ABORTED,
                             {"scanned_count": len(scanned), "scanned_bottles": scanned},
                             job=job)
                return
            item = {"position": position, "code": bottle_code(rack, position), "rack": rack}
            scanned.append(item)
            if job.mode != "heartbeat_only":
                # No message: the host words a scanned bottle in its operator's language.
                self._send({"id": job.msg_id, "type": "progress", "done": done, "total": total,
                            "item": item}, job=job)
            if job.mode == "alarm":
                break
            if done == 1 and job.mode in ("foreign_item", "repeat_item"):
                extra = dict(item)
                if job.mode == "foreign_item":
                    extra["position"] = max(positions) + 1
                    extra["code"] = bottle_code(rack, extra["position"])
                self._send({"id": job.msg_id, "type": "progress", "done": done,
                            "total": total, "message": "out of step", "item": extra}, job=job)
        if job.mode == "alarm":
            self._alarm(job)
            return
        self._result(job.msg_id, True, "SCAN_QRCODE完成",
                     {"scanned_count": len(scanned), "scanned_bottles": scanned}, job=job)

