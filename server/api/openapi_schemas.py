"""The component schemas of the OpenAPI document (server/api/openapi.py has the paths).

The command schemas come from the table this server validates commands with, so
a lab's own commands appear too.
"""

from __future__ import annotations

from typing import Any

from tasks.commands import CommandTable, Param
from tasks.models import ALL_STATUSES

JSON = "application/json"
NULLABLE_STRING = {"type": ["string", "null"]}
CODE = {"type": "string", "pattern": "^[a-z][a-z0-9_]*$",
        "description": "stable machine code of the message (docs/api.md); match on it, "
                       "not on the text"}
# Every reply's texts (message, warning, command descriptions) follow this header.
ACCEPT_LANGUAGE = {"name": "Accept-Language", "in": "header", "required": False,
                   "description": "zh or en, with q-values (zh-CN,zh;q=0.9,en;q=0.8); other "
                                  "languages, or none: the server's --lang",
                   "schema": {"type": "string"}}
TIME = {"type": ["string", "null"], "description": "local time, YYYY-MM-DD HH:MM:SS"}
PROGRESS: dict[str, Any] = {"type": ["object", "null"], "properties": {
    "done": {"type": ["integer", "null"]}, "total": {"type": ["integer", "null"]},
    "message": NULLABLE_STRING, "percent": {"type": ["number", "null"]},
    "items": {"type": "array", "description": "what the robot reported per item so far, "
                                              "e.g. {position, code, rack}"},
    "items_dropped": {"type": "integer"}}}
COUNT = {"type": "integer", "minimum": 0}
# A progress event's: only the items new since the previous one (docs/api.md, Events).
PROGRESS_DELTA = {"type": "object", "required": ["items", "items_from", "items_count"],
                  "properties": {**PROGRESS["properties"], "items": {
                      "type": "array", "description": "the items new since the last event"},
                      "items_from": {**COUNT, "description": "the index of items[0]"},
                      "items_count": {**COUNT, "description": "the task's items so far"},
                      "items_omitted": {**COUNT, "description": "new items left out (over "
                                        "4 KB): GET /task/<id> has them"}}}
# Attribution (docs/security.md): the principal's name; "anonymous" on an open server.
BY = {"type": "string", "description": "the principal who did it (docs/security.md); absent "
                                      "in work older than the audit trail"}
PAUSED_BY = {"type": ["string", "null"],
             "description": "who paused the queue; null when not paused, or paused by the "
                            "server itself (a hold)"}
TIMED_OUT = {"type": "boolean",
             "description": "only with ?wait=: true when the wait ended without the awaited "
                            "change (ask again), false when it saw it"}
# GET /events. A schema describes values, not a stream, so the stream is read as the list
# of its events (what OpenAPI 3.2 calls the media type's itemSchema): each block of lines
# is one event, `data` a line of JSON whose shape depends on `event` (components Event*).
EVENT_KINDS = ("snapshot", "task", "progress", "queue", "robot", "sequence", "webhook",
               "reset")
SSE_STREAM = {
    "type": "array", "items": {"$ref": "#/components/schemas/Event"},
    "description": "blocks separated by a blank line, one event each: 'retry: 2000' with "
                   "the first ('event: snapshot', the state now, without an id); then "
                   "'id: N', 'event: task | progress | queue | robot | sequence | webhook | "
                   "reset' and 'data: "
                   "<JSON>', the JSON's schema depending on the event (see Event). ': "
                   "keep-alive' comments every 15 s. Reconnect with Last-Event-ID to get "
                   "what was missed (or a reset event when it is gone).",
    "examples": [[{"event": "snapshot", "retry": 2000,
                   "data": '{"queue": {"queue_size": 0, "total_tasks": 0, "completed_tasks": '
                           '0, "failed_tasks": 0, "running_task": null, "paused": false}, '
                           '"robot": {"connected": true, "port": "/dev/ttyUSB0"}, '
                           '"mode": "queue"}'},
                  {"id": "7", "event": "queue",
                   "data": '{"paused": true, "pause_reason": "paused by the operator", '
                           '"pause_code": "paused_by_operator"}'}]],
}
def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_reply(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def error_reply(description: str) -> dict[str, Any]:
    return json_reply(ref("Error"), description)


def object_schema(required: list[str], props: dict[str, Any], description: str | None = None,
                  closed: bool = False) -> dict[str, Any]:
    """An object schema; ``closed``: no other properties."""
    schema: dict[str, Any] = {"type": "object", "required": required, "properties": props}
    schema.update({"additionalProperties": False} if closed else {})
    schema.update({"description": description} if description else {})
    return schema


def _param_schema(param: Param) -> dict[str, Any]:
    bounds = {k: v for k, v in (("minimum", param.minimum), ("maximum", param.maximum))
              if v is not None}
    if param.kind == "integer_list":
        schema: dict[str, Any] = {"type": "array", "minItems": 1, "uniqueItems": True,
                                  "items": {"type": "integer", **bounds}}
        if param.max_length is not None:
            schema["maxItems"] = param.max_length
    elif param.kind == "string":
        # Blank strings and control characters are refused too (422), so the one
        # character that must not be blank must not be a control character either.
        schema = {"type": "string", "minLength": 1,
                  "pattern": r"^[^\x00-\x1f]*[^\s\x00-\x1f][^\x00-\x1f]*$"}
        if param.max_length is not None:
            schema["maxLength"] = param.max_length
    else:
        schema = {"type": param.kind, **bounds}
    schema["description"] = param.description
    return schema


def _command_schemas(commands: CommandTable) -> dict[str, Any]:
    variants = []
    for command in commands:
        params: dict[str, Any] = {
            "type": "object", "additionalProperties": False,
            "properties": {p.name: _param_schema(p) for p in command.params},
        }
        required = [p.name for p in command.params if p.required]
        if required:
            params["required"] = required
        variant: dict[str, Any] = {
            "title": command.name, "description": command.description, "type": "object",
            "additionalProperties": False, "required": ["cmd_type"],
            "properties": {"cmd_type": {"const": command.name}, "params": params},
        }
        if required:
            variant["required"] = ["cmd_type", "params"]
        else:
            params_schema = variant["properties"]["params"]
            variant["properties"]["params"] = {"oneOf": [params_schema, {"type": "null"}]}
        variants.append(variant)
    return {"Command": {"description": "A robot command (see GET /commands).",
                        "oneOf": variants}}


def schemas(commands: CommandTable) -> dict[str, Any]:
    task_summary = {"type": "object", "required": ["task_id", "status", "cmd_type"],
                    "properties": {"task_id": {"type": "string"}, "cmd_type": {"type": "string"},
                                   "status": {"enum": list(ALL_STATUSES)}, "submit_time": TIME,
                                   "start_time": TIME, "end_time": TIME}}
    return {
        **_command_schemas(commands),
        "Error": {
            "type": "object", "required": ["success", "code", "message"],
            "properties": {"success": {"const": False}, "code": CODE,
                           "message": {"type": "string",
                                       "description": "in the Accept-Language language"},
                           "field": NULLABLE_STRING, "task_id": {"type": "string"},
                           "sequence_id": {"type": "string"},
                           "permission": {"type": "string", "description": "forbidden: "
                                          "the permission the role lacks"},
                           "errors": {"type": "array", "description": "sequence_invalid: "
                                      "[{step (null: the sequence), code, message, field?}]"}},
        },
        "Task": {
            "type": "object",
            "required": ["task_id", "status", "cmd_type", "submit_time", "start_time",
                         "end_time", "result"],
            "properties": {
                "task_id": {"type": "string"}, "status": {"enum": list(ALL_STATUSES)},
                "cmd_type": {"type": "string"}, "submit_time": TIME, "start_time": TIME,
                "end_time": TIME,
                "result": {"type": ["object", "null"],
                           "description": "null until final, then {success, message, "
                                          "...data}; a failure also has code"},
                "params": {"type": "object"}, "duration_s": {"type": "number"},
                "progress": PROGRESS,
                "retry_of": {"type": "string"},
                "sequence_id": {"type": "string", "description": "a sequence's step or fix-it"},
                "external_id": {"type": "string", "description": "the caller's own id, only "
                                "when given on POST / (docs/webhooks.md#external_id)"},
                "step": {"type": "integer", "minimum": 1, "description": "its step (from 1)"},
                "fixit": {"const": True, "description": "a fix-it command of a held sequence"},
                "queue_position": {"type": "integer", "minimum": 1},
                "estimated_start_time": TIME, "estimated_end_time": TIME,
                "timed_out": TIMED_OUT,
                "submitted_by": BY, "cancelled_by": {**BY, "description": "only once "
                                                     "someone cancelled it"},
            },
        },
        "Queued": {
            "type": "object",
            "required": ["success", "code", "message", "task_id", "queue_size", "note",
                         "status"],
            "properties": {
                "success": {"const": True}, "code": CODE,
                "message": {"type": "string",
                            "description": "code queued: 任务已加入队列 in every language"},
                "task_id": {"type": "string"}, "queue_size": {"type": "integer"},
                "note": {"type": "string"}, "status": {"enum": list(ALL_STATUSES)},
                "queue_position": {"type": "integer"}, "queue_paused": {"type": "boolean"},
                "pause_reason": NULLABLE_STRING, "warning": {"type": "string"},
                "retry_of": {"type": "string"},
            },
        },
        "Validated": {
            "type": "object", "required": ["success", "code", "message", "command"],
            "properties": {"success": {"const": True}, "code": CODE,
                           "message": {"type": "string"},
                           "command": {"type": "object",
                                       "required": ["cmd_type", "params"],
                                       "properties": {"cmd_type": {"type": "string"},
                                                      "params": {"type": "object"}}}},
        },
        "SyncResult": {
            "type": "object", "required": ["success", "task_id", "status"],
            "description": "sync mode: the command's result once the robot has finished",
            "properties": {"success": {"type": "boolean"}, "message": {"type": "string"},
                           "code": CODE, "task_id": {"type": "string"},
                           "status": {"enum": list(ALL_STATUSES)}},
        },
        "TaskList": {
            "type": "object",
            "required": ["tasks", "count", "limit", "offset", "next_cursor", "total"],
            "properties": {"tasks": {"type": "array", "items": ref("Task")},
                           "count": {"type": "integer"}, "limit": {"type": "integer"},
                           "offset": {"type": "integer"}, "next_cursor": NULLABLE_STRING,
                           "total": {"type": "integer"}},
        },
        "Transcript": {
            "type": "object", "required": ["task_id", "status", "transcript"],
            "properties": {"task_id": {"type": "string"},
                           "status": {"enum": list(ALL_STATUSES)},
                           "live": {"type": "boolean", "description": "true: the task is "
                                    "running and these are the lines so far"},
                           "transcript": {"type": "array", "items": {
                               "type": "object",
                               "properties": {"t": {"type": ["number", "string"]},
                                              "dir": {"enum": ["tx", "rx", "note"]},
                                              "line": {"type": "string"}}}}},
        },
        "CancelResult": {
            "type": "object", "required": ["success", "task_id", "status", "code", "message"],
            "properties": {"success": {"const": True}, "task_id": {"type": "string"},
                           "status": {"enum": ["cancelled", "running"]},
                           "code": {"enum": ["cancelled", "cancel_requested"]},
                           "message": {"type": "string"}},
        },
        "QueueStatus": {
            "type": "object",
            "required": ["queue_size", "total_tasks", "completed_tasks", "failed_tasks",
                         "running_task"],
            "properties": {
                "queue_size": {"type": "integer"}, "total_tasks": {"type": "integer"},
                "completed_tasks": {"type": "integer"}, "failed_tasks": {"type": "integer"},
                "cancelled_tasks": {"type": "integer"}, "pending_tasks": {"type": "integer"},
                "running_task": NULLABLE_STRING, "paused": {"type": "boolean"},
                "pause_reason": NULLABLE_STRING, "pause_code": NULLABLE_STRING,
                "pending": {"type": "array", "items": {"type": "string"}},
                "active_sequence": {
                    "type": ["object", "null"], "description": "the sequence holding the robot",
                    "properties": {"sequence_id": {"type": "string"},
                                   "status": {"enum": ["pending", "running", "held"]},
                                   "current_step": {"type": "integer"}}},
                "recent_tasks": {"type": "array", "items": task_summary},
                "version": {"type": "integer"}, "timed_out": TIMED_OUT, "paused_by": PAUSED_BY,
            },
        },
        "QueueState": {
            "type": "object",
            "required": ["success", "code", "message", "paused", "pause_reason"],
            "properties": {"success": {"const": True}, "code": {"enum": ["paused", "resumed"]},
                           "message": {"type": "string"}, "paused": {"type": "boolean"},
                           "pause_reason": NULLABLE_STRING, "pause_code": NULLABLE_STRING,
                           "paused_by": PAUSED_BY},
        },
        "StopResult": {
            "type": "object",
            "required": ["success", "code", "message", "stop_sent", "running_task", "paused",
                         "pause_reason"],
            "properties": {"success": {"type": "boolean"},
                           "code": {"enum": ["stop_sent", "stop_not_sent"]},
                           "message": {"type": "string"},
                           "stop_sent": {"type": "boolean"}, "running_task": NULLABLE_STRING,
                           "paused": {"type": "boolean"}, "pause_reason": NULLABLE_STRING,
                           "pause_code": NULLABLE_STRING},
        },
        "Robot": {
            "type": "object", "required": ["connected", "port"],
            "properties": {"connected": {"type": "boolean"}, "ready": {"type": "boolean"},
                           "port": {"type": "string"}, "last_seen": TIME,
                           "firmware": NULLABLE_STRING, "error": NULLABLE_STRING,
                           "lines_in": {"type": "integer"}, "lines_out": {"type": "integer"},
                           "skipped_lines": {"type": "integer"},
                           "settling": {"type": "boolean",
                                        "description": "no-id protocols: waiting for the robot "
                                                       "to be quiet before the next command"},
                           "out_of_step": {"type": "integer",
                                           "description": "replies that did not fit their "
                                                          "command (robot_out_of_step)"},
                           "unsolicited_lines": {"type": "integer",
                                                 "description": "work lines with no command "
                                                                "in flight"},
                           "reconnects": {"type": "integer"},
                           "protocol": {"type": "string",
                                        "description": "json, text or a lab's codec name"},
                           "timeouts": {
                               "type": "object",
                               "description": "silence timeouts in seconds: default, and "
                                              "per command where the table sets one",
                               "properties": {"default": {"type": "number"},
                                              "commands": {"type": "object"}}}},
        },
        "Health": {
            "type": "object", "required": ["status", "mode", "worker_alive", "robot", "store"],
            "properties": {"status": {"enum": ["ok", "degraded", "down"]},
                           "mode": {"enum": ["sync", "queue"]},
                           "worker_alive": {"type": "boolean"}, "robot": {"type": "object"},
                           "store": {
                               "type": "object", "required": ["writable", "error"],
                               "description": "whether the task database takes writes; "
                                              "writable false makes status down and 503",
                               "properties": {"writable": {"type": "boolean"},
                                              "error": NULLABLE_STRING}},
                           "clock_synchronized": {
                               "type": ["boolean", "null"],
                               "description": "whether the OS says its clock is synchronised "
                                              "(NTP); null: this OS cannot tell"},
                           "paused": {"type": "boolean"}, "pause_reason": NULLABLE_STRING,
                           "pause_code": NULLABLE_STRING},
        },
        "Commands": {
            "type": "object", "required": ["commands"],
            "properties": {"commands": {"type": "array", "items": {
                "type": "object", "required": ["cmd_type", "description", "params", "example"],
                "properties": {"cmd_type": {"type": "string"}, "description": {"type": "string"},
                               "params": {"type": "object"}, "example": {"type": "object"}}}}},
        },
        "Service": {"type": "object", "required": ["service", "mode"], "properties": {
            "service": {"type": "string"}, "mode": {"enum": ["sync", "queue"]}}},
        **_event_schemas(),
    }


def _event(kind: str, data: dict[str, Any], description: str) -> dict[str, Any]:
    """One event of GET /events: its lines as fields, `data` as JSON text of a schema."""
    props: dict[str, Any] = {
        "event": {"const": kind},
        "data": {"type": "string", "contentMediaType": JSON, "contentSchema": data},
    }
    if kind == "snapshot":
        props["retry"] = {"const": 2000, "description": "ms before a reconnect"}
    else:
        props["id"] = {"type": "string", "pattern": "^[0-9]+$",
                       "description": "increasing; send it back as Last-Event-ID"}
    return {"type": "object", "description": description,
            "required": ["event", "data"] if kind == "snapshot" else ["id", "event", "data"],
            "properties": props}


def _event_schemas() -> dict[str, Any]:
    queue_state = {"type": "object", "required": ["paused", "pause_reason"],
                   "properties": {"paused": {"type": "boolean"},
                                  "pause_reason": NULLABLE_STRING,
                                  "pause_code": NULLABLE_STRING}}
    robot = {"type": "object", "required": ["event", "port"],
             "properties": {
                 "event": {"type": "string",
                           "description": "what happened to the link: connected, "
                                          "connect_failed, disconnected, settling, fault, "
                                          "alarm (a client should ignore others)"},
                 "port": {"type": "string"}, "firmware": NULLABLE_STRING,
                 "error": NULLABLE_STRING, "retry_in": {"type": "number"},
                 "seconds": {"type": "number"}, "cmd": {"type": "string"}}}
    events = {
        "EventSnapshot": _event("snapshot", {
            "type": "object", "required": ["queue", "robot", "mode"],
            "properties": {"queue": ref("QueueStatus"), "robot": ref("Robot"),
                           "mode": {"enum": ["sync", "queue"]}}},
            "first on every connection: the state now (reload what you show)"),
        "EventTask": _event("task", ref("Task"), "a task changed state: queued, started, "
                                                 "finished (the task document)"),
        "EventProgress": _event("progress", {
            "type": "object", "required": ["task_id", "progress"],
            "properties": {"task_id": {"type": "string"}, "progress": PROGRESS_DELTA}},
            "the running task's progress, with its new items only"),
        "EventQueue": _event("queue", queue_state, "the queue was paused or resumed"),
        "EventRobot": _event("robot", robot, "the robot link's state changed"),
        "EventSequence": _event("sequence", ref("SequenceSummary"),
                                "a sequence changed: queued, a step began, held, waiting "
                                "for a confirmation, ended (docs/sequences.md)"),
        "EventWebhook": _event("webhook", {
            "type": "object", "required": ["webhook_id", "url", "enabled", "disabled_reason"],
            "properties": {"webhook_id": {"type": "string"}, "url": {"type": "string"},
                           "enabled": {"type": "boolean"}, "disabled_reason": NULLABLE_STRING}},
            "a webhook subscription was disabled: gone (410) or retries_exhausted"),
        "EventReset": _event("reset", {
            "type": "object", "required": ["reason"],
            "properties": {"reason": {"type": "string"}}},
            "events were missed (Last-Event-ID too old, or a slow reader): reload state"),
    }
    names = {f"Event{kind.capitalize()}": kind for kind in EVENT_KINDS}
    return {**events, "Event": {
        "oneOf": [ref(name) for name in names],
        "discriminator": {"propertyName": "event",
                          "mapping": {kind: f"#/components/schemas/{name}"
                                      for name, kind in names.items()}}}}
