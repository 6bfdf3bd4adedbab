"""A simulated robot speaking the protocol of docs/robot-protocol.md.

On a pty the simulator owns the master side and the driver opens the slave path
(``/dev/pts/N``, or a symlink to it) exactly like a USB serial port; over TCP it
listens on loopback and the driver opens ``socket://127.0.0.1:PORT`` (Windows, or
anywhere a pty is not wanted). Fault modes let tests reproduce a noisy line, a hung
robot, a mute robot and an unplugged cable.

Run standalone: ``python -m robot.simulator [--speed X] [--link PATH | --tcp HOST:PORT]
[--record FILE]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from robot.protocol import LineFramer
from robot.sim_channels import PtyChannel, TcpChannel, open_channel, resolve_transport

log = logging.getLogger("robot.simulator")

FIRMWARE = "robot-sim 1.0"
FAULT_MODES = (None, "garbage", "hang_after_ack", "no_ack", "fail", "heartbeat_only")
MOTION = ("HOME", "MOVE_TO", "PICK", "PLACE", "SCAN_QRCODE")
# Seconds at speed 1.
DURATIONS = {"HOME": 3.0, "MOVE_TO": 2.0, "PICK": 4.0, "PLACE": 4.0}
SCAN_PER_BOTTLE = 20.0
KNOWN = ("PING", "HOME", "MOVE_TO", "SCAN_QRCODE", "PICK", "PLACE", "GET_STATUS", "STOP")

# Sent before each real line in "garbage" mode: every shape the host must survive.
GARBAGE = [
    b"this is not json\r\n",
    b'{"id": 1, "type": "result", "success": true, "message": "stale"}\r\n',
    b'{"type": "ack", "id": \r\n',
    b"[1, 2, 3]\r\n",
    b'"just a string"\r\n',
    b'{"type": "progress", "id": NaN}\r\n',
    b"\xff\xfe\xfd\r\n",
    b'{"type": "teleport", "id": 5}\r\n',
    b'{"type": "result", "id": true, "success": true}\r\n',
]


def qr_code(rack: str, position: int) -> str:
    """Deterministic bottle code for (rack, position)."""
    digest = hashlib.sha1(f"{rack}:{position}".encode()).hexdigest()[:6]
    return f"{rack}-{position:02d}-{digest}"


class _Job:
    def __init__(self, msg_id: Any, cmd: str, params: dict[str, Any], mode: str | None) -> None:
        self.msg_id = msg_id
        self.cmd = cmd
        self.params = params
        self.mode = mode  # captured at start: changing the mode later does not affect it
        self.stop = threading.Event()
        self.done = threading.Event()
        self.thread: threading.Thread | None = None


class RobotSimulator:
    """A robot on a pty or a loopback TCP port. ``start()`` returns what the driver opens."""

    def __init__(self, speed: float = 1.0, *, link_path: str | None = None,
                 heartbeat_s: float = 2.0, record_path: str | None = None,
                 transport: str = "auto", tcp_host: str = "127.0.0.1",
                 tcp_port: int = 0) -> None:
        if speed <= 0:
            raise ValueError("speed must be greater than 0")
        self.transport = resolve_transport(transport)
        if link_path and self.transport != "pty":
            raise ValueError("link_path is for the pty transport only")
        self.speed = speed
        self.link_path = link_path
        self.tcp_host = tcp_host
        self.tcp_port = tcp_port  # 0 until the first start; kept so a replug keeps the URL
        self.heartbeat_s = heartbeat_s
        self.record_path = record_path
        self.received: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._session: PtyChannel | TcpChannel | None = None
        self._reader: threading.Thread | None = None
        self._job: _Job | None = None
        self._fault: str | None = None
        self._garbage_index = 0
        self._position = {"x": 0.0, "y": 0.0, "z": 0.0}
        self._homed = False
        self._holding: int | None = None
        self._record = None

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> str:
        if self._session is not None:
            raise RuntimeError("simulator already started")
        if self.record_path:
            self._record = open(self.record_path, "a", encoding="utf-8")  # noqa: SIM115
        return self._plug()

    def stop(self) -> None:
        self._unplug_session(remove_link=True)
        if self._record is not None:
            self._record.close()
            self._record = None

    @property
    def path(self) -> str:
        """What to open: the symlink if ``link_path`` was given, else /dev/pts/N or
        ``socket://127.0.0.1:PORT``."""
        if self.link_path:
            return self.link_path
        session = self._session
        if session is None:
            raise RuntimeError("simulator not started")
        return session.url

    @property
    def pty_path(self) -> str | None:
        session = self._session
        return session.path if session else None

    def set_fault(self, mode: str | None) -> None:
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; use one of {FAULT_MODES}")
        with self._cond:
            self._fault = mode

    def unplug(self) -> None:
        """Simulate pulling the cable: the pty (and the symlink) or the TCP port disappear."""
        self._unplug_session(remove_link=True)

    def replug(self) -> str:
        """A new pty (the symlink, if any, is moved to it atomically) or the same TCP port
        listening again."""
        if self._session is not None:
            self._unplug_session(remove_link=False)
        return self._plug()

    def _plug(self) -> str:
        session = open_channel(self.transport, self.tcp_host, self.tcp_port)
        if isinstance(session, TcpChannel):
            self.tcp_port = session.port
        if self.link_path and session.path:
            tmp = f"{self.link_path}.tmp{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(session.path, tmp)
            os.replace(tmp, self.link_path)
        reader = threading.Thread(target=self._read_loop, args=(session,),
                                  name="robot-sim-reader", daemon=True)
        with self._cond:
            self._session = session
            self._reader = reader
        reader.start()
        log.info("simulator on %s%s", session.url,
                 f" (link {self.link_path})" if self.link_path else "")
        return self.link_path or session.url

    def _unplug_session(self, *, remove_link: bool) -> None:
        with self._cond:
            session, reader = self._session, self._reader
            self._session = self._reader = None
        if session is not None:
            session.shutdown()
            if reader is not None:
                reader.join()
        # Only now, with the reader gone, is the job final: a command read just before
        # the unplug may have started one after a look at ``_job`` taken earlier.
        with self._cond:
            job = self._job
        if job is not None:
            job.stop.set()
            if job.thread is not None:
                job.thread.join()
        if session is None:
            return
        with self._write_lock:
            session.close()
        if remove_link and self.link_path:
            with contextlib.suppress(FileNotFoundError):
                if os.path.islink(self.link_path):
                    os.unlink(self.link_path)

    # -- test helpers ----------------------------------------------------------------------
    def wait_for_command(self, predicate: Callable[[dict[str, Any]], bool],
                         timeout: float) -> dict[str, Any] | None:
        """The first received command matching ``predicate`` (waits up to ``timeout``)."""
        def find() -> dict[str, Any] | None:
            return next((c for c in self.received if predicate(c)), None)

        with self._cond:
            found: dict[str, Any] | None = None

            def check() -> bool:
                nonlocal found
                found = find()
                return found is not None

            self._cond.wait_for(check, timeout)
            return found

    def commands(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self.received)

    # -- I/O -------------------------------------------------------------------------------
    def _read_loop(self, session: PtyChannel | TcpChannel) -> None:
        framer = LineFramer()

        def on_data(data: bytes) -> None:
            for line in framer.feed(data):
                if line.strip():
                    self._on_line(line)

        session.serve(on_data, framer.reset)

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            session = self._session
            if session is None or session.closed.is_set():
                return
            session.write(data)

    def _send(self, obj: dict[str, Any], *, job: _Job | None = None) -> None:
        with self._cond:
            garbage = self._fault == "garbage" or (job is not None and job.mode == "garbage")
        line = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
        if not garbage:
            self._write(line + b"\n")
            return
        with self._cond:
            junk = GARBAGE[self._garbage_index % len(GARBAGE)]
            self._garbage_index += 1
        self._write(junk)
        # The real line in two writes: the host must reassemble it.
        half = len(line) // 2
        self._write(line[:half])
        self._write(line[half:] + b"\r\n")

    # -- commands --------------------------------------------------------------------------
    def _on_line(self, line: bytes) -> None:
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self._send({"type": "log", "message": "ignored a line that is not JSON"})
            return
        if not isinstance(obj, dict):
            self._send({"type": "log", "message": "ignored a line that is not an object"})
            return
        with self._cond:
            self.received.append(obj)
            self._cond.notify_all()
            mode = self._fault
        if self._record is not None:
            self._record.write(json.dumps(obj, ensure_ascii=False) + "\n")
            self._record.flush()
        msg_id = obj.get("id")
        cmd = obj.get("cmd")
        params = obj.get("params") or {}
        if mode == "no_ack":
            return
        if cmd == "STOP":
            self._on_stop(msg_id)
            return
        if not isinstance(msg_id, int) or isinstance(msg_id, bool):
            self._send({"type": "log", "message": "ignored a command without an integer id"})
            return
        self._send({"id": msg_id, "type": "ack"})
        if cmd not in KNOWN:
            self._result(msg_id, False, f"unknown command {cmd!r}")
            return
        if not isinstance(params, dict):
            self._result(msg_id, False, "params must be an object")
            return
        job = _Job(msg_id, cmd, params, mode)
        with self._cond:
            if self._job is not None:
                busy = True
            else:
                busy = False
                self._job = job
        if busy:
            self._result(msg_id, False, "busy")
            return
        job.thread = threading.Thread(target=self._run_job, args=(job,),
                                      name=f"robot-sim-{cmd}", daemon=True)
        job.thread.start()

    def _on_stop(self, msg_id: Any) -> None:
        with self._cond:
            job = self._job
        if job is None:
            self._send({"id": msg_id, "type": "ack"})
            self._result(msg_id, True, "nothing to stop")
            return
        silent = job.mode == "hang_after_ack"
        if not silent:
            self._send({"id": msg_id, "type": "ack"})
        job.stop.set()
        # STOP's own result comes after the running command's "aborted": wait off the
        # reader thread so further lines keep being read meanwhile.
        threading.Thread(target=self._finish_stop, args=(job, msg_id, silent),
                         name="robot-sim-stop", daemon=True).start()

    def _finish_stop(self, job: _Job, msg_id: Any, silent: bool) -> None:
        job.done.wait(5.0)
        if not silent:
            self._result(msg_id, True, "STOP完成")

    def _result(self, msg_id: Any, success: bool, message: str,
                data: dict[str, Any] | None = None, job: _Job | None = None) -> None:
        self._send({"id": msg_id, "type": "result", "success": success, "message": message,
                    "data": data or {}}, job=job)

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
            with self._cond:
                if self._job is job:
                    self._job = None
            job.done.set()

    def _dispatch(self, job: _Job) -> None:
        cmd, p, msg_id = job.cmd, job.params, job.msg_id
        if cmd == "PING":
            self._result(msg_id, True, "PING完成", {"firmware": FIRMWARE, "speed": self.speed},
                         job=job)
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
        if cmd == "SCAN_QRCODE":
            self._scan(job)
            return
        duration = DURATIONS[cmd] / self.speed
        if job.mode == "heartbeat_only":
            duration = max(duration, 10 * self.heartbeat_s)
        if not self._wait(job, duration):
            self._result(msg_id, False, "aborted", {"completed": False}, job=job)
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
        self._result(msg_id, True, f"{cmd}完成", {"position": dict(self._position)}, job=job)

    def _check_params(self, cmd: str, p: dict[str, Any]) -> str | None:
        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if cmd == "MOVE_TO" and not all(number(p.get(k)) for k in ("x", "y", "z")):
            return "MOVE_TO needs numbers x, y, z"
        if cmd in ("PICK", "PLACE") and not (isinstance(p.get("position"), int)
                                            and not isinstance(p.get("position"), bool)):
            return f"{cmd} needs an integer position"
        if cmd == "SCAN_QRCODE":
            positions = p.get("positions")
            if not isinstance(p.get("rack"), str) or not isinstance(positions, list) or not all(
                    isinstance(x, int) and not isinstance(x, bool) for x in positions):
                return "SCAN_QRCODE needs rack (string) and positions (list of integers)"
        return None

    def _scan(self, job: _Job) -> None:
        rack = job.params["rack"]
        positions = job.params["positions"]
        total = len(positions)
        scanned: list[dict[str, Any]] = []
        per_bottle = SCAN_PER_BOTTLE / self.speed
        if job.mode == "heartbeat_only":
            per_bottle = max(per_bottle, 10 * self.heartbeat_s / max(total, 1))
        for done, position in enumerate(positions, start=1):
            if not self._wait(job, per_bottle):
                self._result(job.msg_id, False, "aborted",
                             {"scanned_count": len(scanned), "scanned_bottles": scanned},
                             job=job)
                return
            item = {"position": position, "code": qr_code(rack, position), "rack": rack}
            scanned.append(item)
            if job.mode != "heartbeat_only":
                self._send({"id": job.msg_id, "type": "progress", "done": done, "total": total,
                            "message": f"scanned {rack} position {position}", "item": item},
                           job=job)
        self._result(job.msg_id, True, "SCAN_QRCODE完成",
                     {"scanned_count": len(scanned), "scanned_bottles": scanned}, job=job)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, e.g. 127.0.0.1:7001, not {text!r}")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robot.simulator",
                                     description="Simulated robot on a pseudo-terminal or a "
                                                 "TCP port.")
    parser.add_argument("--speed", type=float, default=1.0, help="time factor (default 1)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--link", help="also make this symlink point at the pty")
    where.add_argument("--tcp", type=_host_port, metavar="HOST:PORT",
                       help="listen on TCP instead of a pty (drive it with "
                            "--robot socket://HOST:PORT); port 0 picks a free one")
    parser.add_argument("--record", help="append every received command to FILE as JSON lines")
    parser.add_argument("--heartbeat", type=float, default=2.0, help="heartbeat period in s")
    parser.add_argument("--fault", choices=[m for m in FAULT_MODES if m], help="fault mode")
    args = parser.parse_args(argv)
    if args.speed <= 0:
        parser.error("--speed must be greater than 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    tcp_host, tcp_port = args.tcp or ("127.0.0.1", 0)
    try:
        sim = RobotSimulator(args.speed, link_path=args.link, heartbeat_s=args.heartbeat,
                             record_path=args.record, transport="tcp" if args.tcp else "auto",
                             tcp_host=tcp_host, tcp_port=tcp_port)
        if args.fault:
            sim.set_fault(args.fault)
        done = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            done.set()

        for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), on_signal)
        url = sim.start()
    except (OSError, ValueError) as exc:
        print(f"Cannot start the simulator: {exc}", file=sys.stderr)
        return 1
    print(sim.pty_path or url, flush=True)
    if args.link:
        print(args.link, flush=True)
    # Wait in slices: on Windows a signal is handled only when the main thread wakes.
    while not done.wait(0.5):
        pass
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
