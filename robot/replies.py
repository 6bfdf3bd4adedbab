"""What happens to each line the robot sends: the protocol object that the reader
thread (robot/connection.py) hands every line to.

A line is decoded against the command in flight and routed: to that command
(its result, alarm or progress), as proof of life only (heartbeats, logs, the
replies to our own STOPs), or skipped (invalid, stale, unasked). Skipped lines
and robot log lines are logged through ``LineReport`` so a noisy robot cannot
flood the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from robot.bounds import MAX_DEPTH, value_too_deep
from robot.codec import Reply
from robot.linelog import LineReport
from robot.link_state import LinkSettings, LinkState, Pending
from robot.outcome import short
from robot.protocol import OverlongLine

log = logging.getLogger("robot.link")


class ReplyRouter:
    """Decodes and routes each line; counts what it skips and what proves life."""

    def __init__(self, settings: LinkSettings, state: LinkState, *,
                 event: Callable[..., None]) -> None:
        self.settings = settings
        self.state = state
        self._event = event
        # A noisy line (wrong baud rate, debug firmware) must not flood the log.
        self._skip_report = LineReport(log, logging.WARNING, "skipped robot line")
        self._log_report = LineReport(log, logging.INFO, "robot log", burst=20)

    def tick(self) -> None:
        """Summaries of report intervals that are over (the reader calls it per read)."""
        self._skip_report.tick()
        self._log_report.tick()

    def flush(self) -> None:
        """Summaries of the intervals so far, now (the link is closing)."""
        self._skip_report.flush()
        self._log_report.flush()

    def _decode(self, raw: bytes, pending: Pending | None) -> Reply:
        codec = self.settings.codec
        sent = pending.sent if pending is not None else None
        try:
            if isinstance(raw, OverlongLine):
                return codec.decode_overlong(raw, sent)
            reply = codec.decode(raw, sent)
        except Exception as exc:  # a codec bug must not kill the reader thread
            log.exception("robot protocol %s failed to decode a line", codec.name)
            return Reply(kind="invalid", error=f"decoder error ({type(exc).__name__}: {exc})")
        # Whatever the codec: nothing nested deeper than robot/bounds.py allows is kept.
        if reply.kind == "progress" and value_too_deep(reply.item, MAX_DEPTH - 2):
            return Reply(kind="invalid", error=f"progress item nested deeper than {MAX_DEPTH} "
                                               "levels")
        if reply.kind == "result" and value_too_deep(reply.data, MAX_DEPTH - 2):
            reply.rejected, reply.data = "too_deep", {}
        return reply

    def on_line(self, raw: bytes) -> None:
        """One received line (an ``OverlongLine``: the head of one that was dropped)."""
        if not raw.strip():
            return
        state = self.state
        text = raw.decode("utf-8", errors="replace")
        if isinstance(raw, OverlongLine):
            text = (f"<over-long line discarded (> {self.settings.codec.max_line} bytes)> "
                    f"{short(text)}")
        now = time.time()
        with state.cond:
            # Decoded under the lock: a no-id reply is read against the command in
            # flight, which must not change in between.
            state.lines_in += 1
            pending = state.pending
            reply = self._decode(raw, pending)
            route = self._route_locked(reply, pending)
            if route == "skip":
                state.skipped += 1
            else:
                state.last_seen = now
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
            self._skip_report.report(reason or "", text)
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

    def _route_locked(self, reply: Reply, pending: Pending | None) -> str:
        """"mine" (for the command in flight), "alive" (proof of life only) or "skip"."""
        state = self.state
        if reply.kind == "invalid":
            return "skip"
        if reply.kind in ("heartbeat", "log"):
            return "alive"
        if reply.kind == "alarm":
            if pending is None:
                return "alive"
            pending.ended = True  # it ends the command: a result after it is not its own
            return "mine"
        if self.settings.codec.uses_ids:
            if reply.id is None:
                return "alive"
            if pending is not None and reply.id == pending.sent.msg_id:
                return "mine"
            return "alive" if reply.id in state.stop_ids else "skip"
        # No ids: a reply belongs to the command in flight, except a STOP's own reply:
        # marked as such, or a result once the command in flight has had its own.
        if pending is not None and pending.ended:
            pending = None
        if reply.to_stop or (pending is None and reply.kind == "result"
                             and state.stop_replies_due):
            state.stop_replies_due = max(0, state.stop_replies_due - 1)
            state.cond.notify_all()
            return "alive"
        if pending is None:
            return "skip"
        if reply.kind == "result":
            pending.ended = True
        return "mine"
