"""What happens to each line the robot sends: the protocol object that the reader
thread (robot/link/connection.py) hands every line to.

A line is decoded against the command in flight and routed: to that command
(its result, alarm or progress), as proof of life only (heartbeats, logs, the
replies to our own STOPs), or skipped (invalid, stale, unasked). A reply that
decodes as the command's but does not fit it (robot/link/fit.py: a position it did not
ask for, a wrong count, a result for another verb) fails the command as out of
step. With no ids on the wire, work lines arriving with no command in flight mean
the robot is still busy: the link resynchronizes (waits for quiet) before the next
command. Skipped, unsolicited and robot log lines are logged through ``LineReport``
so a noisy robot cannot flood the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from i18n import message
from robot.codecs import Reply
from robot.codecs.framing import OverlongLine
from robot.link.fit import english
from robot.link.linelog import LineReport
from robot.link.outcome import short
from robot.link.state import LinkSettings, LinkState, Pending
from shared.jsonbounds import MAX_DEPTH, value_too_deep

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
        self._busy_report = LineReport(log, logging.WARNING,
                                       "robot still working with no command in flight")

    def tick(self) -> None:
        """Summaries of report intervals that are over (the reader calls it per read)."""
        self._skip_report.tick()
        self._log_report.tick()
        self._busy_report.tick()

    def flush(self) -> None:
        """Summaries of the intervals so far, now (the link is closing)."""
        self._skip_report.flush()
        self._log_report.flush()
        self._busy_report.flush()

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
        # Whatever the codec: nothing nested deeper than shared/jsonbounds.py allows is kept.
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
        unfit: str | None = None
        why: dict[str, Any] | None = None  # unfit for the operator (i18n.message)
        with state.cond:
            # Decoded under the lock: a no-id reply is read against the command in
            # flight, which must not change in between.
            state.lines_in += 1
            pending = state.pending
            reply = self._decode(raw, pending)
            route = self._route_locked(reply, pending)
            if route == "mine":
                why = self._unfit_locked(reply, pending)
                if why is not None:
                    route = "out_of_step"
            self._note_activity_locked(reply, route, pending)
            if route == "skip":
                state.skipped += 1
            else:
                state.last_seen = now
            if route == "out_of_step":
                assert pending is not None
                pending.ended = True  # nothing after it is this command's
                state.out_of_step += 1
                if why is None:
                    why = reply.why or (message("wire.stray.codec_said", reason=reply.error)
                                        if reply.error else message("wire.stray.unknown"))
                unfit = english(why)
            elif route == "busy":
                state.unsolicited += 1
            # Progress, heartbeats, logs and STOP replies (proof of life only) go to the
            # pending command's log, with one wake-up token at most.
            wake = False
            if pending is not None and route in ("mine", "alive") and (
                    route != "mine" or reply.kind == "progress"):
                if route == "mine":
                    pending.progress.add(reply, len(raw))
                wake = not pending.tick_queued
                pending.tick_queued = True
        self._report(route, reply, pending, text, (unfit, why), wake)

    def _report(self, route: str, reply: Reply, pending: Pending | None, text: str,
                unfit_why: tuple[str | None, dict[str, Any] | None], wake: bool) -> None:
        """Outside the lock: transcript, log and the command's inbox."""
        if route == "skip":
            reason = reply.error if reply.kind in ("invalid", "stray") else \
                (f"stale or unknown id {reply.id}" if reply.id is not None
                 else "no command in flight")
            if pending is not None:
                pending.transcript.add("rx", short(text), skipped=reason)
            self._skip_report.report(reason or "", text)
            return
        if route == "busy":
            self._busy_report.report(reply.error or reply.kind, text)
            return
        if route == "out_of_step":
            assert pending is not None
            unfit, why = unfit_why
            pending.transcript.add("rx", short(text), out_of_step=unfit)
            log.warning("robot out of step during %s: %s (line %r)", pending.cmd, unfit,
                        short(text))
            pending.inbox.put(("out_of_step", (unfit, short(text), why)))
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

    @staticmethod
    def _unfit_locked(reply: Reply, pending: Pending | None) -> dict[str, Any] | None:
        """Why a reply routed to the command in flight cannot be its own, or None."""
        if pending is None:
            return None
        if reply.kind == "progress":
            return pending.fit.item(reply.item)
        if reply.kind == "result" and reply.rejected is None:
            return pending.fit.result(bool(reply.success), reply.data)
        return None

    def _note_activity_locked(self, reply: Reply, route: str, pending: Pending | None) -> None:
        """No ids: remember when the robot last showed it was working. The handshake's
        own answers do not count; anything unsolicited makes the link resynchronize."""
        state = self.state
        if self.settings.codec.uses_ids or route == "skip" or reply.kind == "log":
            return  # a skipped line (noise, a stale handshake answer) shows no work
        if route == "mine" and pending is not None and pending.handshake:
            return
        state.last_activity = time.monotonic()
        if route == "busy" and state.synced and not state.settling:
            state.synced = False  # the supervisor waits on this: the handshake again
            state.cond.notify_all()
        elif state.settling:
            state.cond.notify_all()  # the quiet wait starts over

    def _route_locked(self, reply: Reply, pending: Pending | None) -> str:
        """"mine" (for the command in flight), "alive" (proof of life only), "skip",
        "out_of_step" (a reply, but another command's) or "busy" (no ids: work with
        no command in flight)."""
        state = self.state
        if reply.kind == "invalid":
            return "skip"
        if reply.kind == "log":
            return "alive"
        if reply.kind == "alarm":
            if pending is None:
                return "alive"
            pending.ended = True  # it ends the command: a result after it is not its own
            return "mine"
        if self.settings.codec.uses_ids:
            if reply.kind == "heartbeat" or reply.id is None:
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
            return "busy"
        if reply.kind == "heartbeat":
            return "alive"
        if reply.kind == "stray":
            # A stale answer during a handshake is skipped: the handshake waits for its own.
            return "skip" if pending.handshake else "out_of_step"
        if reply.kind == "result":
            pending.ended = True
        return "mine"
