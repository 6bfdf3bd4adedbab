"""A simulated robot speaking the protocol of docs/robot-protocol.md, or the ``text``
protocol (robot/sim/wire.py).

On a pty the simulator owns the master side and the driver opens the slave path
(``/dev/pts/N``, or a symlink to it) exactly like a USB serial port; over TCP it
listens on loopback and the driver opens ``socket://127.0.0.1:PORT`` (Windows, or
anywhere a pty is not wanted). Fault modes let tests reproduce a noisy line, a hung
robot, a mute robot, a robot that stops itself with an alarm and an unplugged cable.

The command engine (jobs, timings, STOP, faults) is robot/sim/engine.py; this module
is the life cycle, the bytes and the test helpers.

Run standalone: ``python -m robot.sim [--speed X] [--protocol json|text]
[--link PATH | --tcp HOST:PORT] [--record FILE] [--fault MODE]`` plus the settings of
the hostile modes (robot/sim/hostile.py): ``--flood-rate``, ``--noise-rate``, ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from robot.codecs.framing import LineFramer
from robot.sim.channels import PtyChannel, TcpChannel, open_channel, resolve_transport
from robot.sim.engine import FAULT_MODES, FIRMWARE, SimEngine, _Job, bottle_code, qr_code
from robot.sim.hostile import DEEP_LEVELS, FLOOD_RATE, FLOOD_SECONDS, NOISE_RATE, NOISE_SECONDS
from robot.sim.wire import WIRES, make_wire

# Where tests and tools have always found them.
__all__ = ["FAULT_MODES", "FIRMWARE", "RobotSimulator", "bottle_code", "main", "qr_code"]

log = logging.getLogger("robot.simulator")


class RobotSimulator(SimEngine):
    """A robot on a pty or a loopback TCP port. ``start()`` returns what the driver opens.

    ``protocol`` is what it speaks: ``"json"`` (docs/robot-protocol.md) or ``"text"``
    (robot/sim/wire.py); the commands, timings and fault modes are the same for both.
    """

    def __init__(self, speed: float = 1.0, *, link_path: str | None = None,
                 heartbeat_s: float = 2.0, record_path: str | None = None,
                 transport: str = "auto", tcp_host: str = "127.0.0.1",
                 tcp_port: int = 0, protocol: str = "json") -> None:
        if speed <= 0:
            raise ValueError("speed must be greater than 0")
        self._wire = make_wire(protocol)
        self.protocol = protocol
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
        # The hostile modes' settings (robot/sim/hostile.py), read when a command starts.
        self.flood_rate: float = FLOOD_RATE  # progress lines per second, real time
        self.flood_seconds: float = FLOOD_SECONDS
        self.flood_items: bool = False  # every flood line carries "item": {"flood": k}
        self.noise_rate: int = NOISE_RATE  # random bytes per second
        self.noise_seconds: float = NOISE_SECONDS
        self.deep_levels: int = DEEP_LEVELS  # nesting depth of the deep result's data
        self._init_engine()
        self._write_lock = threading.Lock()
        self._session: PtyChannel | TcpChannel | None = None
        self._reader: threading.Thread | None = None
        self._garbage_index = 0
        self._record: TextIO | None = None
        self._next_faults: dict[str, list[str]] = {}  # fault_next(): cmd -> modes to use

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
        """One of FAULT_MODES for the commands that start from now on (None: healthy)."""
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; use one of {FAULT_MODES}")
        with self._cond:
            self._fault = mode

    def fault_next(self, cmd: str, mode: str = "fail", times: int = 1) -> None:
        """Test helper: the next ``times`` ``cmd`` commands run in fault ``mode`` while
        the others keep set_fault's, e.g. to fail one step of a sequence alone."""
        if mode is None or mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; use one of {FAULT_MODES}")
        with self._cond:
            self._next_faults[cmd] = [mode] * times

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

    def _send(self, obj: dict[str, Any], *, job: _Job | None = None,
              cmd: str | None = None) -> None:
        cmd = cmd or (job.cmd if job is not None else None)
        body = self._wire.format(obj, cmd)
        if body is None:
            return
        with self._cond:
            garbage = self._fault == "garbage" or (job is not None and job.mode == "garbage")
            running = self._job.cmd if self._job is not None else None
        if not garbage:
            self._write(body + self._wire.newline)
            return
        with self._cond:
            # Not junk that validly answers a command in flight: with no ids in the
            # protocol, a stray "OK PICK" would end the running PICK.
            junk = self._wire.junk(self._garbage_index, {cmd, running})
            self._garbage_index += 1
        self._write(junk)
        # The real line in two writes: the host must reassemble it.
        half = len(body) // 2
        self._write(body[:half])
        self._write(body[half:] + b"\r\n")

    def _send_many(self, events: list[dict[str, Any]], *, job: _Job | None = None) -> None:
        """Events as whole lines in one write (no garbage treatment): a flood reaches its
        rate without a lock round trip per line, and no other line lands mid-line."""
        cmd = job.cmd if job is not None else None
        newline = self._wire.newline
        lines = [body for body in (self._wire.format(e, cmd) for e in events)
                 if body is not None]
        if lines:
            self._write(newline.join(lines) + newline)

    # -- commands --------------------------------------------------------------------------
    def _on_line(self, line: bytes) -> None:
        parsed = self._wire.parse(line)
        if parsed.record is None:
            if parsed.note:
                self._send({"type": "log", "message": parsed.note})
            return
        with self._cond:
            self.received.append(parsed.record)
            self._cond.notify_all()
            mode = self._fault
            scripted = self._next_faults.get(str(parsed.cmd))
            if scripted:
                mode = scripted.pop(0)
        if self._record is not None:
            self._record.write(json.dumps(parsed.record, ensure_ascii=False) + "\n")
            self._record.flush()
        self._on_command(parsed, mode)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, e.g. 127.0.0.1:7001, not {text!r}")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robot.sim",
                                     description="Simulated robot on a pseudo-terminal or a "
                                                 "TCP port.")
    parser.add_argument("--speed", type=float, default=1.0, help="time factor (default 1)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--link", help="also make this symlink point at the pty")
    where.add_argument("--tcp", type=_host_port, metavar="HOST:PORT",
                       help="listen on TCP instead of a pty (drive it with "
                            "--robot socket://HOST:PORT); port 0 picks a free one")
    parser.add_argument("--record", help="append every received command to FILE as JSON lines")
    parser.add_argument("--protocol", choices=list(WIRES), default="json",
                        help="what the robot speaks (default json)")
    parser.add_argument("--heartbeat", type=float, default=2.0, help="heartbeat period in s")
    parser.add_argument("--fault", choices=[m for m in FAULT_MODES if m], help="fault mode")
    hostile = parser.add_argument_group("hostile fault modes (flood, noise, deep_result)")
    hostile.add_argument("--flood-rate", type=float, default=FLOOD_RATE,
                         help=f"flood: progress lines per second (default {FLOOD_RATE:g})")
    hostile.add_argument("--flood-seconds", type=float, default=FLOOD_SECONDS,
                         help=f"flood: how long, real seconds (default {FLOOD_SECONDS:g})")
    hostile.add_argument("--flood-items", action="store_true",
                         help='flood: every line carries "item": {"flood": k}')
    hostile.add_argument("--noise-rate", type=int, default=NOISE_RATE,
                         help=f"noise: random bytes per second (default {NOISE_RATE})")
    hostile.add_argument("--noise-seconds", type=float, default=NOISE_SECONDS,
                         help=f"noise: how long, real seconds (default {NOISE_SECONDS:g})")
    hostile.add_argument("--deep-levels", type=int, default=DEEP_LEVELS,
                         help=f"deep_result: nesting depth of data.nested (default {DEEP_LEVELS})")
    args = parser.parse_args(argv)
    if args.speed <= 0:
        parser.error("--speed must be greater than 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    tcp_host, tcp_port = args.tcp or ("127.0.0.1", 0)
    try:
        sim = RobotSimulator(args.speed, link_path=args.link, heartbeat_s=args.heartbeat,
                             record_path=args.record, transport="tcp" if args.tcp else "auto",
                             tcp_host=tcp_host, tcp_port=tcp_port, protocol=args.protocol)
        for name in ("flood_rate", "flood_seconds", "flood_items", "noise_rate",
                     "noise_seconds", "deep_levels"):
            setattr(sim, name, getattr(args, name))
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

