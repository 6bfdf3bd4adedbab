"""Text-protocol robots written for the tests, independent of the built-in simulator.

``TextRobot`` speaks the ``text`` protocol (robot/codecs/text_codec.py) on a real pty and
behaves the ways the no-mix-up soak found in real firmwares (issue 27):

* ``PING`` and ``STATUS`` answered at once, even while a scan runs;
* ``stop_aborts=False``: ``STOP`` is answered ``OK STOP`` at once but the scan goes on;
* ``queue_commands=True``: a command that arrives while busy is queued and run
  afterwards (FIFO), instead of being refused ``ERR busy``;
* ``echo_nonce=False``: a firmware that answers ``PONG <firmware>`` without the nonce;
* ``inject(line)``: any line, at any moment (a stray ``OK SCAN 3``, a late ``PONG``).

Bottle codes name their rack (``K3-02``), so a bottle stored on the wrong task shows.
It lives in the test process: a server killed with SIGKILL leaves it scanning.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from robot.codecs.framing import LineFramer
from robot.sim.channels import PtyChannel

FIRMWARE = "testbot 1.0"


def code(rack: str, position: int) -> str:
    return f"{rack}-{position:02d}"


@dataclass
class _Job:
    verb: str
    args: list[str]
    stop: threading.Event = field(default_factory=threading.Event)


class TextRobot:
    def __init__(self, *, per_bottle: float = 0.05, busy_every: float = 0.05,
                 stop_aborts: bool = True, queue_commands: bool = False,
                 echo_nonce: bool = True) -> None:
        self.per_bottle, self.busy_every = per_bottle, busy_every
        self.stop_aborts, self.queue_commands = stop_aborts, queue_commands
        self.echo_nonce = echo_nonce
        # A PONG naming another handshake before the right one (a late answer).
        self.stale_pong_first = False
        self.received: list[str] = []
        self.log: list[tuple[float, str]] = []  # (monotonic time, line) as received
        # Commands that arrived while a job ran (what the server must never do).
        self.sent_while_busy: list[str] = []
        self._cond = threading.Condition()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._current: _Job | None = None
        self._bottles: dict[str, int] = {}  # scanned so far, by rack
        self._closed = threading.Event()
        self._channel = PtyChannel()
        self.path = self._channel.path
        self._threads = [threading.Thread(target=self._serve, daemon=True, name="textbot-rx"),
                         threading.Thread(target=self._work, daemon=True, name="textbot-job")]

    def start(self) -> TextRobot:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._closed.set()
        with self._cond:
            if self._current is not None:
                self._current.stop.set()
            self._cond.notify_all()
        self._channel.shutdown()
        for thread in self._threads:
            thread.join(5)
        self._channel.close()

    # -- what the tests use ----------------------------------------------------------------
    def inject(self, line: str) -> None:
        self._write(line)

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._current is not None or bool(self._jobs)

    def scans(self) -> list[str]:
        with self._cond:
            return [line for line in self.received if line.startswith("SCAN ")]

    def wait_bottles(self, rack: str, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._bottles.get(rack, 0) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"robot did not scan {n} bottles of {rack}")
                self._cond.wait(left)

    # -- the firmware ------------------------------------------------------------------------
    def _write(self, line: str) -> None:
        self._channel.write(line.encode("ascii") + b"\r\n")

    def _serve(self) -> None:
        framer = LineFramer()

        def on_data(data: bytes) -> None:
            for raw in framer.feed(data):
                self._on_line(raw.decode("ascii", "replace").strip())

        self._channel.serve(on_data, framer.reset)

    def _on_line(self, line: str) -> None:
        words = line.split()
        if not words:
            return
        verb = words[0].upper()
        with self._cond:
            self.received.append(line)
            self.log.append((time.monotonic(), line))
            busy = self._current is not None or bool(self._jobs)
            if verb == "PING":
                if self.stale_pong_first:
                    self._write(f"PONG 0badc0de {FIRMWARE}")
                nonce = words[1] if len(words) > 1 and self.echo_nonce else None
                self._write(f"PONG {nonce} {FIRMWARE}" if nonce else f"PONG {FIRMWARE}")
            elif verb == "STATUS":
                self._write(f"OK STATUS state={'busy' if busy else 'idle'}")
            elif verb == "STOP":
                self._write("OK STOP")
                if self.stop_aborts:
                    self._jobs.clear()
                    if self._current is not None:
                        self._current.stop.set()
            elif verb in ("SCAN", "HOME", "PICK", "PLACE", "MOVE"):
                if busy:
                    self.sent_while_busy.append(line)
                    if not self.queue_commands:
                        self._write("ERR busy")
                        return
                self._jobs.append(_Job(verb, words[1:]))
                self._cond.notify_all()
            else:
                self._write(f"ERR unknown command {words[0]}")

    def _work(self) -> None:
        while not self._closed.is_set():
            with self._cond:
                while not self._jobs and not self._closed.is_set():
                    self._cond.wait()
                if self._closed.is_set():
                    return
                job = self._current = self._jobs.popleft()
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._current = None
                    self._cond.notify_all()

    def _wait(self, job: _Job, seconds: float) -> bool:
        """``seconds`` of work, with BUSY on time; False if STOPped."""
        deadline = time.monotonic() + seconds
        while (now := time.monotonic()) < deadline:
            if job.stop.wait(min(self.busy_every, deadline - now)):
                return False
            self._write("BUSY")
        return not job.stop.is_set()

    def _run(self, job: _Job) -> None:
        if job.verb != "SCAN":
            if self._wait(job, self.per_bottle):
                self._write(f"OK {job.verb}")
            else:
                self._write("ERR ABORTED")
            return
        rack, positions = job.args[0], [int(p) for p in job.args[1].split(",")]
        for position in positions:
            if not self._wait(job, self.per_bottle):
                self._write("ERR ABORTED")
                return
            with self._cond:
                self._write(f"BOTTLE {position} {code(rack, position)}")
                self._bottles[rack] = self._bottles.get(rack, 0) + 1
                self._cond.notify_all()
        self._write(f"OK SCAN {len(positions)}")


def task_codes(doc: dict[str, Any]) -> list[str | None]:
    return [b.get("code") for b in (doc.get("result") or {}).get("scanned_bottles") or []]
