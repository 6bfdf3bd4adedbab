"""Host side of the robot link: one serial port, one command at a time.

Threads (all started by ``start()``, joined by ``stop()``):

* one reader per open connection owns every read from the port; it frames and
  parses lines and routes them to the command in flight (a queue) or to the log;
* one supervisor reconnects after a disconnect (backoff) and resynchronizes
  (flush + PING) after a silence timeout.

Writes go through one lock held only for the write itself, so ``abort()`` from
an HTTP thread reaches the wire without waiting for the command in flight.
Safety rules: a command is never re-sent; after a timeout or disconnect the link
is not ready until the robot has answered a PING again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import serial

from robot.bounds import MAX_DEPTH, value_too_deep
from robot.codec import CodecError, LineCodec, Reply, Sent
from robot.codec_json import JsonCodec
from robot.linelog import LineReport
from robot.outcome import (
    ABORTED_UNSENT,
    CommandOutcome,
    LinkFailure,
    RobotLinkError,
    Transcript,
    describe_open_error,
    short,
)
from robot.progress import ProgressLog
from robot.protocol import IdGenerator, LineFramer, OverlongLine

# Re-exported: tests and older callers import these from here.
_Transcript = Transcript
_describe_open_error = describe_open_error
__all__ = ["ABORTED_UNSENT", "CommandOutcome", "RobotLink", "RobotLinkError"]

log = logging.getLogger("robot.link")

READ_TIMEOUT = 0.2  # bounds how long a reader without cancel_read() takes to notice stop()


@dataclass
class _Pending:
    """The command in flight; the reader feeds ``inbox``, execute() drains it."""

    sent: Sent
    transcript: Transcript
    handshake: bool = False
    inbox: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)
    stop_sent: bool = False
    # Set when its result is routed: with no ids, a later result (a STOP's bare "ok")
    # arriving before the command has left _pending is not this command's.
    ended: bool = False
    progress: ProgressLog = field(default_factory=ProgressLog)
    # One "tick" at most waits in the inbox for progress and proof-of-life lines: a
    # chatty robot must not grow a backlog that also hides its silence.
    tick_queued: bool = False

    @property
    def cmd(self) -> str:
        return self.sent.cmd


class _Conn:
    """One open port and its reader thread."""

    def __init__(self, ser: serial.SerialBase) -> None:
        self.ser = ser
        self.closing = threading.Event()
        self.flush_framer = threading.Event()
        self.reader: threading.Thread | None = None


def _shown(line: bytes) -> str:
    return line.rstrip(b"\r\n").decode("utf-8", errors="replace")


class RobotLink:
    """Driver for the robot on ``url`` (a device path or any pyserial URL)."""

    def __init__(self, url: str, baudrate: int = 115200, *, robot_timeout: float = 30.0,
                 command_timeouts: dict[str, float] | None = None, write_timeout: float = 2.0,
                 reconnect_min: float = 1.0, reconnect_max: float = 30.0,
                 exclusive: bool = True, handshake_timeout: float = 5.0,
                 codec: LineCodec | None = None, progress_interval: float = 0.2,
                 on_link_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.url = url
        self.baudrate = baudrate
        self.robot_timeout = robot_timeout
        self.command_timeouts = dict(command_timeouts or {})
        self.write_timeout = write_timeout
        self.reconnect_min = reconnect_min
        self.reconnect_max = max(reconnect_max, reconnect_min)
        self.exclusive = exclusive
        self.handshake_timeout = handshake_timeout
        # The words on the wire (robot/codec.py); everything else here is transport.
        self.codec = codec if codec is not None else JsonCodec()
        # The most often on_progress is called: its caller persists each call.
        self.progress_interval = progress_interval
        self.on_link_event = on_link_event

        self._ids = IdGenerator()
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        # Bumped (under the write lock) by every STOP. A command written with an
        # older epoch is refused: a STOP that beat the command onto the wire must
        # not be followed by the very command it was meant to stop.
        self._stop_epoch = 0
        self._exec_lock = threading.Lock()
        self._stopping = threading.Event()
        self._conn: _Conn | None = None
        self._synced = False
        self._pending: _Pending | None = None
        # Ids of our own STOPs: their replies are expected, not stray lines.
        self._stop_ids: deque[int] = deque(maxlen=64)
        # No-id protocols: STOP replies still expected (they are not stray lines).
        self._stop_replies_due = 0
        self._supervisor: threading.Thread | None = None
        self._started = False

        self._firmware: str | None = None
        self._error: str | None = None
        self._last_seen: float | None = None
        self._lines_in = 0
        self._lines_out = 0
        self._skipped = 0
        self._reconnects = 0
        # A noisy line (wrong baud rate, debug firmware) must not flood the log.
        self._skip_report = LineReport(log, logging.WARNING, "skipped robot line")
        self._log_report = LineReport(log, logging.INFO, "robot log", burst=20)

    # -- life cycle ------------------------------------------------------------------------
    def start(self, require_connection: bool = True) -> None:
        """Open the port and PING; with ``require_connection`` a failure raises.

        Without it, a failure is logged and the supervisor keeps retrying.
        """
        if self._started:
            raise RuntimeError("RobotLink.start() called twice")
        self._stopping.clear()
        try:
            self._connect()
        except RobotLinkError as exc:
            if require_connection:
                raise
            log.warning("robot not available yet (%s); retrying in the background", exc)
        self._started = True
        self._supervisor = threading.Thread(target=self._supervise, name="robot-supervisor",
                                            daemon=True)
        self._supervisor.start()

    def stop(self) -> None:
        """Stop the threads and close the port. Idempotent."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
            pending = self._pending
        if pending is not None:
            pending.inbox.put(("disconnected", LinkFailure("disconnected: link stopped",
                                                           "link_stopped")))
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join()
        self._supervisor = None
        with self._cond:
            conn = self._conn
            self._conn = None
            self._synced = False
            self._cond.notify_all()
        if conn is not None:
            self._close_conn(conn)
        self._skip_report.flush()
        self._log_report.flush()
        self._started = False

    # -- state -----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        with self._cond:
            return self._ready_locked()

    def _ready_locked(self) -> bool:
        return self._conn is not None and self._synced and not self._stopping.is_set()

    def wait_ready(self, timeout: float | None) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: self._ready_locked() or self._stopping.is_set(), timeout)
            return self._ready_locked()

    def info(self) -> dict[str, Any]:
        with self._cond:
            seen = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._last_seen))
                    if self._last_seen is not None else None)
            return {"connected": self._conn is not None, "ready": self._ready_locked(),
                    "port": self.url, "last_seen": seen, "firmware": self._firmware,
                    "error": self._error, "lines_in": self._lines_in,
                    "lines_out": self._lines_out, "skipped_lines": self._skipped,
                    "reconnects": self._reconnects, "protocol": self.codec.name,
                    # Which silence limit applies to what: the first question when a
                    # command timed out sooner or later than the operator expected.
                    "timeouts": {"default": self.robot_timeout,
                                 "commands": dict(self.command_timeouts)}}

    def _event(self, kind: str, **details: Any) -> None:
        info = {"port": self.url, **details}
        level = logging.INFO if kind in ("connected", "resynchronized") else logging.WARNING
        log.log(level, "robot link %s: %s", kind, details or "")
        if self.on_link_event is not None:
            try:
                self.on_link_event(kind, info)
            except Exception:
                log.exception("on_link_event hook failed for %s", kind)

    # -- connecting ------------------------------------------------------------------------
    def _open(self) -> serial.SerialBase:
        # pyserial's rfc2217 refuses write_timeout (NotImplementedError at open); its
        # socket has a fixed 5 s timeout, so a stuck write still ends as an OSError.
        write_timeout = None if self.url.lower().startswith("rfc2217://") else \
            self.write_timeout
        try:
            ser = serial.serial_for_url(self.url, self.baudrate, timeout=READ_TIMEOUT,
                                        write_timeout=write_timeout, do_not_open=True)
            if "://" not in self.url:
                # pyserial's flock: a second program on the same port is refused, not
                # silently sharing (and stealing) the robot's replies. Device files only:
                # socket:// and rfc2217:// have no lock to take.
                ser.exclusive = self.exclusive
            ser.open()
        except (serial.SerialException, OSError, ValueError, NotImplementedError) as exc:
            raise RobotLinkError(describe_open_error(self.url, exc)) from exc
        return ser

    def _connect(self) -> None:
        """Open, start the reader, flush and PING. Raises RobotLinkError."""
        try:
            ser = self._open()
        except RobotLinkError as exc:
            self._set_error(str(exc))
            raise
        conn = _Conn(ser)
        try:
            ser.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            self._close_conn(conn)
            message = f"cannot use {self.url}: {exc}"
            self._set_error(message)
            raise RobotLinkError(message) from exc
        conn.reader = threading.Thread(target=self._read_loop, args=(conn,),
                                       name="robot-reader", daemon=True)
        with self._cond:
            self._conn = conn
            self._synced = False
            self._error = None  # the port is open: an earlier open error no longer holds
        conn.reader.start()
        error = self._handshake()
        if error is None:
            return
        with self._cond:
            mine = self._conn is conn
            if mine:
                self._conn = None
                self._synced = False
        if mine:
            self._close_conn(conn)
        self._set_error(error)
        raise RobotLinkError(error)

    def _handshake(self) -> str | None:
        """Flush input and PING; on success mark the link ready. Returns an error or None."""
        with self._cond:
            conn = self._conn
        if conn is None:
            return "disconnected"
        try:
            conn.ser.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            self._lost(conn, LinkFailure(f"disconnected: flush failed ({exc})",
                                         "robot_flush_failed", {"error": str(exc)}))
            return f"disconnected: {exc}"
        conn.flush_framer.set()
        with self._cond:
            # Whatever the robot still owed us was flushed with its input.
            self._stop_replies_due = 0
        with self._exec_lock:
            outcome = self._transact(self.codec.handshake_command, None, None,
                                     self.handshake_timeout, handshake=True)
        if outcome.success:
            firmware = outcome.data.get("firmware")
            with self._cond:
                if self._conn is not conn:
                    return "disconnected during PING"
                self._synced = True
                self._firmware = str(firmware) if firmware is not None else None
                self._error = None
                self._cond.notify_all()
            self._event("connected", firmware=self._firmware)
            return None
        if outcome.fault == "timeout":
            return (f"robot did not answer {self.codec.handshake_command} within "
                    f"{self.handshake_timeout:g} s (protocol {self.codec.name})")
        if outcome.fault == "disconnected":
            return outcome.message
        return f"robot refused {self.codec.handshake_command}: {outcome.message}"

    def _set_error(self, message: str) -> None:
        with self._cond:
            self._error = message

    def _supervise(self) -> None:
        delay = self.reconnect_min
        while not self._stopping.is_set():
            with self._cond:
                self._cond.wait_for(lambda: self._stopping.is_set() or not self._ready_locked())
                if self._stopping.is_set():
                    return
                connected = self._conn is not None
            if connected:
                # Silence timeout: the port is fine, the robot's state is not known.
                error = self._handshake()
                if error is None:
                    delay = self.reconnect_min
                    continue
                log.warning("resynchronization failed: %s; retrying in %.3g s", error, delay)
            else:
                if self._stopping.wait(delay):
                    return
                try:
                    self._connect()
                except RobotLinkError as exc:
                    self._event("connect_failed", error=str(exc), retry_in=delay)
                else:
                    with self._cond:
                        self._reconnects += 1
                    delay = self.reconnect_min
                    continue
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self.reconnect_max)

    def _lost(self, conn: _Conn, failure: LinkFailure) -> None:
        """The port failed (read/write error, EOF, write timeout): drop it."""
        reason = failure.message
        with self._cond:
            if self._conn is not conn:
                return
            self._conn = None
            self._synced = False
            self._error = reason
            pending = self._pending
            self._cond.notify_all()
        conn.closing.set()
        if pending is not None:
            pending.inbox.put(("disconnected", failure))
        self._close_conn(conn)
        self._event("disconnected", error=reason)

    def _close_conn(self, conn: _Conn) -> None:
        conn.closing.set()
        cancel = getattr(conn.ser, "cancel_read", None)
        if cancel is not None:
            try:
                cancel()
            except (serial.SerialException, OSError, AttributeError, TypeError) as exc:
                log.debug("cancel_read failed: %s", exc)
        reader = conn.reader
        if reader is not None and reader is not threading.current_thread():
            reader.join()
        # Under the write lock so abort() never writes to a half-closed port.
        with self._write_lock:
            try:
                conn.ser.close()
            except (serial.SerialException, OSError) as exc:
                log.debug("close failed: %s", exc)

    # -- reading ---------------------------------------------------------------------------
    def _read_loop(self, conn: _Conn) -> None:
        framer = LineFramer(self.codec.max_line, keep_heads=True)
        ser = conn.ser
        while not conn.closing.is_set():
            self._skip_report.tick()
            self._log_report.tick()
            try:
                data = ser.read(1)
                if data:
                    waiting = ser.in_waiting
                    if waiting:
                        data += ser.read(waiting)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # TypeError/AttributeError: pyserial's fd vanished under a concurrent close.
                if not conn.closing.is_set():
                    self._lost(conn, LinkFailure(f"disconnected: read failed ({exc})",
                                                 "robot_disconnected", {"error": str(exc)}))
                return
            if conn.flush_framer.is_set():
                conn.flush_framer.clear()
                framer.reset()
            if not data:
                continue
            for line in framer.feed(data):
                self._on_line(line)

    def _decode(self, raw: bytes, pending: _Pending | None) -> Reply:
        sent = pending.sent if pending is not None else None
        try:
            if isinstance(raw, OverlongLine):
                return self.codec.decode_overlong(raw, sent)
            reply = self.codec.decode(raw, sent)
        except Exception as exc:  # a codec bug must not kill the reader thread
            log.exception("robot protocol %s failed to decode a line", self.codec.name)
            return Reply(kind="invalid", error=f"decoder error ({type(exc).__name__}: {exc})")
        # Whatever the codec: nothing nested deeper than robot/bounds.py allows is kept.
        if reply.kind == "progress" and value_too_deep(reply.item, MAX_DEPTH - 2):
            return Reply(kind="invalid", error=f"progress item nested deeper than {MAX_DEPTH} "
                                               "levels")
        if reply.kind == "result" and value_too_deep(reply.data, MAX_DEPTH - 2):
            reply.rejected, reply.data = "too_deep", {}
        return reply

    def _on_line(self, raw: bytes) -> None:
        """One received line (an ``OverlongLine``: the head of one that was dropped)."""
        if not raw.strip():
            return
        text = raw.decode("utf-8", errors="replace")
        if isinstance(raw, OverlongLine):
            text = f"<over-long line discarded (> {self.codec.max_line} bytes)> {short(text)}"
        now = time.time()
        with self._cond:
            # Decoded under the lock: a no-id reply is read against the command in
            # flight, which must not change in between.
            self._lines_in += 1
            pending = self._pending
            reply = self._decode(raw, pending)
            route = self._route_locked(reply, pending)
            if route == "skip":
                self._skipped += 1
            else:
                self._last_seen = now
            # Progress, heartbeats, logs and STOP replies (proof of life only) go to the
            # pending command's log, with one wake-up token at most.
            wake = False
            if pending is not None and route != "skip" and (
                    route != "mine" or reply.kind == "progress"):
                if route == "mine":
                    pending.progress.add(reply, len(raw))
                wake = not pending.tick_queued
                pending.tick_queued = True
        if route == "skip":
            reason = reply.error if reply.kind == "invalid" else \
                (f"stale or unknown id {reply.id}" if reply.id is not None
                 else "no command in flight")
            if pending is not None:
                pending.transcript.add("rx", short(text), skipped=reason)
            self._skip_report.report(reason, text)
            return
        if pending is not None:
            pending.transcript.add("rx", text)
        if reply.kind == "log":
            self._log_report.report("", reply.message or "")
        elif reply.kind == "alarm" and route != "mine":
            # Nothing in flight to fail: the robot stopped itself while idle, and
            # whoever drives it next must know its state is unknown.
            self._event("alarm", error=reply.message)
        if pending is None:
            return
        if route == "mine" and reply.kind != "progress":
            pending.inbox.put((reply.kind, reply))
        elif wake:
            pending.inbox.put(("tick", None))

    def _route_locked(self, reply: Reply, pending: _Pending | None) -> str:
        """"mine" (for the command in flight), "alive" (proof of life only) or "skip"."""
        if reply.kind == "invalid":
            return "skip"
        if reply.kind in ("heartbeat", "log"):
            return "alive"
        if reply.kind == "alarm":
            if pending is None:
                return "alive"
            pending.ended = True  # it ends the command: a result after it is not its own
            return "mine"
        if self.codec.uses_ids:
            if reply.id is None:
                return "alive"
            if pending is not None and reply.id == pending.sent.msg_id:
                return "mine"
            return "alive" if reply.id in self._stop_ids else "skip"
        # No ids: a reply belongs to the command in flight, except a STOP's own reply:
        # marked as such, or a result once the command in flight has had its own.
        if pending is not None and pending.ended:
            pending = None
        if reply.to_stop or (pending is None and reply.kind == "result"
                             and self._stop_replies_due):
            self._stop_replies_due = max(0, self._stop_replies_due - 1)
            self._cond.notify_all()
            return "alive"
        if pending is None:
            return "skip"
        if reply.kind == "result":
            pending.ended = True
        return "mine"

    # -- writing ---------------------------------------------------------------------------
    def _write(self, conn: _Conn, data: bytes, *,
               stop_epoch: int | None = None) -> LinkFailure | None:
        """Write one line; returns why not (and drops the connection) on failure.

        With `stop_epoch`, the line is not written if a STOP went out since then:
        the failure's code is then "aborted_unsent".
        """
        try:
            with self._write_lock:
                if stop_epoch is not None and stop_epoch != self._stop_epoch:
                    return LinkFailure(ABORTED_UNSENT, "aborted_unsent")
                if conn.closing.is_set():
                    return LinkFailure("disconnected: port closed", "robot_port_closed")
                conn.ser.write(data)
        except serial.SerialTimeoutException:
            seconds = f"{self.write_timeout:g}"
            error = LinkFailure(f"disconnected: write timed out after {seconds} s",
                                "robot_write_timeout", {"seconds": seconds})
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            error = LinkFailure(f"disconnected: write failed ({exc})", "robot_write_failed",
                                {"error": str(exc)})
        else:
            with self._cond:
                self._lines_out += 1
            return None
        self._lost(conn, error)
        return error

    @property
    def stop_epoch(self) -> int:
        """Pass to execute(stop_epoch=...) to refuse the command if STOP comes first."""
        with self._write_lock:
            return self._stop_epoch

    def _send_stop(self, pending: _Pending | None) -> bool:
        with self._write_lock:
            self._stop_epoch += 1  # even when the robot is away: it must not run later
        with self._cond:
            conn = self._conn
        if conn is None:
            return False
        stop_id = self._ids.next()
        line = self.codec.encode_stop(stop_id)
        with self._cond:
            # Registered before the write so the reply can never look like a stray line,
            # and marked before it too: a fast robot's "aborted" may beat the write's
            # return, and must still count as the confirmation of this STOP.
            self._stop_ids.append(stop_id)
            if not self.codec.uses_ids:
                self._stop_replies_due += 1
            if pending is not None:
                pending.stop_sent = True
                pending.transcript.add("tx", _shown(line))
        ok = self._write(conn, line) is None
        if not ok:
            with self._cond:
                if not self.codec.uses_ids:
                    self._stop_replies_due = max(0, self._stop_replies_due - 1)
            if pending is not None:
                pending.transcript.add("note", "STOP could not be written")
        return ok

    def abort(self) -> bool:
        """Write STOP now, from the calling thread. True if it reached the port."""
        with self._cond:
            pending = self._pending
        ok = self._send_stop(pending)
        log.warning("abort: STOP %s (command in flight: %s)", "sent" if ok else "NOT sent",
                    pending.cmd if pending else None)
        return ok

    def live_transcript(self) -> list[dict[str, Any]] | None:
        """The lines of the command in flight so far (None when no command runs)."""
        with self._cond:
            pending = self._pending
        if pending is None or pending.handshake:
            return None
        return pending.transcript.export()

    # -- commands --------------------------------------------------------------------------
    def execute(self, cmd: str, params: dict[str, Any] | None = None, *,
                on_progress: Callable[[dict[str, Any]], None] | None = None,
                timeout: float | None = None, stop_epoch: int | None = None) -> CommandOutcome:
        """Send one command and wait for its result; never re-sends anything.

        With `stop_epoch` (read from `stop_epoch` before the caller committed to run
        the command), a STOP sent in between means the command is not sent at all:
        the outcome is aborted.
        """
        if timeout is None:
            timeout = self.command_timeouts.get(cmd, self.robot_timeout)
        with self._exec_lock:
            with self._cond:
                self._settle_stop_replies_locked()
                ready = self._ready_locked()
                connected = self._conn is not None
            if not ready:
                if not connected:
                    return CommandOutcome(False, "disconnected: robot link not connected",
                                          fault="disconnected", code="robot_not_connected")
                return CommandOutcome(False, "disconnected: robot link not synchronized "
                                      "(waiting for the robot to answer PING)",
                                      fault="disconnected", code="robot_not_synchronized")
            outcome = self._transact(cmd, params, on_progress, timeout,
                                     stop_epoch=stop_epoch)
        if outcome.fault in ("timeout", "alarm"):
            self._event("fault", error=outcome.message, cmd=cmd)
        return outcome

    def _settle_stop_replies_locked(self) -> None:
        """No ids: wait for the replies of STOPs sent so far before a new command goes
        out, or a late bare "ok" would be read as the new command's result. A robot
        that never answers leaves the link unsynchronized (flush + PING first)."""
        if self.codec.uses_ids or not self._stop_replies_due:
            return
        self._cond.wait_for(lambda: not self._stop_replies_due or self._conn is None
                            or self._stopping.is_set(), self.handshake_timeout)
        if self._stop_replies_due:
            log.warning("robot did not answer %d STOP(s) within %g s: resynchronizing",
                        self._stop_replies_due, self.handshake_timeout)
            self._stop_replies_due = 0
            self._synced = False
            self._cond.notify_all()

    def _transact(self, cmd: str, params: dict[str, Any] | None,
                  on_progress: Callable[[dict[str, Any]], None] | None, timeout: float, *,
                  handshake: bool = False, stop_epoch: int | None = None) -> CommandOutcome:
        """Write ``cmd`` and collect its replies. Caller holds ``_exec_lock``."""
        with self._cond:
            conn = self._conn
        if conn is None:
            return CommandOutcome(False, "disconnected: robot link not connected",
                                  fault="disconnected", code="robot_not_connected")
        msg_id = self._ids.next()
        try:
            line = self.codec.encode_command(msg_id, cmd, params)
        except CodecError as exc:
            # Nothing was written: the robot did nothing, and the link stays usable.
            return CommandOutcome(False, f"cannot send {cmd}: {exc}", code="encode_failed",
                                  params={"cmd": cmd, "error": str(exc)})
        pending = _Pending(Sent(msg_id, cmd, dict(params or {}), line), Transcript(),
                           handshake=handshake)
        with self._cond:
            # Checked under the same lock stop() uses to wake the command in flight.
            if self._stopping.is_set():
                return CommandOutcome(False, "disconnected: link stopped", fault="disconnected",
                                      code="link_stopped")
            self._pending = pending
        try:
            pending.transcript.add("tx", _shown(line))
            error = self._write(conn, line, stop_epoch=stop_epoch)
            if error is not None and error.code == "aborted_unsent":
                pending.transcript.add("note", "not sent: STOP was requested first")
                return self._outcome(pending, False, error.message, aborted=True,
                                     code=error.code)
            if error is not None:
                return self._outcome(pending, False, error.message,
                                     fault="disconnected", code=error.code,
                                     params=error.params)
            outcome = self._collect(pending, on_progress, timeout)
            # The last progress before the outcome: whoever records both sees them in order.
            self._deliver(pending, on_progress)
            return outcome
        finally:
            with self._cond:
                self._pending = None

    def _collect(self, pending: _Pending,
                 on_progress: Callable[[dict[str, Any]], None] | None,
                 timeout: float) -> CommandOutcome:
        """Wait for the end of the command in flight; progress goes to ``on_progress``
        at most every ``progress_interval`` s, however fast the robot sends it."""
        last = time.monotonic()
        due = 0.0  # when progress may be delivered next
        while True:
            now = time.monotonic()
            remaining = last + timeout - now
            if remaining <= 0:
                return self._on_silence(pending, timeout)
            with self._cond:
                fresh = on_progress is not None and pending.progress.fresh
            if fresh and now >= due:
                self._deliver(pending, on_progress)
                due = now + self.progress_interval
                continue
            try:
                kind, payload = pending.inbox.get(
                    timeout=min(remaining, due - now) if fresh else remaining)
            except queue.Empty:
                continue
            last = time.monotonic()  # anything from the robot proves it is alive
            if kind == "tick":
                with self._cond:
                    pending.tick_queued = False
            elif kind == "disconnected":
                failure: LinkFailure = payload
                return self._outcome(pending, False, failure.message, fault="disconnected",
                                     code=failure.code, params=failure.params)
            elif kind == "alarm":
                if payload.message:
                    return self._outcome(pending, False, f"alarm: {payload.message}",
                                         fault="alarm", code="robot_alarm",
                                         params={"error": payload.message})
                return self._outcome(pending, False, "alarm: robot alarm", fault="alarm",
                                     code="robot_alarm_no_message")
            elif kind == "result":
                return self._result(pending, payload)

    def _deliver(self, pending: _Pending,
                 on_progress: Callable[[dict[str, Any]], None] | None) -> None:
        if on_progress is None:
            return
        with self._cond:
            if not pending.progress.fresh:
                return
            event = pending.progress.take()
        try:
            on_progress(event)
        except Exception:
            # A broken observer must not turn a running robot command into a fault.
            log.exception("on_progress callback failed")

    def _result(self, pending: _Pending, reply: Reply) -> CommandOutcome:
        if reply.rejected is not None:
            # The robot ended the command, so its state is known (no fault, no hold);
            # what it returned cannot be kept.
            deep = reply.rejected == "too_deep"
            limit = MAX_DEPTH if deep else self.codec.max_line
            message = (f"result refused: nested deeper than {limit} levels" if deep else
                       f"result refused: line longer than {limit} bytes")
            pending.transcript.add("note", message)
            return self._outcome(pending, False, message,
                                 code="robot_result_too_deep" if deep else "robot_result_too_long",
                                 params={"limit": limit})
        success = bool(reply.success)
        if success:  # the robot's own words, else the guide's "<CMD>完成"
            return self._outcome(pending, True, reply.message or f"{pending.cmd}完成",
                                 data=reply.data)
        message = reply.message or ""
        aborted = pending.stop_sent and message.lower().startswith("aborted")
        # The robot's ERR text is its own (often firmware English): a parameter, not
        # translated.
        code, params = ("robot_error", {"error": message}) if message else \
            ("robot_error_no_message", {})
        return self._outcome(pending, False, message, data=reply.data, aborted=aborted,
                             code=code, params=params)

    def _on_silence(self, pending: _Pending, timeout: float) -> CommandOutcome:
        with self._cond:
            self._synced = False
            self._cond.notify_all()
        seconds = f"{timeout:g}"
        message = f"timeout: robot sent nothing for {seconds} s"
        # A handshake PING sends no STOP: nothing was started that could be moving.
        # Its outcome is never a task's, so it needs no code.
        code: str | None = None
        if not pending.handshake:
            sent = self._send_stop(pending)
            message += "; STOP sent" if sent else "; STOP could NOT be sent"
            code = "robot_timeout" if sent else "robot_timeout_stop_failed"
        return self._outcome(pending, False, message, fault="timeout", code=code,
                             params={"seconds": seconds})

    def _outcome(self, pending: _Pending, success: bool, message: str, *,
                 data: dict[str, Any] | None = None, fault: str | None = None,
                 aborted: bool = False, code: str | None = None,
                 params: dict[str, Any] | None = None) -> CommandOutcome:
        with self._cond:
            items, dropped = list(pending.progress.items), pending.progress.dropped
        return CommandOutcome(success=success, message=message, data=dict(data or {}),
                              fault=fault, aborted=aborted, items=items, items_dropped=dropped,
                              transcript=pending.transcript.export(), code=code,
                              params=dict(params or {}))
