"""The handshake: proof that the robot is there, idle and in step before a command.

Run after every open, after a silence timeout, after a reply out of step and (no ids)
after every STOP, as the one command on the wire (under ``Commands.exec_lock``):

1. the input is flushed, and a STOP sent if one is due (a start that found an
   interrupted task, a reply out of step whose STOP could not be written);
2. protocols without ids: **settle**. The robot must be quiet for ``settle_time``
   (no BUSY, progress, result or stray line), and where the codec has a
   ``status_command``, its answer must not say busy. A robot that keeps working
   longer than ``settle_timeout`` fails the handshake (the supervisor retries);
3. the handshake command (PING). Its answer must name this handshake where the
   codec can tell (the text protocol's echoed nonce). If the robot showed work
   while it was answering, back to 2.

With ids on the wire a late reply can never pass for a new command's, so step 2 is
skipped: replies are matched by id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from robot.link.commands import Commands
from robot.link.outcome import CommandOutcome, Fault, LinkFailure
from robot.link.state import LinkSettings, LinkState

log = logging.getLogger("robot.link")


class Handshake:
    def __init__(self, settings: LinkSettings, state: LinkState, commands: Commands, *,
                 flush: Callable[[], LinkFailure | None], event: Callable[..., None]) -> None:
        self.settings = settings
        self.state = state
        self.commands = commands
        self._flush = flush  # the port's input buffer and framer; an error or None
        self._event = event

    def run(self) -> CommandOutcome:
        state, codec = self.state, self.settings.codec
        with self.commands.exec_lock:
            error = self._flush()
            if error is not None:
                return _failed(error.message, Fault.DISCONNECTED, error.code, **error.params)
            with state.cond:
                stop_first, state.stop_before_sync = state.stop_before_sync, False
                # Whatever the robot still owed us was flushed with its input.
                state.stop_replies_due = 0
            if stop_first:
                log.warning("robot link: STOP before the handshake (the robot may still "
                            "be running a command)")
                self.commands.send_stop(None)
            if codec.uses_ids:
                return self._ping()
            with state.cond:
                state.settling = True
                # A full quiet period from now: what came before the flush is unknown.
                state.last_activity = max(state.last_activity, time.monotonic())
            self._event("settling", seconds=self.settings.settle_time)
            try:
                return self._settle_and_ping()
            finally:
                with state.cond:
                    state.settling = False
                    state.cond.notify_all()

    def _ping(self) -> CommandOutcome:
        return self.commands.transact(self.settings.codec.handshake_command, None, None,
                                      self.settings.handshake_timeout, handshake=True)

    def _settle_and_ping(self) -> CommandOutcome:
        state = self.state
        deadline = time.monotonic() + self.settings.settle_timeout
        while True:
            failure = self._wait_quiet(deadline)
            if failure is not None:
                return failure
            idle = self._status_says_idle()
            if isinstance(idle, CommandOutcome):
                return idle
            if idle is False:
                with state.cond:
                    state.last_activity = time.monotonic()
                if time.monotonic() >= deadline:
                    return _failed(f"the robot still says it is busy after "
                                   f"{self.settings.settle_timeout:g} s", Fault.TIMEOUT,
                                   code="robot_not_settled",
                                   seconds=f"{self.settings.settle_timeout:g}")
                continue
            started = time.monotonic()
            outcome = self._ping()
            if not outcome.success:
                return outcome
            with state.cond:
                worked = state.last_activity > started
                echo = outcome.data.pop("echo", None)
                if echo is True:
                    state.echoes_nonce = True
                stale = echo is False and state.echoes_nonce
            if stale:
                return _failed("the robot answered the handshake without its nonce, "
                               "which it echoed before: a stale answer", None,
                               code="handshake_stale")
            if not worked:
                return outcome
            log.warning("robot link: the robot was working while it answered the "
                        "handshake; waiting for it to settle again")

    def _wait_quiet(self, deadline: float) -> CommandOutcome | None:
        """None once the robot has been quiet for settle_time (and our STOPs were
        answered, or had handshake_timeout to be); else why not."""
        state, settle = self.state, self.settings.settle_time
        stop_grace = time.monotonic() + self.settings.handshake_timeout
        with state.cond:
            while True:
                if state.stopping.is_set() or state.conn is None:
                    return _failed("disconnected while waiting for the robot to settle",
                                   Fault.DISCONNECTED, code="settle_disconnected")
                now = time.monotonic()
                quiet_until = state.last_activity + settle
                if state.stop_replies_due and now < stop_grace:
                    quiet_until = max(quiet_until, min(stop_grace, now + settle))
                if now >= quiet_until:
                    return None
                if now >= deadline:
                    return _failed(f"the robot kept working (it sent BUSY, progress or "
                                   f"replies) for {self.settings.settle_timeout:g} s with no "
                                   "command from this server", Fault.TIMEOUT,
                                   code="robot_not_settled",
                                   seconds=f"{self.settings.settle_timeout:g}")
                state.cond.wait(min(quiet_until, deadline) - now)

    def _status_says_idle(self) -> bool | None | CommandOutcome:
        """The codec's status command, asked once the robot is quiet: False if it says
        busy, a failed outcome if the link failed meanwhile, else True or None."""
        codec = self.settings.codec
        if codec.status_command is None:
            return None
        outcome = self.commands.transact(codec.status_command, None, None,
                                         self.settings.handshake_timeout, handshake=True)
        if outcome.fault == Fault.DISCONNECTED:
            return outcome
        if outcome.code == "encode_failed":
            return None  # the command table has no wire form for it: quiet decides
        if outcome.fault == Fault.TIMEOUT:
            return False  # no answer to a status request: not idle
        idle = codec.says_idle(outcome.success, outcome.message, outcome.data)
        if idle is False:
            log.info("robot link: the robot says it is busy (%s); waiting",
                     outcome.data or outcome.message)
        return idle


def _failed(message: str, fault: Fault | None, code: str | None = None,
            **params: object) -> CommandOutcome:
    return CommandOutcome(False, message, fault=fault, code=code, params=dict(params))
