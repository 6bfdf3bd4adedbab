"""Route functions of the queue as an operator shapes it (docs/queue.md): move and jump
a waiting task or sequence, drain for maintenance, maintenance, open, the maintenance
record; and a submit's ``not_before``."""

from __future__ import annotations

import time
from typing import Any

from server.api.routing import Request, Response, Router
from server.errors import ApiError
from server.queueops.waiting import localize
from server.transport.headers import one_line
from tasks.models import parse_not_before

_MOVE_KEYS = ("position", "before", "after")
REASON_MAX = 500


def not_before(req: Request) -> float | None:
    """A submit's optional ``not_before`` as a POSIX time; 400 naming the value."""
    body = req.framed_json()
    value = body.get("not_before")
    if value is None:
        return None
    try:
        return parse_not_before(value, time.time())
    except ValueError as exc:
        raise ApiError(str(exc), 400, params={"value": repr(value)[:60]},
                       extra={"field": "not_before"}) from None


def _where(req: Request) -> dict[str, Any]:
    """A move's target: exactly one of position, before, after (400 otherwise)."""
    body = req.json_object() if req.body.strip() else {}
    given = {k: body[k] for k in _MOVE_KEYS if body.get(k) is not None}
    unknown = set(body) - {*_MOVE_KEYS, "reason"}
    if len(given) != 1 or unknown:
        raise ApiError("move_body_invalid", 400)
    key, value = next(iter(given.items()))
    if key == "position":
        # 3.0 is an integer to JSON Schema (and to a JavaScript client): taken as 3.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**6:
            raise ApiError("move_body_invalid", 400)
    elif not isinstance(value, str) or not value or len(value) > 200:
        raise ApiError("move_body_invalid", 400)
    return {key: value}


def _moved(req: Request, item: str, *, sequence: bool, where: dict[str, Any]) -> Response:
    action = "sequence.move" if sequence else "task.move"
    moved = req.app.manager.move(item, sequence=sequence, audit=req.audit(action), **where)
    key = "sequence_id" if sequence else "task_id"
    return Response(200, {"success": True, "code": "moved",
                          "message": req.t("info.moved", position=moved["queue_position"]),
                          key: item, **moved})


def move_task(req: Request) -> Response:
    return _moved(req, req.params["task_id"], sequence=False, where=_where(req))


def jump_task(req: Request) -> Response:
    return _moved(req, req.params["task_id"], sequence=False, where={"position": 1})


def move_sequence(req: Request) -> Response:
    return _moved(req, req.params["sequence_id"], sequence=True, where=_where(req))


def jump_sequence(req: Request) -> Response:
    return _moved(req, req.params["sequence_id"], sequence=True, where={"position": 1})


# -- drain, maintenance, open -----------------------------------------------------------
def _reason(req: Request, *, required: bool = True) -> str | None:
    """Why: the body's ``reason`` (a string of 1-500 characters once control characters
    are gone), else the X-Reason header; 400 when required and neither says."""
    body = req.json_object() if req.body.strip() else {}
    given = body.get("reason")
    if given is not None and (not isinstance(given, str) or len(given) > REASON_MAX):
        raise ApiError("maintenance_reason_required", 400)
    text = None if given is None else one_line(given, REASON_MAX)
    if text is not None:
        return text
    reason = None if given is not None else req.reason()  # a blank reason says nothing
    if reason is None and required:
        raise ApiError("maintenance_reason_required", 400)
    return reason


def _mode_reply(req: Request, state: dict[str, Any], changed: bool) -> Response:
    mode = state["queue_mode"]
    code = mode if changed else "unchanged"
    message = req.t(f"info.{mode}") if changed else req.t("info.unchanged", mode=mode)
    return Response(200, {"success": True, "code": code, "message": message,
                          "changed": changed, **state})


def queue_drain(req: Request) -> Response:
    reason = _reason(req)
    assert reason is not None
    return _mode_reply(req, *req.app.manager.drain(reason, req.audit("queue.drain")))


def queue_maintenance(req: Request) -> Response:
    reason = _reason(req)
    assert reason is not None
    return _mode_reply(req, *req.app.manager.maintenance(reason,
                                                         req.audit("queue.maintenance")))


def queue_open(req: Request) -> Response:
    reason = _reason(req, required=False)  # a body, if any, is checked alike
    req.need_reason()
    return _mode_reply(req, *req.app.manager.open_queue(reason, req.audit("queue.open")))


def maintenance_record(req: Request) -> Response:
    limit = req.query_int("limit", default=50, low=1, high=1000)
    windows = req.app.manager.maintenance_windows(limit)
    return Response(200, {"success": True, "windows": windows, "count": len(windows),
                          **req.app.manager.mode_fields()})


def localized(req: Request, doc: dict[str, Any]) -> dict[str, Any]:
    """A task document with its ``waiting_for`` in the request's language."""
    return localize(doc, req.lang, req.app.manager.lang)


def add_routes(r: Router) -> None:
    r.add("POST", "/task/<task_id>/move", move_task, "queue")
    r.add("POST", "/task/<task_id>/jump", jump_task, "queue")
    r.add("POST", "/sequences/<sequence_id>/move", move_sequence, "queue")
    r.add("POST", "/sequences/<sequence_id>/jump", jump_sequence, "queue")
    r.add("POST", "/queue/drain", queue_drain, "queue")
    r.add("POST", "/queue/maintenance", queue_maintenance, "queue")
    r.add("POST", "/queue/open", queue_open, "queue")
    r.add("GET", "/maintenance", maintenance_record, "read")
