"""A simulated G-code-like robot for gcode_codec.py on a pty, with the surface of the codec
contract (tests/robot_contract.py).

What the firmware does, and the codec relies on, since no reply carries an id: one motion
at a time (G28, G0, M950, M951, M952; another meanwhile is ``error: busy``); M115 and M114
answered at once, even during a motion; ``busy: processing`` every ``heartbeat_s`` while
moving; M410 ends the motion with ``error: aborted`` and then, in the same write, answers
``ok`` itself (at once when idle). Faults: ``"hang_after_ack"`` (a motion taken, then
nothing, not even an answer to its M410) and ``"garbage"`` (junk before every real line,
which comes in two halves).

Run standalone: ``python -m examples.gcode_robot.gcode_sim [--speed X] [--link PATH]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from robot.codecs.framing import LineFramer
from robot.sim.channels import PtyChannel
from robot.sim.engine import bottle_code

FIRMWARE = "acme-gcode 2.0"
# "foreign_item", "repeat_item", "short_count": a scan out of step with its command (an
# extra bottle at a position not asked for, the first bottle twice, the last one missing).
FAULTS = (None, "garbage", "hang_after_ack", "foreign_item", "repeat_item", "short_count")
CODES = {"M115": "PING", "M114": "GET_STATUS", "G28": "HOME", "G0": "MOVE_TO",
         "M950": "SCAN_QRCODE", "M951": "PICK", "M952": "PLACE", "M410": "STOP"}
SECONDS = {"HOME": 3.0, "MOVE_TO": 2.0, "PICK": 4.0, "PLACE": 4.0}  # at speed 1
SCAN_PER_BOTTLE = 20.0
# Noise a G-code host meets; none of it reads as a reply (a bare "ok" would end a command).
JUNK = [b"echo:busy\n", b"// comment\n", b"\xff\xfe\xfd\n", b"bottle: x\n", b"okay\n"]


def parse_params(cmd: str, words: list[str]) -> dict[str, Any]:
    """A line's parameters by letter (``X100`` is X=100); KeyError or ValueError if bad."""
    args = {w[0].upper(): w[1:] for w in words}
    if cmd == "MOVE_TO":
        return {axis.lower(): float(args[axis]) for axis in "XYZ"}
    if cmd == "SCAN_QRCODE":
        if not args["R"]:
            raise ValueError("no rack")
        return {"rack": args["R"], "positions": [int(p) for p in args["P"].split(",")]}
    if cmd in ("PICK", "PLACE"):
        return {"position": int(args["P"])}
    return {}


class _Motion:
    def __init__(self, cmd: str, params: dict[str, Any], hang: bool, heartbeat_s: float,
                 run: Callable[[_Motion], None]) -> None:
        self.cmd, self.params, self.hang = cmd, params, hang
        self.mode: str | None = None
        self.stop = threading.Event()
        self.stops = 0  # M410s received: each is answered once the motion has ended
        self.next_beat = time.monotonic() + heartbeat_s
        self.thread = threading.Thread(target=run, args=(self,), name=f"gcode-sim-{cmd}",
                                       daemon=True)


class GcodeSimulator:
    def __init__(self, speed: float = 1.0, *, link_path: str | None = None,
                 heartbeat_s: float = 2.0, stop_reply_delay: float = 0.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be greater than 0")
        self.speed, self.link_path, self.heartbeat_s = speed, link_path, heartbeat_s
        # > 0: M410's "ok" comes this long after "error: aborted", as over a slow USB
        # adapter; the host must not take it for the next command's reply.
        self.stop_reply_delay = stop_reply_delay
        # One lock for the state and the writes: lines leave in the order the state changed
        # (a motion's last line cannot overtake the answer to a STOP read meanwhile).
        self._lock = threading.RLock()
        self._session: PtyChannel | None = None
        self._reader: threading.Thread | None = None
        self._motion: _Motion | None = None
        self._fault: str | None = None
        self._junk = 0
        self._received: list[dict[str, Any]] = []
        self._position = {"x": 0.0, "y": 0.0, "z": 0.0}

    def start(self) -> str:
        """Plug in: a new pty; the symlink, if any, points at it."""
        if self._session is not None:
            raise RuntimeError("simulator already started")
        session = PtyChannel()
        if self.link_path:
            # Replaced in one step, so a driver reconnecting never finds the link missing.
            tmp = f"{self.link_path}.tmp{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(session.path, tmp)
            os.replace(tmp, self.link_path)
        framer = LineFramer()

        def on_data(data: bytes) -> None:
            for line in framer.feed(data):
                self._on_line(line)

        reader = threading.Thread(target=session.serve, args=(on_data, framer.reset),
                                  name="gcode-sim-reader", daemon=True)
        with self._lock:
            self._session, self._reader = session, reader
        reader.start()
        return self.path

    def stop(self) -> None:
        self._unplug(remove_link=True)

    unplug = stop  # to the host, a robot switched off and a cable pulled look the same

    def replug(self) -> str:
        self._unplug(remove_link=False)
        return self.start()

    @property
    def path(self) -> str:
        """What the driver opens; with ``link_path`` it survives unplug and replug."""
        if not self.link_path and self._session is None:
            raise RuntimeError("simulator not started")
        return self.link_path or self._session.path

    def set_fault(self, mode: str | None) -> None:
        if mode not in FAULTS:
            raise ValueError(f"unknown fault mode {mode!r}; use one of {FAULTS}")
        with self._lock:
            self._fault = mode

    def commands(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._received]

    def _unplug(self, *, remove_link: bool) -> None:
        with self._lock:
            session, reader = self._session, self._reader
            self._session = self._reader = None
        if session is None:
            return
        session.shutdown()
        if reader is not None:
            reader.join()
        with self._lock:  # only with the reader gone can no new motion start
            motion = self._motion
        if motion is not None:
            motion.stop.set()
            motion.thread.join()
        session.close()
        if remove_link and self.link_path and os.path.islink(self.link_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link_path)

    def _send(self, *lines: str) -> None:
        with self._lock:
            session = self._session
            if session is None or session.closed.is_set():
                return  # the cable is out: output is lost, as on a UART
            data = [line.encode("ascii", "replace") + b"\n" for line in lines]
            if self._fault != "garbage":
                session.write(b"".join(data))
                return
            for body in data:
                session.write(JUNK[self._junk % len(JUNK)])
                self._junk += 1
                # The real line in two writes: the host must put it back together.
                session.write(body[:len(body) // 2])
                session.write(body[len(body) // 2:])

    def _on_line(self, raw: bytes) -> None:
        text = raw.decode("ascii", "replace").split(";")[0].strip()  # ";" starts a comment
        words = text.split()
        if not words:
            return
        cmd = CODES.get(words[0].upper())
        error = None if cmd else f"unknown command {words[0]}"
        try:
            params = parse_params(cmd, words[1:]) if cmd else {}
        except (KeyError, ValueError):
            params, error = {}, f"bad parameters: {text}"
        with self._lock:
            self._received.append({"cmd": cmd or words[0], "params": params, "line": text})
            motion = self._motion
            if cmd == "STOP" and motion is not None:
                motion.stops += 1
                motion.stop.set()
                if motion.hang:
                    # Nothing will answer this STOP, so the host goes on at once: the robot
                    # must already be free for its next command.
                    self._motion = None
            elif cmd == "STOP":
                self._send("ok")
            elif error:
                self._send(f"error: {error}")
            elif cmd == "PING":
                self._send(f"ok FIRMWARE_NAME:{FIRMWARE}")
            elif cmd == "GET_STATUS":
                self._send("ok " + " ".join(f"{k.upper()}:{v:g}" for k, v in
                                            self._position.items()))
            elif motion is not None:
                self._send("error: busy")
            else:
                motion = _Motion(cmd, params, self._fault == "hang_after_ack", self.heartbeat_s,
                                 self._run)
                motion.mode = self._fault
                self._motion = motion
                motion.thread.start()

    def _run(self, motion: _Motion) -> None:
        if motion.hang:
            motion.stop.wait()
        else:
            self._work(motion)
        with self._lock:
            if self._motion is motion:
                self._motion = None
            if motion.hang:
                return
            if not motion.stop.is_set():
                self._send("ok")
                return
            if not self.stop_reply_delay:
                self._send("error: aborted", *["ok"] * motion.stops)
                return
            self._send("error: aborted")
        time.sleep(self.stop_reply_delay)  # the simulated line's latency, not a sync
        self._send(*["ok"] * motion.stops)

    def _work(self, motion: _Motion) -> None:
        if motion.cmd == "SCAN_QRCODE":
            rack, positions = motion.params["rack"], list(motion.params["positions"])
            if motion.mode == "short_count":
                positions = positions[:-1]
            for n, position in enumerate(positions):
                if not self._wait(motion, SCAN_PER_BOTTLE / self.speed):
                    return
                self._send(f"bottle: {position} {bottle_code(rack, position) or 'none'}")
                if n == 0 and motion.mode in ("foreign_item", "repeat_item"):
                    extra = max(positions) + 1 if motion.mode == "foreign_item" else position
                    self._send(f"bottle: {extra} {bottle_code(rack, extra) or 'none'}")
        elif self._wait(motion, SECONDS[motion.cmd] / self.speed):
            with self._lock:
                if motion.cmd == "HOME":
                    self._position = {"x": 0.0, "y": 0.0, "z": 0.0}
                elif motion.cmd == "MOVE_TO":
                    self._position = dict(motion.params)

    def _wait(self, motion: _Motion, seconds: float) -> bool:
        """Sleep ``seconds``, saying ``busy: processing`` on time; False if stopped."""
        deadline = time.monotonic() + seconds
        while (now := time.monotonic()) < deadline:
            if motion.stop.wait(max(0.0, min(deadline, motion.next_beat) - now)):
                return False
            if time.monotonic() >= motion.next_beat:
                self._send("busy: processing")
                motion.next_beat += self.heartbeat_s
        return not motion.stop.is_set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.gcode_robot.gcode_sim",
                                     description="A simulated G-code-like robot on a pty.")
    parser.add_argument("--speed", type=float, default=1.0, help="time factor (default 1)")
    parser.add_argument("--link", help="also make this symlink point at the pty")
    parser.add_argument("--heartbeat", type=float, default=2.0, help="seconds between busy:")
    parser.add_argument("--fault", choices=[f for f in FAULTS if f])
    args = parser.parse_args(argv)
    sim = GcodeSimulator(args.speed, link_path=args.link, heartbeat_s=args.heartbeat)
    sim.set_fault(args.fault)
    print(sim.start(), flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # cleaned up like Ctrl-C
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)
    sim.stop()  # the symlink must not outlive the pty it points at
    return 0


if __name__ == "__main__":
    sys.exit(main())
