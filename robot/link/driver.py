"""Host side of the robot link: one serial port, one command at a time.

``RobotLink`` is the public face; its parts, which share one ``LinkState``
(robot/link/state.py), each have one job:

* robot/link/connection.py owns the port: open, reader thread, locked writes, loss,
  close, and the supervisor that reconnects after a disconnect (backoff) and
  resynchronizes (flush + PING) after a silence timeout;
* robot/link/replies.py decodes each received line and routes it to the command in
  flight or to the log;
* robot/link/commands.py runs one command at a time against its replies, and STOP;
* robot/link/handshake.py proves the robot there, idle and in step (flush, STOP if due,
  settle, PING) before the link is ready.

Threads (all started by ``start()``, joined by ``stop()``): one reader per open
connection, one supervisor. Writes go through one lock held only for the write
itself, so ``abort()`` from an HTTP thread reaches the wire without waiting for
the command in flight. Safety rules: a command is never re-sent; after a timeout
or disconnect the link is not ready until the robot has answered a PING again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from i18n import DEFAULT_LANG, t
from robot.codecs import LineCodec
from robot.codecs.json_codec import JsonCodec
from robot.link.commands import Commands
from robot.link.connection import Connection
from robot.link.fit import ReplyRule, rules_from
from robot.link.handshake import Handshake
from robot.link.outcome import (
    ABORTED_UNSENT,
    CommandOutcome,
    LinkFailure,
    RobotLinkError,
)
from robot.link.replies import ReplyRouter
from robot.link.state import LinkState

__all__ = ["ABORTED_UNSENT", "CommandOutcome", "RobotLink", "RobotLinkError"]

log = logging.getLogger("robot.link")


class RobotLink:
    """Driver for the robot on ``url`` (a device path or any pyserial URL)."""

    def __init__(self, url: str, baudrate: int = 115200, *, robot_timeout: float = 30.0,
                 command_timeouts: dict[str, float] | None = None, write_timeout: float = 2.0,
                 reconnect_min: float = 1.0, reconnect_max: float = 30.0,
                 exclusive: bool = True, handshake_timeout: float = 5.0,
                 codec: LineCodec | None = None, progress_interval: float = 0.2,
                 settle_time: float = 2.5, settle_timeout: float = 60.0,
                 reply_rules: Mapping[str, ReplyRule | Mapping[str, Any]] | None = None,
                 on_link_event: Callable[[str, dict[str, Any]], None] | None = None,
                 lang: str = DEFAULT_LANG) -> None:
        self.url = url
        self.baudrate = baudrate
        self.robot_timeout = robot_timeout
        self.command_timeouts = dict(command_timeouts or {})
        self.write_timeout = write_timeout
        self.reconnect_min = reconnect_min
        self.reconnect_max = max(reconnect_max, reconnect_min)
        self.exclusive = exclusive
        self.handshake_timeout = handshake_timeout
        # The words on the wire (robot/codecs/seam.py); everything else here is transport.
        self.codec = codec if codec is not None else JsonCodec()
        # The most often on_progress is called: its caller persists each call.
        self.progress_interval = progress_interval
        # No-id protocols: how long the robot must be quiet before a handshake, and
        # how long it may keep working before the handshake fails (robot/link/handshake.py).
        self.settle_time = settle_time
        self.settle_timeout = max(settle_timeout, settle_time)
        # What each command's replies must look like (robot/link/fit.py), by command name.
        self.reply_rules = rules_from(reply_rules)
        self.on_link_event = on_link_event
        # What info()'s "error" speaks: the server's language, as its stored failures do.
        self.lang = lang

        # The parts read the settings above from this object when they use them.
        self._state = LinkState()
        self._replies = ReplyRouter(self, self._state, event=self._event)
        self._connection = Connection(self, self._state, on_line=self._replies.on_line,
                                      on_idle=self._replies.tick, ping=self._ping,
                                      event=self._event)
        self._commands = Commands(self, self._state, write=self._connection.write,
                                  event=self._event)
        self._handshake = Handshake(self, self._state, self._commands,
                                    flush=self._connection.flush_input, event=self._event)
        self._supervisor: threading.Thread | None = None
        self._started = False

    # -- life cycle ------------------------------------------------------------------------
    def start(self, require_connection: bool = True, *, stop_first: bool = False) -> None:
        """Open the port and PING; with ``require_connection`` a failure raises.

        Without it, a failure is logged and the supervisor keeps retrying.
        ``stop_first``: the robot may still be running a command from before (a start
        that found an interrupted task): STOP it, and let it settle, before the PING.
        """
        if self._started:
            raise RuntimeError("RobotLink.start() called twice")
        self._state.stopping.clear()
        self._state.stop_before_sync = stop_first
        try:
            self._connection.connect()
        except RobotLinkError as exc:
            if require_connection:
                raise
            log.warning("robot not available yet (%s); retrying in the background", exc)
        self._started = True
        self._supervisor = threading.Thread(target=self._connection.supervise,
                                            name="robot-supervisor", daemon=True)
        self._supervisor.start()

    def stop(self) -> None:
        """Stop the threads and close the port. Idempotent."""
        state = self._state
        state.stopping.set()
        with state.cond:
            state.cond.notify_all()
            pending = state.pending
        if pending is not None:
            pending.inbox.put(("disconnected", LinkFailure("disconnected: link stopped",
                                                           "link_stopped")))
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join()
        self._supervisor = None
        with state.cond:
            conn = state.conn
            state.conn = None
            state.synced = False
            state.cond.notify_all()
        if conn is not None:
            self._connection.close(conn)
        self._replies.flush()
        self._started = False

    # -- state -----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        with self._state.cond:
            return self._state.ready_locked()

    def wait_ready(self, timeout: float | None) -> bool:
        state = self._state
        with state.cond:
            state.cond.wait_for(lambda: state.ready_locked() or state.stopping.is_set(),
                                timeout)
            return state.ready_locked()

    def info(self) -> dict[str, Any]:
        state = self._state
        with state.cond:
            error = state.error
            seen = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.last_seen))
                    if state.last_seen is not None else None)
            return {"connected": state.conn is not None, "ready": state.ready_locked(),
                    # No ids: waiting for the robot to be quiet before the handshake.
                    "settling": state.settling, "out_of_step": state.out_of_step,
                    "unsolicited_lines": state.unsolicited,
                    "port": self.url, "last_seen": seen, "firmware": state.firmware,
                    "error": None if error is None else
                    t(f"error.{error.code}", self.lang, **error.params),
                    "lines_in": state.lines_in,
                    "lines_out": state.lines_out, "skipped_lines": state.skipped,
                    "reconnects": state.reconnects, "protocol": self.codec.name,
                    # Which silence limit applies to what: the first question when a
                    # command timed out sooner or later than the operator expected.
                    "timeouts": {"default": self.robot_timeout,
                                 "commands": dict(self.command_timeouts)}}

    def _event(self, kind: str, **details: Any) -> None:
        info = {"port": self.url, **details}
        level = logging.INFO if kind in ("connected", "resynchronized", "settling") \
            else logging.WARNING
        log.log(level, "robot link %s: %s", kind, details or "")
        if self.on_link_event is not None:
            try:
                self.on_link_event(kind, info)
            except Exception:
                log.exception("on_link_event hook failed for %s", kind)

    # -- commands --------------------------------------------------------------------------
    @property
    def stop_epoch(self) -> int:
        """Pass to execute(stop_epoch=...) to refuse the command if STOP comes first."""
        return self._commands.stop_epoch

    def abort(self, confirm_within: float | None = None) -> bool:
        """Write STOP now, from the calling thread. True if it reached the port.

        With ``confirm_within``, the command in flight waits at most that long for the
        robot to confirm the STOP; then it ends with the code ``abort_not_confirmed``
        (a fault: the robot's state is unknown)."""
        return self._commands.abort(confirm_within)

    def give_up(self) -> bool:
        """Stop waiting for the command in flight now; it ends ``abort_not_confirmed``.
        True if a command was in flight."""
        return self._commands.give_up()

    def live_transcript(self) -> list[dict[str, Any]] | None:
        """The lines of the command in flight so far (None when no command runs)."""
        return self._commands.live_transcript()

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
        return self._commands.execute(cmd, params, on_progress, timeout, stop_epoch)

    def _ping(self) -> CommandOutcome:
        return self._handshake.run()
