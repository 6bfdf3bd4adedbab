"""The command side of the robot link: one command at a time, matched to its replies.

``execute()`` writes a command and waits for what the reader routes to it
(robot/replies.py): progress, then its result or an alarm, or nothing for too
long (a silence timeout sends STOP). STOP itself (``abort()``) is written from
the calling thread at any time, and bumps the stop epoch so a command that has
not gone out yet never will. A command is never re-sent.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from robot.bounds import MAX_DEPTH
from robot.codec import CodecError, Reply, Sent
from robot.link_state import LinkSettings, LinkState, Pending
from robot.outcome import CommandOutcome, Fault, LinkFailure, Transcript
from robot.protocol import IdGenerator

if TYPE_CHECKING:
    from robot.connection import OpenPort

log = logging.getLogger("robot.link")

OnProgress = Callable[[dict[str, Any]], None]


class Write(Protocol):
    """Connection.write: one line, or why not (robot/connection.py)."""

    def __call__(self, conn: OpenPort, data: bytes, *,
                 stop_epoch: int | None = None) -> LinkFailure | None: ...


def shown(line: bytes) -> str:
    return line.rstrip(b"\r\n").decode("utf-8", errors="replace")


class Commands:
    """Runs the command in flight (one at a time, under ``_exec_lock``) and STOP."""

    def __init__(self, settings: LinkSettings, state: LinkState, *, write: Write,
                 event: Callable[..., None]) -> None:
        self.settings = settings
        self.state = state
        self._write = write
        self._event = event
        self._ids = IdGenerator()
        self._exec_lock = threading.Lock()

    # -- STOP ------------------------------------------------------------------------------
    @property
    def stop_epoch(self) -> int:
        with self.state.write_lock:
            return self.state.stop_epoch

    def _send_stop(self, pending: Pending | None) -> bool:
        state, codec = self.state, self.settings.codec
        with state.write_lock:
            state.stop_epoch += 1  # even when the robot is away: it must not run later
        with state.cond:
            conn = state.conn
        if conn is None:
            return False
        stop_id = self._ids.next()
        line = codec.encode_stop(stop_id)
        with state.cond:
            # Registered before the write so the reply can never look like a stray line,
            # and marked before it too: a fast robot's "aborted" may beat the write's
            # return, and must still count as the confirmation of this STOP.
            state.stop_ids.append(stop_id)
            if not codec.uses_ids:
                state.stop_replies_due += 1
            if pending is not None:
                pending.stop_sent = True
                pending.transcript.add("tx", shown(line))
        ok = self._write(conn, line) is None
        if not ok:
            with state.cond:
                if not codec.uses_ids:
                    state.stop_replies_due = max(0, state.stop_replies_due - 1)
            if pending is not None:
                pending.transcript.add("note", "STOP could not be written")
        return ok

    def abort(self) -> bool:
        with self.state.cond:
            pending = self.state.pending
        ok = self._send_stop(pending)
        log.warning("abort: STOP %s (command in flight: %s)", "sent" if ok else "NOT sent",
                    pending.cmd if pending else None)
        return ok

    def live_transcript(self) -> list[dict[str, Any]] | None:
        with self.state.cond:
            pending = self.state.pending
        if pending is None or pending.handshake:
            return None
        return pending.transcript.export()

    # -- commands --------------------------------------------------------------------------
    def execute(self, cmd: str, params: dict[str, Any] | None,
                on_progress: OnProgress | None, timeout: float,
                stop_epoch: int | None) -> CommandOutcome:
        state = self.state
        with self._exec_lock:
            with state.cond:
                self._settle_stop_replies_locked()
                ready = state.ready_locked()
                connected = state.conn is not None
            if not ready:
                if not connected:
                    return CommandOutcome(False, "disconnected: robot link not connected",
                                          fault=Fault.DISCONNECTED, code="robot_not_connected")
                return CommandOutcome(False, "disconnected: robot link not synchronized "
                                      "(waiting for the robot to answer PING)",
                                      fault=Fault.DISCONNECTED, code="robot_not_synchronized")
            outcome = self._transact(cmd, params, on_progress, timeout,
                                     stop_epoch=stop_epoch)
        if outcome.fault in (Fault.TIMEOUT, Fault.ALARM):
            self._event("fault", error=outcome.message, cmd=cmd)
        return outcome

    def ping(self) -> CommandOutcome:
        """The handshake command, run as the command in flight (no STOP on silence)."""
        with self._exec_lock:
            return self._transact(self.settings.codec.handshake_command, None, None,
                                  self.settings.handshake_timeout, handshake=True)

    def _settle_stop_replies_locked(self) -> None:
        """No ids: wait for the replies of STOPs sent so far before a new command goes
        out, or a late bare "ok" would be read as the new command's result. A robot
        that never answers leaves the link unsynchronized (flush + PING first)."""
        state = self.state
        if self.settings.codec.uses_ids or not state.stop_replies_due:
            return
        state.cond.wait_for(lambda: not state.stop_replies_due or state.conn is None
                            or state.stopping.is_set(), self.settings.handshake_timeout)
        if state.stop_replies_due:
            log.warning("robot did not answer %d STOP(s) within %g s: resynchronizing",
                        state.stop_replies_due, self.settings.handshake_timeout)
            state.stop_replies_due = 0
            state.synced = False
            state.cond.notify_all()

    def _transact(self, cmd: str, params: dict[str, Any] | None,
                  on_progress: OnProgress | None, timeout: float, *,
                  handshake: bool = False, stop_epoch: int | None = None) -> CommandOutcome:
        """Write ``cmd`` and collect its replies. Caller holds ``_exec_lock``."""
        state = self.state
        with state.cond:
            conn = state.conn
        if conn is None:
            return CommandOutcome(False, "disconnected: robot link not connected",
                                  fault=Fault.DISCONNECTED, code="robot_not_connected")
        msg_id = self._ids.next()
        try:
            line = self.settings.codec.encode_command(msg_id, cmd, params)
        except CodecError as exc:
            # Nothing was written: the robot did nothing, and the link stays usable.
            return CommandOutcome(False, f"cannot send {cmd}: {exc}", code="encode_failed",
                                  params={"cmd": cmd, "error": str(exc)})
        pending = Pending(Sent(msg_id, cmd, dict(params or {}), line), Transcript(),
                          handshake=handshake)
        with state.cond:
            # Checked under the same lock stop() uses to wake the command in flight.
            if state.stopping.is_set():
                return CommandOutcome(False, "disconnected: link stopped",
                                      fault=Fault.DISCONNECTED, code="link_stopped")
            state.pending = pending
        try:
            pending.transcript.add("tx", shown(line))
            error = self._write(conn, line, stop_epoch=stop_epoch)
            if error is not None and error.code == "aborted_unsent":
                pending.transcript.add("note", "not sent: STOP was requested first")
                return self._outcome(pending, False, error.message, aborted=True,
                                     code=error.code)
            # A write that failed may still have put the line, or part of it, on the wire.
            pending.written = True
            if error is not None:
                return self._outcome(pending, False, error.message,
                                     fault=Fault.DISCONNECTED, code=error.code,
                                     params=error.params)
            outcome = self._collect(pending, on_progress, timeout)
            # The last progress before the outcome: whoever records both sees them in order.
            self._deliver(pending, on_progress)
            return outcome
        finally:
            with state.cond:
                state.pending = None

    def _collect(self, pending: Pending, on_progress: OnProgress | None,
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
            with self.state.cond:
                fresh = on_progress is not None and pending.progress.fresh
            if fresh and now >= due:
                self._deliver(pending, on_progress)
                due = now + self.settings.progress_interval
                continue
            try:
                kind, payload = pending.inbox.get(
                    timeout=min(remaining, due - now) if fresh else remaining)
            except queue.Empty:
                continue
            last = time.monotonic()  # anything from the robot proves it is alive
            if kind == "tick":
                with self.state.cond:
                    pending.tick_queued = False
            elif kind == "disconnected":
                failure: LinkFailure = payload
                return self._outcome(pending, False, failure.message,
                                     fault=Fault.DISCONNECTED, code=failure.code,
                                     params=failure.params)
            elif kind == "alarm":
                if payload.message:
                    return self._outcome(pending, False, f"alarm: {payload.message}",
                                         fault=Fault.ALARM, code="robot_alarm",
                                         params={"error": payload.message})
                return self._outcome(pending, False, "alarm: robot alarm", fault=Fault.ALARM,
                                     code="robot_alarm_no_message")
            elif kind == "result":
                return self._result(pending, payload)

    def _deliver(self, pending: Pending, on_progress: OnProgress | None) -> None:
        if on_progress is None:
            return
        with self.state.cond:
            if not pending.progress.fresh:
                return
            event = pending.progress.take()
        try:
            on_progress(event)
        except Exception:
            # A broken observer must not turn a running robot command into a fault.
            log.exception("on_progress callback failed")

    # -- outcomes --------------------------------------------------------------------------
    def _result(self, pending: Pending, reply: Reply) -> CommandOutcome:
        if reply.rejected is not None:
            # The robot ended the command, so its state is known (no fault, no hold);
            # what it returned cannot be kept.
            deep = reply.rejected == "too_deep"
            limit = MAX_DEPTH if deep else self.settings.codec.max_line
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

    def _on_silence(self, pending: Pending, timeout: float) -> CommandOutcome:
        with self.state.cond:
            self.state.synced = False
            self.state.cond.notify_all()
        seconds = f"{timeout:g}"
        message = f"timeout: robot sent nothing for {seconds} s"
        # A handshake PING sends no STOP: nothing was started that could be moving.
        # Its outcome is never a task's, so it needs no code.
        code: str | None = None
        if not pending.handshake:
            sent = self._send_stop(pending)
            message += "; STOP sent" if sent else "; STOP could NOT be sent"
            code = "robot_timeout" if sent else "robot_timeout_stop_failed"
        return self._outcome(pending, False, message, fault=Fault.TIMEOUT, code=code,
                             params={"seconds": seconds})

    def _outcome(self, pending: Pending, success: bool, message: str, *,
                 data: dict[str, Any] | None = None, fault: Fault | None = None,
                 aborted: bool = False, code: str | None = None,
                 params: dict[str, Any] | None = None) -> CommandOutcome:
        with self.state.cond:
            items, dropped = list(pending.progress.items), pending.progress.dropped
        return CommandOutcome(success=success, message=message, data=dict(data or {}),
                              fault=fault, aborted=aborted, items=items, items_dropped=dropped,
                              transcript=pending.transcript.export(), code=code,
                              params=dict(params or {}), sent=pending.written)
