"""Why a task failed or the queue is held: stable codes, texts in the server's language.

A stored failure is ``{"success": false, "code": C, "message": ...}``: clients match
``code`` (docs/commands.md lists them), people read ``message``, rendered once from
``error.C`` in the language the server speaks. Pause (hold) reasons work alike:
``pause_code`` beside ``pause_reason``.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from i18n import t


class _Meta(Protocol):
    def get_meta(self, key: str) -> str | None: ...

# Pause reasons that are not errors: their texts are at info.<code>, not error.<code>.
INFO_PAUSES = frozenset({"emergency_stop", "paused_by_operator"})

# The hold after a command that left the robot in an unknown state, by its fault.
FAULT_HOLDS = {"timeout": "hold_timeout", "disconnected": "hold_disconnected",
               "alarm": "hold_alarm", "out_of_step": "hold_out_of_step"}
# A fault another RobotPort may report that the table above does not know.
OTHER_FAULT_HOLD = "hold_fault"

# Why a running task was cancelled (manager.request_cancel's reason): the code is
# also the result's.
CANCELLED = "cancelled"
EMERGENCY_STOP = "emergency_stop"


def failure(code: str, lang: str, **params: Any) -> dict[str, Any]:
    """A failed or cancelled task's result, before its data."""
    return {"success": False, "code": code, "message": t(f"error.{code}", lang, **params)}


def outcome_code(outcome: Any) -> tuple[str, dict[str, Any]]:
    """(code, params) of a failed robot outcome (robot/link/outcome.py CommandOutcome)."""
    code = getattr(outcome, "code", None)
    if code is None:
        # A RobotPort that gives no code: its message is all there is, as the robot's.
        return ("robot_error", {"error": outcome.message}) if outcome.message else \
            ("robot_error_no_message", {})
    return code, dict(getattr(outcome, "params", None) or {})


def progress_message(event: dict[str, Any], lang: str) -> Any:
    """A progress event's message as people read it: one that the robot link composed
    (``message_i18n``, e.g. the text protocol's "scanned A position 5") in ``lang``;
    the robot's own words as they are."""
    text = event.get("message_i18n")
    if isinstance(text, dict) and isinstance(text.get("i18n"), str):
        return t(text["i18n"], lang, **(text.get("params") or {}))
    return event.get("message")


def pause_text(code: str, lang: str, params: dict[str, Any] | None = None) -> str:
    """The text of pause reason ``code``."""
    if code in INFO_PAUSES:
        return t(f"info.{code}", lang, **(params or {}))
    return t(f"error.{code}", lang, **(params or {}))


def fault_hold(fault: str, task_id: str, cmd_type: str) -> tuple[str, dict[str, Any]]:
    """(pause code, params) for a command that ended with ``fault``."""
    code = FAULT_HOLDS.get(fault)
    if code is None:
        return OTHER_FAULT_HOLD, {"task_id": task_id, "cmd_type": cmd_type, "fault": fault}
    return code, {"task_id": task_id, "cmd_type": cmd_type}


def stored_pause(store: _Meta, lang: str) -> tuple[str | None, str | None]:
    """(reason, code) of the hold saved by manager.pause. A reason made from the
    catalogue is made again, in ``lang``: the server may now speak another language.
    An operator's own words (no params saved) stay as written."""
    reason, code = store.get_meta("pause_reason"), store.get_meta("pause_code")
    raw = store.get_meta("pause_params")
    if code is None or raw is None:
        return reason, code
    try:
        params = json.loads(raw)
    except ValueError:
        return reason, code
    return (pause_text(code, lang, params) if isinstance(params, dict) else reason), code
