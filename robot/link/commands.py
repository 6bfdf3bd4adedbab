"""The command side of the robot link: one command at a time, matched to its replies.

``execute()`` writes a command and waits for what the reader routes to it
(robot/link/replies.py): progress, then its result or an alarm, or nothing for too
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
from typing import Any, Protocol

from i18n import message
from robot.codecs import CodecError, Reply, Sent
from robot.codecs.framing import IdGenerator
from robot.link.fit import FitCheck
from robot.link.outcome import CommandOutcome, Fault, LinkFailure, Transcript
from robot.link.state import LinkSettings, LinkState, OpenPort, Pending
from shared.jsonbounds import MAX_DEPTH

log = logging.getLogger("robot.link")

OnProgress = Callable[[dict[str, Any]], None]


class Write(Protocol):
    """Connection.write: one line, or why not (robot/link/connection.py)."""

    def __call__(self, conn: OpenPort, data: bytes, *,
                 stop_epoch: int | None = None) -> LinkFailure | None: ...


def shown(line: bytes) -> str:
    return line.rstrip(b"\r\n").decode("utf-8", errors="replace")


class Commands:
    """Runs the command in flight (one at a time, under ``exec_lock``) and STOP."""

    def __init__(self, settings: LinkSettings, state: LinkState, *, write: Write,
                 event: Callable[..., None]) -> None:
        self.settings = settings
        self.state = state
        self._write = write
        self._event = event
        self._ids = IdGenerator()
        # One command (or handshake) on the wire at a time.
        self.exec_lock = threading.Lock()

    # -- STOP ------------------------------------------------------------------------------
    @property
    def stop_epoch(self) -> int:
        with self.state.write_lock:
            return self.state.stop_epoch

    def send_stop(self, pending: Pending | None) -> bool:
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

    def abort(self, confirm_within: float | None = None) -> bool:
        with self.state.cond:
            pending = self.state.pending
            if pending is not None and confirm_within is not None:
                deadline = time.monotonic() + confirm_within
                if pending.confirm_by is None or deadline < pending.confirm_by:
                    pending.confirm_by = deadline
                    pending.inbox.put(("tick", None))  # re-reads the deadline
        ok = self.send_stop(pending)
        if pending is None:
            self._resettle()
        log.warning("abort: STOP %s (command in flight: %s)", "sent" if ok else "NOT sent",
                    pending.cmd if pending else None)
        return ok

    def _unsync(self) -> None:
        """The robot's state is not known: the supervisor runs the handshake (settle,
        PING) before the link is ready for another command."""
        with self.state.cond:
            self.state.synced = False
            self.state.cond.notify_all()

    def _resettle(self) -> None:
        """No ids: after a STOP the robot must be quiet again, and answer a fresh
        handshake, before the next command (a late line must not pass for its reply)."""
        if not self.settings.codec.uses_ids:
            self._unsync()

    def give_up(self) -> bool:
        """Stop waiting for the command in flight now (a second shutdown signal): it
        ends unconfirmed, the robot's state unknown. True if a command was in flight."""
        with self.state.cond:
            pending = self.state.pending
        if pending is None or pending.handshake:
            return False
        pending.inbox.put(("given_up", None))
        return True

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
        with self.exec_lock:
            with state.cond:
                ready = state.ready_locked()
                connected = state.conn is not None
            if not ready:
                if not connected:
                    return CommandOutcome(False, "disconnected: robot link not connected",
                                          fault=Fault.DISCONNECTED, code="robot_not_connected")
                return CommandOutcome(False, "disconnected: robot link not synchronized "
                                      "(waiting for the robot to answer PING)",
                                      fault=Fault.DISCONNECTED, code="robot_not_synchronized")
            outcome = self.transact(cmd, params, on_progress, timeout,
                                    stop_epoch=stop_epoch)
        if outcome.fault in (Fault.TIMEOUT, Fault.ALARM):
            self._event("fault", error=outcome.message, cmd=cmd)
        return outcome

    def transact(self, cmd: str, params: dict[str, Any] | None,
                  on_progress: OnProgress | None, timeout: float, *,
                  handshake: bool = False, stop_epoch: int | None = None) -> CommandOutcome:
        """Write ``cmd`` and collect its replies. Caller holds ``exec_lock``."""
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
            # A lab codec's own words when it gives no reason of ours.
            why = exc.reason or message("wire.encode.codec_said", error=str(exc))
            return CommandOutcome(False, f"cannot send {cmd}: {exc}", code="encode_failed",
                                  params={"cmd": cmd, "error": why})
        pending = Pending(Sent(msg_id, cmd, dict(params or {}), line), Transcript(),
                          handshake=handshake)
        if not handshake:
            pending.fit = FitCheck(self.settings.reply_rules.get(cmd), pending.sent.params)
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
            if pending.stop_sent:
                self._resettle()

    def _collect(self, pending: Pending, on_progress: OnProgress | None,
                 timeout: float) -> CommandOutcome:
        """Wait for the end of the command in flight; progress goes to ``on_progress``
        at most every ``progress_interval`` s, however fast the robot sends it."""
        last = time.monotonic()
        due = 0.0  # when progress may be delivered next
        while True:
            now = time.monotonic()
            remaining = last + timeout - now
            confirm_by = pending.confirm_by
            if confirm_by is not None and now >= confirm_by:
                return self._unconfirmed(pending)
            if remaining <= 0:
                return self._on_silence(pending, timeout)
            if confirm_by is not None:
                remaining = min(remaining, confirm_by - now)
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
            elif kind == "out_of_step":
                return self._out_of_step(pending, *payload)
            elif kind == "given_up":
                return self._unconfirmed(pending)
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
        self._unsync()
        seconds = f"{timeout:g}"
        message = f"timeout: robot sent nothing for {seconds} s"
        # A handshake PING sends no STOP: nothing was started that could be moving.
        # Its outcome is never a task's, so it needs no code.
        code: str | None = None
        if not pending.handshake:
            sent = self.send_stop(pending)
            message += "; STOP sent" if sent else "; STOP could NOT be sent"
            code = "robot_timeout" if sent else "robot_timeout_stop_failed"
        return self._outcome(pending, False, message, fault=Fault.TIMEOUT, code=code,
                             params={"seconds": seconds})

    def _out_of_step(self, pending: Pending, reason: str, line: str,
                     why: dict[str, Any]) -> CommandOutcome:
        """A reply that cannot be this command's: the robot is doing something else.
        STOP it, forget what this command seemed to get (it may be another's), and
        resynchronize (STOP, quiet, handshake) before anything else goes out."""
        self._unsync()
        if not self.send_stop(pending):
            with self.state.cond:
                self.state.stop_before_sync = True  # then at the next handshake
        return self._outcome(pending, False, f"robot out of step: {reason} (line {line!r})",
                             fault=Fault.OUT_OF_STEP, code="robot_out_of_step",
                             params={"reason": why, "line": line}, keep_items=False)

    def _unconfirmed(self, pending: Pending) -> CommandOutcome:
        """The robot did not confirm a STOP in time (or the wait was given up): its
        state is unknown, so the link must resynchronize before anything else goes out."""
        self._unsync()
        pending.transcript.add("note", "STOP not confirmed: stopped waiting for the robot")
        return self._outcome(pending, False, "abort not confirmed: the robot did not answer "
                             "STOP in time", fault=Fault.TIMEOUT, code="abort_not_confirmed")

    def _outcome(self, pending: Pending, success: bool, message: str, *,
                 data: dict[str, Any] | None = None, fault: Fault | None = None,
                 aborted: bool = False, code: str | None = None,
                 params: dict[str, Any] | None = None,
                 keep_items: bool = True) -> CommandOutcome:
        with self.state.cond:
            items, dropped = list(pending.progress.items), pending.progress.dropped
        if not keep_items:
            items, dropped = [], 0
        return CommandOutcome(success=success, message=message, data=dict(data or {}),
                              fault=fault, aborted=aborted, items=items, items_dropped=dropped,
                              transcript=pending.transcript.export(), code=code,
                              params=dict(params or {}), sent=pending.written)
