"""The queue-shaping part of the OpenAPI document (docs/queue.md): the paths of
server/queueops/ (move and jump, drain, maintenance and open, the maintenance record, the
CSV history) and their component schemas, and what issue 33 adds to the document's other
parts: `not_before` on POST / and POST /sequences, a task's `not_before` and
`waiting_for`, the queue's mode in /queue/status, /health and the SSE `queue` event, the
device's name and labels in /health and /robot, the 503 of a closed queue on every submit.

The modes, the limits and the number of pending ids a move answers with are the task
layer's and the export's, so the document states what the server enforces.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from server.api.openapi_schemas import (
    JSON,
    NULLABLE_STRING,
    TIME,
    error_reply,
    json_reply,
    object_schema,
    ref,
)
from server.api.openapi_security import REASON_MAX
from server.queueops.export import LIMIT_DEFAULT, LIMIT_MAX
from tasks.models import ALL_STATUSES, NOT_BEFORE_MAX_DAYS
from tasks.queue.modes import MODES
from tasks.queue.shaping import SHOWN_PENDING
from tasks.queue.views import WAITING_KEYS

Operation = Callable[..., dict[str, Any]]
WINDOWS_MAX = 1000  # GET /maintenance?limit= (server/queueops/routes.py)
WINDOWS_DEFAULT = 50
POSITION_MAX = 10**6  # a move's position and anchor (server/queueops/routes.py)
ANCHOR_MAX = 200
# What a pending task waits for, most fundamental first (docs/queue.md#why-a-task-waits):
# the params of each code of tasks/queue/views.py's WAITING_KEYS.
WAITING_PARAMS: dict[str, dict[str, Any]] = {
    "maintenance": {"reason": {"type": "string"}},
    "paused": {"reason": NULLABLE_STRING,
               "code": {**NULLABLE_STRING, "description": "the pause_code"}},
    "robot_disconnected": {},
    "sequence_held": {"sequence_id": {"type": "string"}},
    "not_before": {"time": {"type": "string", "description": "local, YYYY-MM-DD HH:MM:SS"},
                   "seconds": {"type": "integer", "minimum": 0,
                               "description": "how long until then"}},
    "queue_position": {"ahead": {"type": "integer", "minimum": 1,
                                 "description": "tasks that run before it, the running "
                                                "one included"}},
}
# The guide's format or ISO 8601 with a time (an offset or Z; without one: local).
_NOT_BEFORE_PATTERN = (r"^[12][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[T ]"
                       r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
                       r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?$")
NOT_BEFORE = {
    "type": ["string", "null"], "pattern": _NOT_BEFORE_PATTERN,
    "description": "do not start before this time: `YYYY-MM-DD HH:MM:SS` (the server's "
                   "local time, the guide's format) or ISO 8601 "
                   "(2026-12-07T14:30:00+08:00, ...Z; without an offset: local). The work "
                   "keeps its place; what may start behind it runs first. A past time "
                   "starts at its turn; at most "
                   f"{NOT_BEFORE_MAX_DAYS} days ahead (not_before_too_far); unreadable: "
                   "not_before_invalid. null or absent: none (docs/queue.md#not-before)",
    "examples": ["2026-12-07 14:30:00", "2026-12-07T14:30:00+08:00"]}
_NOT_BEFORE_SET = {"type": "string", "description": "only when set: it does not start before "
                   "this local time, YYYY-MM-DD HH:MM:SS"}
# A reason the audit row keeps and the maintenance record shows: 1-500 characters, at
# least one that is not white space or a control character.
_REASON = {"type": "string", "minLength": 1, "maxLength": REASON_MAX,
           "pattern": r"[^\s\x00-\x1f\x7f-\x9f]",
           "description": f"why: 1-{REASON_MAX} characters (else 400 "
                          "maintenance_reason_required)"}


def _waiting() -> dict[str, Any]:
    variants = [object_schema(["code", "message", "params"], {
        "code": {"const": code}, "message": {"type": "string", "description": "in the "
                                             "client's language (SSE: the server's)"},
        "params": object_schema(list(params), params)})
        for code, params in ((c, WAITING_PARAMS.get(c, {})) for c in WAITING_KEYS)]
    return {"description": "one reason a pending task does not start yet "
                           "(docs/queue.md#why-a-task-waits)", "oneOf": variants}


def _move_body() -> dict[str, Any]:
    """Exactly one of position, before, after; the other two absent or null."""
    where = {
        "position": {"type": "integer", "minimum": 1, "maximum": POSITION_MAX,
                     "description": "the queue position (as /queue/status's pending list "
                                    "counts: a sequence counts its steps) its (first) task "
                                    "takes; inside a sequence: before that sequence; past "
                                    "the end: the end"},
        **{side: {"type": "string", "minLength": 1, "maxLength": ANCHOR_MAX,
                  "description": f"{side} this pending task or queued sequence (a step of "
                                 "a queued sequence: its whole sequence)"}
           for side in ("before", "after")}}
    return {"description": "exactly one of position, before, after (else 400 "
                           "move_body_invalid); the reason goes in X-Reason",
            "oneOf": [object_schema([key], {k: (v if k == key else {"type": "null"})
                                      for k, v in where.items()}, closed=True)
                      for key in where]}


def queue_schemas(components: dict[str, Any]) -> dict[str, Any]:
    """The new components, and the existing ones this part extends (copies: Submission,
    SequenceBody, Task, Sequence, SequenceSummary, QueueStatus, Health, Robot and the
    EventQueue's data)."""
    maintenance_now: dict[str, Any] = {
        "type": ["object", "null"],
        "required": ["id", "reason", "opened_by", "opened_at", "maintenance_at"],
        "description": "the maintenance window in force; null while the queue is open",
        "properties": {"id": {"type": "integer"}, "reason": {"type": "string"},
                       "opened_by": {**NULLABLE_STRING, "description": "who drained or "
                                     "closed the queue"},
                       "opened_at": {"type": "string", "description": "local time, "
                                                                      "YYYY-MM-DD HH:MM:SS"},
                       "maintenance_at": {**TIME, "description": "when nothing ran any "
                                          "more; null while still draining"}}}
    window_props: dict[str, Any] = {
        **maintenance_now["properties"],
        "how": {"enum": ["drain", "maintenance"], "description": "how it was opened"},
        "closed_by": {**NULLABLE_STRING, "description": "who opened the queue again; null "
                                                        "while in force"},
        "closed_at": {**TIME, "description": "null while in force"},
        "close_reason": NULLABLE_STRING}
    mode_fields = {
        "queue_mode": {"enum": list(MODES), "description": "open; draining: submits are "
                       "refused, the queue runs what it has; maintenance: nothing starts "
                       "(docs/queue.md#drain-maintenance-and-pause)"},
        "maintenance": ref("MaintenanceNow")}
    device = {"name": {"type": "string", "description": "--name (ROBOT_NAME), else the "
                                                        "host name"},
              "labels": {"type": "object", "additionalProperties": {"type": "string"},
                         "description": "--labels (ROBOT_LABELS); {} when none"}}
    moved = {"success": {"const": True}, "code": {"const": "moved"},
             "message": {"type": "string"},
             "queue_position": {"type": "integer", "minimum": 1,
                                "description": "of the item's (first) task now"},
             "pending": {"type": "array", "items": {"type": "string"},
                         "maxItems": SHOWN_PENDING,
                         "description": f"the first {SHOWN_PENDING} pending task ids in the "
                                        "new order"},
             "version": {"type": "integer", "description": "the events version "
                                                           "(/queue/status's version)"}}
    out: dict[str, Any] = {
        "WaitingFor": _waiting(),
        "MaintenanceNow": maintenance_now,
        "MaintenanceWindow": object_schema(list(window_props), window_props),
        "MaintenanceList": object_schema(["success", "windows", "count"], {
            "success": {"const": True},
            "windows": {"type": "array", "items": ref("MaintenanceWindow"),
                        "description": "newest first"},
            "count": {"type": "integer", "minimum": 0}, **mode_fields}),
        "QueueMode": object_schema(["success", "code", "message", "changed", "queue_mode",
                              "maintenance"], {
            "success": {"const": True},
            "code": {"enum": [*MODES, "unchanged"], "description": "the mode entered; "
                     "unchanged: it already was (changed false)"},
            "message": {"type": "string"},
            "changed": {"type": "boolean", "description": "false: it was already so"},
            **mode_fields, "paused": {"type": "boolean"}, "pause_reason": NULLABLE_STRING,
            "pause_code": NULLABLE_STRING, "paused_by": NULLABLE_STRING},
            "the queue's state now; a pause is apart from the mode and stays as it was"),
        "MoveBody": _move_body(),
        "TaskMoved": object_schema(["success", "code", "message", "task_id", "queue_position",
                              "pending", "version"], {**moved, "task_id": {"type": "string"}}),
        "SequenceMoved": object_schema(["success", "code", "message", "sequence_id",
                                  "queue_position", "pending", "version"],
                                 {**moved, "sequence_id": {"type": "string"}}),
    }
    submission = copy.deepcopy(components["Submission"])
    for variant in submission["oneOf"]:
        variant["properties"]["not_before"] = NOT_BEFORE
    out["Submission"] = submission
    body = copy.deepcopy(components["SequenceBody"])
    body["properties"]["not_before"] = {
        **NOT_BEFORE, "description": "the sequence's first step does not start before this "
        "time; as POST /'s not_before (refused in errors: not_before_invalid, "
        "not_before_too_far)"}
    out["SequenceBody"] = body
    for name, extra in (
            ("Task", {"not_before": {**_NOT_BEFORE_SET, "description": _NOT_BEFORE_SET[
                "description"] + "; estimated_start_time is never before it"},
                      "waiting_for": {"type": "array", "items": ref("WaitingFor"),
                                      "description": "only while pending: why it does not "
                                      "start yet, most fundamental first; [] it starts next"}}),
            ("Sequence", {"not_before": _NOT_BEFORE_SET}),
            ("SequenceSummary", {"not_before": _NOT_BEFORE_SET}),
            ("QueueStatus", mode_fields), ("Health", {**mode_fields, **device}),
            ("Robot", device)):
        schema = copy.deepcopy(components[name])
        schema["properties"].update(extra)
        out[name] = schema
    event = copy.deepcopy(components["EventQueue"])
    event["description"] = ("the queue changed: paused or resumed, reordered (a move or a "
                            "jump), drained, in maintenance, open again")
    event["properties"]["data"]["contentSchema"]["properties"].update(mode_fields)
    out["EventQueue"] = event
    return out


def _closed_refusal(text: str) -> dict[str, Any]:
    return {**error_reply(text), "headers": {"Retry-After": {
        "schema": {"type": "integer"}, "description": "60 for draining and maintenance"}}}


def closed_queue(paths: dict[str, Any]) -> None:
    """What the other submits gain: not_before's refusals and the 503 of a queue that
    is draining or in maintenance (POST /, POST /task/{task_id}/retry, POST /sequences)."""
    closed = ("draining, maintenance (the queue takes no new work: reason in the message, "
              "docs/queue.md#drain-maintenance-and-pause)")
    submit = paths["/"]["post"]["responses"]
    submit["400"] = error_reply("malformed request or JSON; not_before_invalid, "
                                "not_before_too_far")
    submit["503"] = _closed_refusal(f"queue full, store unavailable, {closed}, or (sync "
                                    "mode) queue paused (Retry-After)")
    retry = paths["/task/{task_id}/retry"]["post"]["responses"]
    retry["503"] = _closed_refusal(f"queue full, store unavailable, or {closed} "
                                   "(Retry-After)")
    sequences = paths["/sequences"]["post"]["responses"]
    sequences["503"] = _closed_refusal(f"queue full (each step counts), store unavailable, "
                                       f"or {closed} (Retry-After)")
    sequences["422"] = error_reply("sequence_invalid (errors: [{step, code, message, "
                                   "field?}], step null for the sequence itself; "
                                   "not_before_invalid, not_before_too_far among them), or "
                                   "idempotency_key_reused")


def queue_paths(operation: Operation, errors: dict[str, Any]) -> dict[str, Any]:
    """The paths of server/queueops/; ``errors`` are the document's common replies by
    status."""
    def pick(*codes: str) -> dict[str, Any]:
        return {c: errors[c] for c in codes}

    task_id = {"name": "task_id", "in": "path", "required": True,
               "schema": {"type": "string"}}
    sequence_id = {"name": "sequence_id", "in": "path", "required": True,
                   "schema": {"type": "string"}}
    move_body = {"required": True, "content": {JSON: {"schema": ref("MoveBody"), "examples": {
        "position": {"value": {"position": 1}}, "before": {"value": {
            "before": "task_20261207_143022_abc123"}},
        "after": {"value": {"after": "seq_20261207_143500_k2m9zq"}}}}}}
    bad_move = error_reply("move_body_invalid: not exactly one of position, before, after; "
                           "position not an integer >= 1; an anchor that is no string")
    store = error_reply("not_saved: the new order could not be stored; nothing moved "
                        "(Retry-After)")
    anchor = "anchor_not_found (no pending task or queued sequence of that id)"
    not_queued = ("anchor_not_queued (the anchor is not waiting, is the item itself, or "
                  "in the sequence that holds the robot)")
    task_refused = error_reply("task_not_pending (running or final), task_in_sequence "
                               f"(a step: move its sequence), {not_queued}")
    sequence_refused = error_reply(f"sequence_not_pending (it holds the robot or ended), "
                                   f"{not_queued}")
    shaping = ("Permission queue, as pause: no ownership check. One transaction with its "
               "audit row (task.move, sequence.move); the order survives a restart; SSE "
               "sends a queue event and /queue/status's version changes "
               "(docs/queue.md#move-and-jump).")
    jump = ("No body (or {}). " + shaping)
    reason_body = {"required": True, "description": "reason is required: in this body or, "
                   "with no body, in the X-Reason header",
                   "content": {JSON: {"schema": object_schema(["reason"], {"reason": _REASON}),
                                      "example": {"reason": "monthly calibration"}}}}
    mode = json_reply(ref("QueueMode"), "the mode now; changed false when it already was")
    need_reason = error_reply("maintenance_reason_required: no reason of 1-500 characters "
                              "(body reason or X-Reason); or a body that is no JSON object")
    csv = "text/csv; charset=utf-8"
    return {
        "/task/{task_id}/move": {"post": operation(
            "Move a pending task: to a queue position, or before or after another", {
                "200": json_reply(ref("TaskMoved"), "moved: the new order"),
                "400": bad_move,
                "404": error_reply(f"task_not_found, {anchor}"), "409": task_refused,
                "503": store, **pick("411", "413", "415"),
            }, params=[task_id], body=move_body, description=shaping)},
        "/task/{task_id}/jump": {"post": operation("Move a pending task to the front", {
            "200": json_reply(ref("TaskMoved"), "moved: queue_position 1"),
            "404": error_reply("task_not_found"), "409": task_refused, "503": store,
        }, params=[task_id], description=jump)},
        "/sequences/{sequence_id}/move": {"post": operation(
            "Move a queued sequence, its steps as one block", {
                "200": json_reply(ref("SequenceMoved"), "moved: the new order"),
                "400": bad_move,
                "404": error_reply(f"sequence_not_found, {anchor}"), "409": sequence_refused,
                "503": store, **pick("411", "413", "415"),
            }, params=[sequence_id], body=move_body, description=shaping)},
        "/sequences/{sequence_id}/jump": {"post": operation(
            "Move a queued sequence to the front", {
                "200": json_reply(ref("SequenceMoved"), "moved: queue_position 1"),
                "404": error_reply("sequence_not_found"), "409": sequence_refused,
                "503": store,
            }, params=[sequence_id], description=jump)},
        "/queue/drain": {"post": operation(
            "Drain: refuse new work, run what is queued, then maintenance", {
                "200": mode, "400": need_reason, "503": store, **pick("411", "413", "415"),
            }, body=reason_body, description="Submits get 503 draining (Retry-After: 60); "
               "once nothing is pending or running and no sequence holds the robot the mode "
               "becomes maintenance by itself. Permission queue; audit action queue.drain "
               "(docs/queue.md#drain-maintenance-and-pause).")},
        "/queue/maintenance": {"post": operation(
            "Maintenance now: the running task ends, nothing else starts", {
                "200": mode, "400": need_reason, "503": store, **pick("411", "413", "415"),
            }, body=reason_body, description="Submits get 503 maintenance; a running "
               "sequence's next step waits too. Permission queue; audit action "
               "queue.maintenance (docs/queue.md#drain-maintenance-and-pause).")},
        "/queue/open": {"post": operation("Open the queue again: the window is closed", {
            "200": mode,
            "400": error_reply("a body that is no JSON object; reason_required "
                               "(--require-reason and no reason)"),
            "503": store, **pick("415"),
        }, body={"required": False, "description": "optional: why (the window's "
                 "close_reason)", "content": {JSON: {"schema": {
                     "type": "object", "properties": {"reason": {
                         **NULLABLE_STRING, "description": "null or absent: none; at most "
                         f"{REASON_MAX} characters are kept"}}}}}},
            description="Permission queue; audit action queue.open. With "
                        "--require-reason it needs a reason (400 reason_required).")},
        "/maintenance": {"get": operation("The maintenance record, newest first", {
            "200": json_reply(ref("MaintenanceList"), "each window: why, who opened and "
                                                      "closed it, when"),
            **pick("400"),
        }, params=[{"name": "limit", "in": "query", "schema": {
            "type": "integer", "minimum": 1, "maximum": WINDOWS_MAX,
            "default": WINDOWS_DEFAULT}}])},
        "/tasks.csv": {"get": operation("The task history as CSV (for Excel)", {
            "200": {"description": "UTF-8 with a byte-order mark, CRLF line ends, a header "
                                   "row in the request's language, newest first; one row "
                                   "per scanned bottle (rack, position, code), one for any "
                                   "other task. Content-Disposition: attachment; filename="
                                   "\"tasks-YYYYMMDD-HHMMSS.csv\"",
                    "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
                    "content": {csv: {"schema": {"type": "string"}}}},
            **pick("400"),
        }, params=[
            {"name": "status", "in": "query", "description": "absent: every status",
             "schema": {"enum": list(ALL_STATUSES)}},
            {"name": "cmd_type", "in": "query", "schema": {"type": "string"}},
            {"name": "sequence_id", "in": "query", "schema": {"type": "string"}},
            {"name": "external_id", "in": "query", "schema": {"type": "string"}},
            {"name": "limit", "in": "query", "description": "at most this many tasks (a "
             "scan's bottles are rows of one task)", "schema": {
                "type": "integer", "minimum": 1, "maximum": LIMIT_MAX,
                "default": LIMIT_DEFAULT}},
        ], description="The filters of GET /tasks (docs/queue.md#the-history-as-csv).")},
    }
