"""The port side of the robot link: it owns the serial port.

Like pyserial's serial.threaded: one reader thread per open port does every
read and hands whole lines to a protocol object (robot/link/replies.py); writes go
through one lock. This module also opens the port, resynchronizes (flush +
PING) and reconnects after a loss, with backoff, on the supervisor thread.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable

import serial

from robot.codecs.framing import LineFramer
from robot.link.outcome import (
    ABORTED_UNSENT,
    CommandOutcome,
    Fault,
    LinkFailure,
    RobotLinkError,
    open_error,
    os_said,
    read_failure,
)
from robot.link.state import LinkSettings, LinkState, OpenPort

log = logging.getLogger("robot.link")

READ_TIMEOUT = 0.2  # bounds how long a reader without cancel_read() takes to notice stop()
_NOT_CONNECTED = LinkFailure("disconnected", "robot_not_connected")


def handshake_failure(outcome: CommandOutcome, command: str, protocol: str,
                      timeout: float) -> LinkFailure:
    """Why a handshake that did not succeed failed: English for logs, a code."""
    if outcome.code == "robot_not_settled" or outcome.fault is None and not outcome.sent \
            or outcome.fault == Fault.DISCONNECTED:
        return LinkFailure(outcome.message, outcome.code or "handshake_failed",
                           outcome.params if outcome.code else {"error": outcome.message})
    if outcome.fault == Fault.TIMEOUT:
        seconds = f"{timeout:g}"
        return LinkFailure(f"robot did not answer {command} within {seconds} s "
                           f"(protocol {protocol})", "handshake_timeout",
                           {"command": command, "seconds": seconds, "protocol": protocol})
    message = f"robot refused {command}: {outcome.message}"
    if outcome.code == "robot_error":  # the robot's own words
        return LinkFailure(message, "handshake_refused", {"command": command, **outcome.params})
    if outcome.code is None or outcome.code == "robot_error_no_message":
        return LinkFailure(message, "handshake_refused_no_message", {"command": command})
    # An alarm, a reply out of step, a result refused: the failure says it all.
    return LinkFailure(message, outcome.code, outcome.params)


def _read_waiting(ser: serial.SerialBase) -> bytes:
    """pyserial's way, for any port: a byte (or the timeout), then what else is waiting."""
    data = ser.read(1)
    if data:
        waiting = ser.in_waiting
        if waiting:
            data += ser.read(waiting)
    return data


def posix_reader(ser: serial.SerialBase) -> Callable[[], bytes] | None:
    """For a POSIX serial port (a real one or a pty): one select() and one os.read() of
    whatever has arrived, where pyserial's read(1), in_waiting and read(n) make two of
    each and an ioctl (about 0.1 ms more between the robot's line and its handling).
    The same semantics: the timeout, cancel_read()'s pipe, a ready port with no data is
    an error. None for other ports (sockets, Windows)."""
    fd, abort = getattr(ser, "fd", None), getattr(ser, "pipe_abort_read_r", None)
    if os.name != "posix" or not isinstance(fd, int) or not isinstance(abort, int):
        return None
    timeout = ser.timeout

    def read() -> bytes:
        ready, _, _ = select.select([fd, abort], [], [], timeout)
        if abort in ready:
            os.read(abort, 1000)
            return b""
        if not ready:
            return b""
        data = os.read(fd, 65536)
        if not data:
            raise serial.SerialException("device reports readiness to read but returned no "
                                         "data (device disconnected or multiple access on "
                                         "port?)")
        return data

    return read


class Connection:
    """Opens, reads, writes, loses and closes the port; the supervisor's loop."""

    def __init__(self, settings: LinkSettings, state: LinkState, *,
                 on_line: Callable[[bytes], None], on_idle: Callable[[], None],
                 ping: Callable[[], CommandOutcome],
                 event: Callable[..., None]) -> None:
        self.settings = settings
        self.state = state
        self._on_line = on_line  # each received line (robot/link/replies.py)
        self._on_idle = on_idle  # once per read, whatever came
        self._ping = ping  # the handshake command, as the command in flight
        self._event = event

    # -- connecting ------------------------------------------------------------------------
    def open(self) -> serial.SerialBase:
        url = self.settings.url
        # pyserial's rfc2217 refuses write_timeout (NotImplementedError at open); its
        # socket has a fixed 5 s timeout, so a stuck write still ends as an OSError.
        write_timeout = None if url.lower().startswith("rfc2217://") else \
            self.settings.write_timeout
        try:
            ser = serial.serial_for_url(url, self.settings.baudrate, timeout=READ_TIMEOUT,
                                        write_timeout=write_timeout, do_not_open=True)
            if "://" not in url:
                # pyserial's flock: a second program on the same port is refused, not
                # silently sharing (and stealing) the robot's replies. Device files only:
                # socket:// and rfc2217:// have no lock to take.
                ser.exclusive = self.settings.exclusive
            ser.open()
        except (serial.SerialException, OSError, ValueError, NotImplementedError) as exc:
            raise open_error(url, exc) from exc
        return ser

    def connect(self) -> None:
        """Open, start the reader, flush and PING. Raises RobotLinkError."""
        state = self.state
        try:
            ser = self.open()
        except RobotLinkError as exc:
            self.set_error(exc.failure())
            raise
        conn = OpenPort(ser)
        try:
            ser.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            self.close(conn)
            unusable = RobotLinkError("port_unusable", {"url": self.settings.url,
                                                        "error": str(exc)})
            self.set_error(unusable.failure())
            raise unusable from exc
        conn.reader = threading.Thread(target=self._read_loop, args=(conn,),
                                       name="robot-reader", daemon=True)
        with state.cond:
            state.conn = conn
            state.synced = False
            state.error = None  # the port is open: an earlier open error no longer holds
        conn.reader.start()
        error = self.handshake()
        if error is None:
            return
        with state.cond:
            mine = state.conn is conn
            if mine:
                state.conn = None
                state.synced = False
        if mine:
            self.close(conn)
        self.set_error(error)
        raise RobotLinkError(error.code, error.params)

    def flush_input(self) -> LinkFailure | None:
        """Discard what the robot sent so far (port buffer and framer); why not, or None.
        The handshake calls it as the command on the wire (robot/link/handshake.py)."""
        with self.state.cond:
            conn = self.state.conn
        if conn is None:
            return _NOT_CONNECTED
        try:
            conn.ser.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            failure = LinkFailure(f"disconnected: flush failed ({exc})",
                                  "robot_flush_failed", {"error": os_said(exc)})
            self.lost(conn, failure)
            return failure
        conn.flush_framer.set()
        return None

    def handshake(self) -> LinkFailure | None:
        """Flush, settle and PING (robot/link/handshake.py); on success mark the link ready.
        Returns why it failed (English for logs, a code for the operator) or None."""
        state = self.state
        with state.cond:
            conn = state.conn
        if conn is None:
            return _NOT_CONNECTED
        outcome = self._ping()
        codec = self.settings.codec
        if outcome.success:
            firmware = outcome.data.get("firmware")
            with state.cond:
                if state.conn is not conn:
                    return LinkFailure("disconnected during PING", "handshake_disconnected",
                                       {"command": codec.handshake_command})
                state.synced = True
                state.firmware = str(firmware) if firmware is not None else None
                state.error = None
                state.cond.notify_all()
            self._event("connected", firmware=state.firmware)
            return None
        return handshake_failure(outcome, codec.handshake_command, codec.name,
                                 self.settings.handshake_timeout)

    def set_error(self, failure: LinkFailure | None) -> None:
        with self.state.cond:
            self.state.error = failure

    def supervise(self) -> None:
        """The supervisor thread: reconnect after a loss, resynchronize after a silence."""
        state = self.state
        delay = self.settings.reconnect_min
        while not state.stopping.is_set():
            with state.cond:
                state.cond.wait_for(lambda: state.stopping.is_set() or not state.ready_locked())
                if state.stopping.is_set():
                    return
                connected = state.conn is not None
            if connected:
                # Silence timeout: the port is fine, the robot's state is not known.
                error = self.handshake()
                if error is None:
                    delay = self.settings.reconnect_min
                    continue
                log.warning("resynchronization failed: %s; retrying in %.3g s", error.message,
                            delay)
            else:
                if state.stopping.wait(delay):
                    return
                try:
                    self.connect()
                except RobotLinkError as exc:
                    self._event("connect_failed", error=str(exc), retry_in=delay)
                else:
                    with state.cond:
                        state.reconnects += 1
                    delay = self.settings.reconnect_min
                    continue
            if state.stopping.wait(delay):
                return
            delay = min(delay * 2, self.settings.reconnect_max)

    # -- losing and closing ----------------------------------------------------------------
    def lost(self, conn: OpenPort, failure: LinkFailure) -> None:
        """The port failed (read/write error, EOF, write timeout): drop it."""
        state = self.state
        reason = failure.message
        with state.cond:
            if state.conn is not conn:
                return
            state.conn = None
            state.synced = False
            state.error = failure
            pending = state.pending
            if pending is not None and pending.written and not pending.handshake:
                # The robot may still be running it: STOP it once it is back.
                state.stop_before_sync = True
            state.cond.notify_all()
        conn.closing.set()
        if pending is not None:
            pending.inbox.put(("disconnected", failure))
        self.close(conn)
        self._event("disconnected", error=reason)

    def close(self, conn: OpenPort) -> None:
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
        with self.state.write_lock:
            try:
                conn.ser.close()
            except (serial.SerialException, OSError) as exc:
                log.debug("close failed: %s", exc)

    # -- reading and writing ---------------------------------------------------------------
    def _read_loop(self, conn: OpenPort) -> None:
        framer = LineFramer(self.settings.codec.max_line, keep_heads=True)
        ser = conn.ser
        read = posix_reader(ser) or (lambda: _read_waiting(ser))
        while not conn.closing.is_set():
            self._on_idle()
            try:
                data = read()
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # TypeError/AttributeError: pyserial's fd vanished under a concurrent close.
                if not conn.closing.is_set():
                    self.lost(conn, read_failure(exc))
                return
            if conn.flush_framer.is_set():
                conn.flush_framer.clear()
                framer.reset()
            if not data:
                continue
            for line in framer.feed(data):
                self._on_line(line)

    def write(self, conn: OpenPort, data: bytes, *,
              stop_epoch: int | None = None) -> LinkFailure | None:
        """Write one line; returns why not (and drops the connection) on failure.

        With `stop_epoch`, the line is not written if a STOP went out since then:
        the failure's code is then "aborted_unsent".
        """
        state = self.state
        try:
            with state.write_lock:
                if stop_epoch is not None and stop_epoch != state.stop_epoch:
                    return LinkFailure(ABORTED_UNSENT, "aborted_unsent")
                if conn.closing.is_set():
                    return LinkFailure("disconnected: port closed", "robot_port_closed")
                conn.ser.write(data)
        except serial.SerialTimeoutException:
            seconds = f"{self.settings.write_timeout:g}"
            error = LinkFailure(f"disconnected: write timed out after {seconds} s",
                                "robot_write_timeout", {"seconds": seconds})
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            error = LinkFailure(f"disconnected: write failed ({exc})", "robot_write_failed",
                                {"error": os_said(exc)})
        else:
            with state.cond:
                state.lines_out += 1
            return None
        self.lost(conn, error)
        return error
