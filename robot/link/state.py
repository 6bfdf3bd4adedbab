"""What the parts of the robot link share: its settings, and the state that the
port side (robot/link/connection.py), the reply router (robot/link/replies.py) and the
command side (robot/link/commands.py) read and change under one condition.

One lock for all of it on purpose: a reply is routed against the command in
flight, and a lost port fails that command, each in one step.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import serial

from robot.codecs import LineCodec, Sent
from robot.link.fit import FitCheck, ReplyRule
from robot.link.outcome import LinkFailure, Transcript
from robot.link.progress import ProgressLog


class OpenPort:
    """One open port and its reader thread."""

    def __init__(self, ser: serial.SerialBase) -> None:
        self.ser = ser
        self.closing = threading.Event()
        self.flush_framer = threading.Event()
        self.reader: threading.Thread | None = None


class LinkSettings(Protocol):
    """The link's settings (RobotLink's attributes), read when used."""

    url: str
    baudrate: int
    write_timeout: float
    exclusive: bool
    handshake_timeout: float
    reconnect_min: float
    reconnect_max: float
    progress_interval: float
    settle_time: float
    settle_timeout: float
    reply_rules: dict[str, ReplyRule]
    codec: LineCodec


@dataclass
class Pending:
    """The command in flight; the reader feeds ``inbox``, execute() drains it."""

    sent: Sent
    transcript: Transcript
    handshake: bool = False
    inbox: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)
    stop_sent: bool = False
    # Set when its result is routed: with no ids, a later result (a STOP's bare "ok")
    # arriving before the command has left ``LinkState.pending`` is not this command's.
    ended: bool = False
    progress: ProgressLog = field(default_factory=ProgressLog)
    # One "tick" at most waits in the inbox for progress and proof-of-life lines: a
    # chatty robot must not grow a backlog that also hides its silence.
    tick_queued: bool = False
    # Its line went to the port (CommandOutcome.sent).
    written: bool = False
    # Its replies against what the command table says they must look like.
    fit: FitCheck = field(default_factory=lambda: FitCheck(None, {}))
    # Monotonic time by which the robot must have confirmed a STOP (abort with
    # ``confirm_within``): a shutdown must not wait the command's whole silence limit.
    confirm_by: float | None = None

    @property
    def cmd(self) -> str:
        return self.sent.cmd


class LinkState:
    """Everything below is guarded by ``cond`` except ``stop_epoch`` (``write_lock``)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        # Held only for a write (and a close), so abort() from an HTTP thread reaches
        # the wire without waiting for the command in flight.
        self.write_lock = threading.Lock()
        # Bumped (under the write lock) by every STOP. A command written with an
        # older epoch is refused: a STOP that beat the command onto the wire must
        # not be followed by the very command it was meant to stop.
        self.stop_epoch = 0
        self.stopping = threading.Event()
        self.conn: OpenPort | None = None
        self.synced = False
        self.pending: Pending | None = None
        # Ids of our own STOPs: their replies are expected, not stray lines.
        self.stop_ids: deque[int] = deque(maxlen=64)
        # No-id protocols: STOP replies still expected (they are not stray lines).
        self.stop_replies_due = 0
        # STOP the robot before the next handshake: it may still be running something
        # (a start that found an interrupted task, a reply that was out of step).
        self.stop_before_sync = False
        # No-id protocols: monotonic time of the last line showing the robot at work
        # (BUSY, a BOTTLE, a result, a stray reply); the handshake waits for quiet.
        self.last_activity = 0.0
        self.settling = False
        # The firmware echoed a handshake's nonce once: a PONG without one is stale.
        self.echoes_nonce = False
        self.out_of_step = 0
        self.unsolicited = 0

        self.firmware: str | None = None
        # Why the link is down (the last loss or failed open): rendered on each read of
        # info(), in the link's language.
        self.error: LinkFailure | None = None
        self.last_seen: float | None = None
        self.lines_in = 0
        self.lines_out = 0
        self.skipped = 0
        self.reconnects = 0

    def ready_locked(self) -> bool:
        return self.conn is not None and self.synced and not self.stopping.is_set()
