"""The OpenAPI 3.1 description of the HTTP API: the source of truth for docs/api.md.

Built per request from the running server's config, so the limits it states
(`?wait=` maximum, body size) are the ones this server enforces. The command
schemas come from the table this server validates commands with (the shipped
tasks/commands.json or `--commands FILE`), so a lab's own commands appear too.
`GET /openapi.json` is public: it names endpoints and shapes, never data.
"""

from __future__ import annotations

from typing import Any

from server.app import ServerConfig
from server.routing import Request, Response, public
from tasks.commands import CommandTable, Param, default_table
from tasks.models import ALL_STATUSES

JSON = "application/json"
NULLABLE_STRING = {"type": ["string", "null"]}
TIME = {"type": ["string", "null"], "description": "local time, YYYY-MM-DD HH:MM:SS"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _param_schema(param: Param) -> dict[str, Any]:
    bounds = {k: v for k, v in (("minimum", param.minimum), ("maximum", param.maximum))
              if v is not None}
    if param.kind == "integer_list":
        schema: dict[str, Any] = {"type": "array", "minItems": 1, "uniqueItems": True,
                                  "items": {"type": "integer", **bounds}}
        if param.max_length is not None:
            schema["maxItems"] = param.max_length
    elif param.kind == "string":
        # Blank strings and control characters are refused too (422).
        schema = {"type": "string", "minLength": 1, "pattern": r"^[^\x00-\x1f]*\S[^\x00-\x1f]*$"}
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


def _schemas(commands: CommandTable) -> dict[str, Any]:
    task_summary = {"type": "object", "required": ["task_id", "status", "cmd_type"],
                    "properties": {"task_id": {"type": "string"},
                                   "status": {"enum": list(ALL_STATUSES)},
                                   "cmd_type": {"type": "string"}, "submit_time": TIME,
                                   "start_time": TIME, "end_time": TIME}}
    return {
        **_command_schemas(commands),
        "Error": {
            "type": "object", "required": ["success", "message"],
            "properties": {"success": {"const": False}, "message": {"type": "string"},
                           "field": NULLABLE_STRING, "task_id": {"type": "string"}},
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
                           "description": "null until final, then {success, message, ...data}"},
                "params": {"type": "object"}, "duration_s": {"type": "number"},
                "progress": {"type": ["object", "null"],
                             "properties": {"done": {"type": ["integer", "null"]},
                                            "total": {"type": ["integer", "null"]},
                                            "message": NULLABLE_STRING,
                                            "percent": {"type": ["number", "null"]},
                                            "items": {"type": "array"}}},
                "retry_of": {"type": "string"},
                "queue_position": {"type": "integer", "minimum": 1},
                "estimated_start_time": TIME, "estimated_end_time": TIME,
            },
        },
        "Queued": {
            "type": "object",
            "required": ["success", "message", "task_id", "queue_size", "note", "status"],
            "properties": {
                "success": {"const": True}, "message": {"type": "string"},
                "task_id": {"type": "string"}, "queue_size": {"type": "integer"},
                "note": {"type": "string"}, "status": {"enum": list(ALL_STATUSES)},
                "queue_position": {"type": "integer"}, "queue_paused": {"type": "boolean"},
                "pause_reason": NULLABLE_STRING, "warning": {"type": "string"},
                "retry_of": {"type": "string"},
            },
        },
        "Validated": {
            "type": "object", "required": ["success", "message", "command"],
            "properties": {"success": {"const": True}, "message": {"type": "string"},
                           "command": {"type": "object",
                                       "required": ["cmd_type", "params"],
                                       "properties": {"cmd_type": {"type": "string"},
                                                      "params": {"type": "object"}}}},
        },
        "SyncResult": {
            "type": "object", "required": ["success", "task_id", "status"],
            "description": "sync mode: the command's result once the robot has finished",
            "properties": {"success": {"type": "boolean"}, "message": {"type": "string"},
                           "task_id": {"type": "string"},
                           "status": {"enum": list(ALL_STATUSES)}},
        },
        "TaskList": {
            "type": "object",
            "required": ["tasks", "count", "limit", "offset", "next_cursor", "total"],
            "properties": {"tasks": {"type": "array", "items": _ref("Task")},
                           "count": {"type": "integer"}, "limit": {"type": "integer"},
                           "offset": {"type": "integer"}, "next_cursor": NULLABLE_STRING,
                           "total": {"type": "integer"}},
        },
        "Transcript": {
            "type": "object", "required": ["task_id", "status", "transcript"],
            "properties": {"task_id": {"type": "string"},
                           "status": {"enum": list(ALL_STATUSES)},
                           "live": {"type": "boolean",
                                    "description": "true: the task is running and these are "
                                                   "the lines so far"},
                           "transcript": {"type": "array", "items": {
                               "type": "object",
                               "properties": {"t": {"type": ["number", "string"]},
                                              "dir": {"enum": ["tx", "rx", "note"]},
                                              "line": {"type": "string"}}}}},
        },
        "CancelResult": {
            "type": "object", "required": ["success", "task_id", "status", "message"],
            "properties": {"success": {"const": True}, "task_id": {"type": "string"},
                           "status": {"enum": ["cancelled", "running"]},
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
                "pause_reason": NULLABLE_STRING,
                "pending": {"type": "array", "items": {"type": "string"}},
                "recent_tasks": {"type": "array", "items": task_summary},
                "version": {"type": "integer"},
            },
        },
        "QueueState": {
            "type": "object", "required": ["success", "paused", "pause_reason"],
            "properties": {"success": {"const": True}, "paused": {"type": "boolean"},
                           "pause_reason": NULLABLE_STRING},
        },
        "StopResult": {
            "type": "object",
            "required": ["success", "message", "stop_sent", "running_task", "paused",
                         "pause_reason"],
            "properties": {"success": {"type": "boolean"}, "message": {"type": "string"},
                           "stop_sent": {"type": "boolean"}, "running_task": NULLABLE_STRING,
                           "paused": {"type": "boolean"}, "pause_reason": NULLABLE_STRING},
        },
        "Robot": {
            "type": "object", "required": ["connected", "port"],
            "properties": {"connected": {"type": "boolean"}, "ready": {"type": "boolean"},
                           "port": {"type": "string"}, "last_seen": TIME,
                           "firmware": NULLABLE_STRING, "error": NULLABLE_STRING,
                           "lines_in": {"type": "integer"}, "lines_out": {"type": "integer"},
                           "skipped_lines": {"type": "integer"},
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
            "type": "object", "required": ["status", "mode", "worker_alive", "robot"],
            "properties": {"status": {"enum": ["ok", "degraded", "down"]},
                           "mode": {"enum": ["sync", "queue"]},
                           "worker_alive": {"type": "boolean"}, "robot": {"type": "object"},
                           "paused": {"type": "boolean"}, "pause_reason": NULLABLE_STRING},
        },
        "Commands": {
            "type": "object", "required": ["commands"],
            "properties": {"commands": {"type": "array", "items": {
                "type": "object", "required": ["cmd_type", "description", "params", "example"],
                "properties": {"cmd_type": {"type": "string"},
                               "description": {"type": "string"},
                               "params": {"type": "object"}, "example": {"type": "object"}}}}},
        },
        "Service": {"type": "object", "required": ["service", "mode"],
                    "properties": {"service": {"type": "string"},
                                   "mode": {"enum": ["sync", "queue"]}}},
    }


def _operation(summary: str, responses: dict[str, Any], *, params: list[Any] | None = None,
               body: dict[str, Any] | None = None, public_route: bool = False,
               description: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary,
                          "responses": {**responses, "default": _error("any refusal")}}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    if public_route:
        op["security"] = []
    return op


def build_openapi(config: ServerConfig, commands: CommandTable | None = None) -> dict[str, Any]:
    """The document for a server with this config and command table (None: the shipped)."""
    commands = default_table() if commands is None else commands
    task_id = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}
    wait = {"name": "wait", "in": "query", "required": False,
            "description": "long-poll: answer when the state changes, at most after this "
                           "many seconds",
            "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": config.max_wait}}
    idempotency = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "description": "a retry with the same key returns the original task",
                   "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]([\\x20-\\x7e]{0,253}"
                                                           "[\\x21-\\x7e])?$"}}
    dry_run = {"name": "dry_run", "in": "query", "required": False,
               "description": "1 or true: validate only, queue nothing (as POST /validate)",
               "schema": {"enum": ["1", "true"]}}
    command_body = {"required": True, "description": f"at most {config.max_body} bytes; "
                    "Content-Length is required (411 without)",
                    "content": {JSON: {"schema": _ref("Command")}}}
    queued = _json(_ref("Queued"), "queued (Location: /task/<task_id>)")
    errors = {
        "400": _error("malformed request or JSON"), "404": _error("no such task"),
        "409": _error("the task is in the wrong state"),
        "411": _error("Content-Length required"), "413": _error("body too large"),
        "415": _error("Content-Type must be application/json"),
        "422": _error("not an acceptable command (field names the parameter)"),
        "503": _error("queue full, store unavailable, or (sync mode) queue paused (Retry-After)"),
    }

    def pick(*codes: str) -> dict[str, Any]:
        return {c: errors[c] for c in codes}

    static_types = ["text/html", "text/css", "text/javascript", "image/svg+xml", "image/png",
                    "image/x-icon"]
    paths: dict[str, Any] = {
        "/": {
            "get": _operation("Service document, or the dashboard with Accept: text/html", {
                "200": {"description": "service document or dashboard page", "content": {
                    JSON: {"schema": _ref("Service")}, "text/html": {"schema": {}}}},
            }, public_route=True),
            "post": _operation("Submit a command", {
                "202": queued,
                "200": {"description": "dry run: the validated command; sync mode: the result",
                        "content": {JSON: {"schema": {"anyOf": [_ref("Validated"),
                                                                _ref("SyncResult")]}}}},
                "504": _error("sync mode: the command did not finish in time"),
                **pick("400", "411", "413", "415", "422", "503"),
            }, params=[dry_run, idempotency], body=command_body),
        },
        "/validate": {"post": _operation("Validate a command; nothing is queued", {
            "200": _json(_ref("Validated"), "the command is valid"),
            **pick("400", "411", "413", "415", "422"),
        }, body=command_body)},
        "/tasks": {"get": _operation("List tasks, newest first", {
            "200": _json(_ref("TaskList"), "one page"), **pick("400"),
        }, params=[
            {"name": "status", "in": "query", "schema": {"enum": list(ALL_STATUSES)}},
            {"name": "cmd_type", "in": "query", "schema": {"type": "string"}},
            {"name": "limit", "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
            {"name": "offset", "in": "query",
             "schema": {"type": "integer", "minimum": 0, "maximum": 10**9}},
            {"name": "cursor", "in": "query", "description": "next_cursor of a previous page",
             "schema": {"type": "string", "pattern": "^[0-9]+$"}},
        ])},
        "/task/{task_id}": {
            "get": _operation("A task", {
                "200": _json(_ref("Task"), "the task document"), **pick("400", "404"),
            }, params=[task_id, wait]),
            "delete": _operation("Cancel a task", {
                "200": _json(_ref("CancelResult"), "cancelled while pending"),
                "202": _json(_ref("CancelResult"), "running: STOP sent"),
                **pick("404", "409"),
            }, params=[task_id]),
        },
        "/task/{task_id}/cancel": {"post": _operation("Cancel a task (as DELETE)", {
            "200": _json(_ref("CancelResult"), "cancelled while pending"),
            "202": _json(_ref("CancelResult"), "running: STOP sent"), **pick("404", "409"),
        }, params=[task_id])},
        "/task/{task_id}/retry": {"post": _operation("Queue a failed or cancelled task again", {
            "202": queued, **pick("404", "409", "503"),
        }, params=[task_id, idempotency])},
        "/task/{task_id}/transcript": {"get": _operation("Lines exchanged with the robot", {
            "200": _json(_ref("Transcript"), "the transcript"), **pick("404"),
        }, params=[task_id])},
        "/queue/status": {"get": _operation("Queue counters", {
            "200": _json(_ref("QueueStatus"), "queue status"), **pick("400"),
        }, params=[wait, {"name": "since", "in": "query",
                          "description": "with wait: answer once version > since",
                          "schema": {"type": "integer", "minimum": 0, "maximum": 10**12}}])},
        "/queue/pause": {"post": _operation("Hold the queue (the running task finishes)", {
            "200": _json(_ref("QueueState"), "paused"), **pick("400", "415"),
        }, body={"required": False, "content": {JSON: {"schema": {
            "type": "object", "properties": {"reason": {"type": "string"}}}}}})},
        "/queue/resume": {"post": _operation("Release the queue", {
            "200": _json(_ref("QueueState"), "resumed")})},
        "/robot/stop": {"post": _operation("Emergency stop", {
            "200": _json(_ref("StopResult"), "STOP sent (or not: robot disconnected)"),
        }, description="Needs no body and no Content-Length: `curl -X POST .../robot/stop` "
                       "works. Cancels the running task and pauses the queue.")},
        "/robot": {"get": _operation("Robot link state", {
            "200": _json(_ref("Robot"), "link state")})},
        "/health": {"get": _operation("Liveness", {
            "200": _json(_ref("Health"), "the worker runs"),
            "503": _json(_ref("Health"), "the worker thread is dead"),
        }, public_route=True)},
        "/commands": {"get": _operation("The accepted commands and their parameters", {
            "200": _json(_ref("Commands"), "command catalog")})},
        "/metrics": {"get": _operation("Prometheus metrics (text format 0.0.4)", {
            "200": {"description": "tasks by final status, queue depth, task durations, "
                                   "robot link, HTTP responses by class",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}})},
        "/events": {"get": _operation("Server-Sent Events (task, progress, queue, robot)", {
            "200": {"description": "an endless text/event-stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            "503": _error("too many subscribers (Retry-After)"),
        }, params=[{"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                   {"name": "last_event_id", "in": "query", "schema": {"type": "string"}}])},
        "/openapi.json": {"get": _operation("This document", {
            "200": _json({"type": "object"}, "OpenAPI 3.1")}, public_route=True)},
        "/static/{name}": {"get": _operation("Dashboard files", {
            "200": {"description": "the file",
                    "content": {t: {"schema": {}} for t in static_types}},
            "304": {"description": "not modified (If-None-Match / If-Modified-Since)"},
            "404": _error("no such file"),
        }, params=[{"name": "name", "in": "path", "required": True,
                    "schema": {"type": "string"}}], public_route=True)},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Robot task server", "version": "1.0.0",
                 "description": "HTTP task server for a lab robot on a serial port. Every "
                                "error is {success: false, message}. With --api-token every "
                                "operation except the public ones needs the token."},
        "paths": paths,
        "components": {
            "schemas": _schemas(commands),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        # The token is optional per deployment: {} means "none needed when not set".
        "security": [{}, {"bearer": []}, {"apiKey": []}],
    }


@public  # tooling reads the document before it has a token; it names no data
def openapi_document(req: Request) -> Response:
    return Response(200, build_openapi(req.app.config, req.app.commands))
