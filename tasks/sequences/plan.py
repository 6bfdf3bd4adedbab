"""A sequence's body checked whole before anything is queued (docs/sequences.md): each
step against the command table, the rules, the limits. No I/O.

Every problem is collected, not only the first: a protocol's author fixes them all in
one round.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from tasks.commands import CommandError, CommandTable
from tasks.errors import TaskError
from tasks.models import parse_not_before

ON_ERROR = ("hold", "abort", "continue")
MAX_STEPS = 1000
MAX_RETRY = 10
MAX_TEXT = 200  # name, external_id, label
CONFIRM = "CONFIRM"  # the operator gate: sends nothing to the robot
CONFIRM_MESSAGE_MAX = 500
CONFIRM_TIMEOUT_MAX = 7 * 24 * 3600
_SEQUENCE_KEYS = {"name", "external_id", "on_error", "steps", "not_before"}
_STEP_KEYS = {"cmd_type", "params", "label", "on_error", "retry"}


@dataclass(frozen=True)
class Problem:
    step: int | None  # from 1; None: the sequence itself
    code: str  # error.<code> in the catalogues
    params: dict[str, Any]
    field: str | None = None


class PlanInvalid(TaskError):
    """The sequence is refused whole; ``problems`` lists every one found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(code="sequence_invalid", count=len(problems))
        self.problems = problems


@dataclass(frozen=True)
class PlanStep:
    step: int
    cmd_type: str
    params: dict[str, Any]
    label: str | None = None
    on_error: str | None = None  # its own rule; None: the sequence's
    retry: int = 0

    @property
    def is_confirm(self) -> bool:
        return self.cmd_type == CONFIRM


@dataclass(frozen=True)
class Plan:
    steps: tuple[PlanStep, ...]
    on_error: str = "hold"
    name: str | None = None
    external_id: str | None = None
    not_before: float | None = None  # it does not start before this time

    def rule(self, step: PlanStep) -> str:
        return step.on_error or self.on_error

    def as_body(self) -> dict[str, Any]:
        """The plan as a canonical body (the Idempotency-Key's hash is over this)."""
        body: dict[str, Any] = {
            "name": self.name, "external_id": self.external_id, "on_error": self.on_error,
            "steps": [{"cmd_type": s.cmd_type, "params": s.params, "label": s.label,
                       "on_error": s.on_error, "retry": s.retry} for s in self.steps]}
        if self.not_before is not None:  # absent: the hash of a body from before it existed
            body["not_before"] = self.not_before
        return body


def _text(body: dict[str, Any], key: str, step: int | None,
          problems: list[Problem]) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        problems.append(Problem(step, "sequence_text_invalid", {"field": key,
                                                                "max": MAX_TEXT}, key))
        return None
    return value.strip()


def _rule(body: dict[str, Any], step: int | None, problems: list[Problem]) -> str | None:
    value = body.get("on_error")
    if value is None:
        return None
    if value not in ON_ERROR:
        problems.append(Problem(step, "on_error_invalid", {"value": str(value)[:40],
                                                           "allowed": ", ".join(ON_ERROR)},
                                "on_error"))
        return None
    return str(value)


def _confirm(params: Any, step: int, problems: list[Problem]) -> dict[str, Any] | None:
    if not isinstance(params, dict):
        problems.append(Problem(step, "confirm_message_invalid",
                                {"max": CONFIRM_MESSAGE_MAX}, "params.message"))
        return None
    unknown = sorted(set(params) - {"message", "timeout_s"})
    message, timeout = params.get("message"), params.get("timeout_s")
    ok = True
    if unknown:
        problems.append(Problem(step, "sequence_unknown_field", {"names": ", ".join(unknown)},
                                f"params.{unknown[0]}"))
        ok = False
    if not isinstance(message, str) or not message.strip() \
            or len(message) > CONFIRM_MESSAGE_MAX:
        problems.append(Problem(step, "confirm_message_invalid",
                                {"max": CONFIRM_MESSAGE_MAX}, "params.message"))
        ok = False
    if timeout is not None and (isinstance(timeout, bool)
                                or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout)
                                or not 1 <= timeout <= CONFIRM_TIMEOUT_MAX):
        problems.append(Problem(step, "confirm_timeout_invalid",
                                {"max": CONFIRM_TIMEOUT_MAX}, "params.timeout_s"))
        ok = False
    if not ok:
        return None
    out: dict[str, Any] = {"message": str(message).strip()}
    if timeout is not None:
        out["timeout_s"] = timeout
    return out


def _step(raw: Any, k: int, table: CommandTable,
          problems: list[Problem]) -> PlanStep | None:
    if not isinstance(raw, dict):
        problems.append(Problem(k, "step_not_object", {}))
        return None
    before = len(problems)
    unknown = sorted(set(raw) - _STEP_KEYS)
    if unknown:
        problems.append(Problem(k, "sequence_unknown_field", {"names": ", ".join(unknown)},
                                unknown[0]))
    label = _text(raw, "label", k, problems)
    rule = _rule(raw, k, problems)
    retry = raw.get("retry", 0)
    if isinstance(retry, float) and retry.is_integer():
        retry = int(retry)  # JSON's 6.0 is the integer 6, as for a command's integer params
    if isinstance(retry, bool) or not isinstance(retry, int) or not 0 <= retry <= MAX_RETRY:
        problems.append(Problem(k, "retry_invalid", {"max": MAX_RETRY}, "retry"))
        retry = 0
    if raw.get("cmd_type") == CONFIRM:
        if retry:
            problems.append(Problem(k, "confirm_no_retry", {}, "retry"))
        params = _confirm(raw.get("params"), k, problems)
        cmd_type = CONFIRM
    else:
        try:
            cmd_type, params = table.validate({key: raw[key] for key in ("cmd_type", "params")
                                               if key in raw})
        except CommandError as exc:
            # The field as POST / names it (``params.x``): the same path in both replies.
            problems.append(Problem(k, exc.code, dict(exc.params), exc.field))
            return None
    if len(problems) > before or params is None:
        return None
    return PlanStep(k, cmd_type, params, label, rule, retry)


def build_plan(body: Any, table: CommandTable) -> Plan:
    """The plan of a sequence's body; raises PlanInvalid listing every problem."""
    problems: list[Problem] = []
    if not isinstance(body, dict):
        raise PlanInvalid([Problem(None, "sequence_not_object", {})])
    unknown = sorted(set(body) - _SEQUENCE_KEYS)
    if unknown:
        problems.append(Problem(None, "sequence_unknown_field", {"names": ", ".join(unknown)},
                                unknown[0]))
    name = _text(body, "name", None, problems)
    external_id = _text(body, "external_id", None, problems)
    rule = _rule(body, None, problems) or "hold"
    not_before = None
    if body.get("not_before") is not None:
        try:
            not_before = parse_not_before(body["not_before"], time.time())
        except ValueError as exc:
            problems.append(Problem(None, str(exc), {"value": str(body["not_before"])[:60]},
                                    "not_before"))
    raw_steps = body.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps or len(raw_steps) > MAX_STEPS:
        problems.append(Problem(None, "steps_invalid", {"max": MAX_STEPS}, "steps"))
        raise PlanInvalid(problems)
    steps = [_step(raw, k, table, problems) for k, raw in enumerate(raw_steps, start=1)]
    if problems:
        raise PlanInvalid(problems)
    return Plan(tuple(s for s in steps if s is not None), rule, name, external_id, not_before)
