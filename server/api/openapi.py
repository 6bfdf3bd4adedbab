"""The OpenAPI 3.1 description of the HTTP API: the source of truth for docs/api.md.

Built per request from the running server's config, so the limits it states
(`?wait=` clamp, body size) are the ones this server enforces. The command
schemas come from the table this server validates commands with (the shipped
tasks/commands/commands.json or `--commands FILE`), so a lab's own commands appear too.
`GET /openapi.json` needs the `read` permission, as every GET of the API does
(docs/security.md).
"""

from __future__ import annotations

from typing import Any

from server.api.openapi_schemas import (
    ACCEPT_LANGUAGE,
    JSON,
    SSE_STREAM,
    error_reply,
    json_reply,
    ref,
    schemas,
)
from server.api.openapi_security import add_guard, security_paths, security_schemas
from server.api.openapi_sequences import sequence_paths, sequence_schemas
from server.api.routing import FLAG_FALSE, FLAG_TRUE, Request, Response
from server.queueops.openapi import closed_queue, queue_paths, queue_schemas
from server.webhooks.openapi import (
    TASKS_EXTERNAL_ID,
    webhook_events,
    webhook_paths,
    webhook_schemas,
)
from settings import Settings
from tasks.commands import CommandTable, default_table
from tasks.models import ALL_STATUSES


def _any_case(words: tuple[str, ...]) -> str:
    """A pattern of these words in any letter case, without the (?i) flag, which
    JSON Schema's regular expressions (ECMA-262) do not have."""
    return "|".join("".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in w)
                    for w in words)


def _operation(summary: str, responses: dict[str, Any], *, params: list[Any] | None = None,
               body: dict[str, Any] | None = None, public_route: bool = False,
               description: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary,
                          "responses": {**responses, "default": error_reply("any refusal")}}
    if description:
        op["description"] = description
    op["parameters"] = [*(params or ()), ACCEPT_LANGUAGE]
    if body:
        op["requestBody"] = body
    if public_route:
        op["security"] = []
    return op


def build_openapi(config: Settings, commands: CommandTable | None = None) -> dict[str, Any]:
    """The document for a server with this config and command table (None: the shipped)."""
    commands = default_table() if commands is None else commands
    task_id = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}
    wait = {"name": "wait", "in": "query", "required": False,
            "description": "long-poll: answer when the state changes, at most after this "
                           f"many seconds; clamped to max_wait ({config.max_wait:g} s on "
                           "this server). The reply's timed_out is true when the wait "
                           "ended without the change: ask again",
            "schema": {"type": "number", "exclusiveMinimum": 0}}
    idempotency = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "description": "a retry with the same key returns the original task",
                   "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]([\\x20-\\x7e]{0,253}"
                                                           "[\\x21-\\x7e])?$"}}
    dry_run = {"name": "dry_run", "in": "query", "required": False,
               "description": "true/1/yes/on: validate only, queue nothing (as POST "
                              "/validate); false/0/no/off: submit. Any letter case; another "
                              "value (even empty) is refused (400 query_not_boolean)",
               "schema": {"type": "string",
                          "pattern": f"^({_any_case(FLAG_TRUE + FLAG_FALSE)})$"}}
    command_body = {"required": True, "description": f"at most {config.max_body} bytes; "
                    "Content-Length or Transfer-Encoding: chunked is required (411 without)",
                    "content": {JSON: {"schema": ref("Command")}}}
    submission = {**command_body, "content": {JSON: {"schema": ref("Submission")}}}
    queued = json_reply(ref("Queued"), "queued (Location: /task/<task_id>)")
    errors = {
        "400": error_reply("malformed request or JSON"), "404": error_reply("no such task"),
        "409": error_reply("the task is in the wrong state"),
        "411": error_reply("Content-Length (or chunked) required"),
        "413": error_reply("body too large"),
        "415": error_reply("Content-Type must be application/json"),
        "422": error_reply("not an acceptable command (field names the parameter), or "
                           "external_id_invalid"),
        "503": error_reply("queue full, store unavailable, or (sync mode) queue paused "
                           "(Retry-After)"),
    }

    def pick(*codes: str) -> dict[str, Any]:
        return {c: errors[c] for c in codes}

    static_types = ["text/html", "text/css", "text/javascript", "image/svg+xml", "image/png",
                    "image/x-icon"]
    paths: dict[str, Any] = {
        "/": {
            "get": _operation("Service document, or the dashboard for a browser", {
                "200": {"description": "service document or dashboard page", "content": {
                    JSON: {"schema": ref("Service")}, "text/html": {"schema": {}}}},
            }, public_route=True, description="The dashboard page when the Accept header "
               "ranks text/html above application/json (as browsers do) and the server has "
               "its static files; else the JSON service document (Accept */*, none, or "
               "application/json)."),
            "post": _operation("Submit a command", {
                "202": queued,
                "200": {"description": "dry run: the validated command; sync mode: the result",
                        "content": {JSON: {"schema": {"anyOf": [ref("Validated"),
                                                                ref("SyncResult")]}}}},
                "504": error_reply("sync mode: the command did not finish in time"),
                **pick("400", "411", "413", "415", "422", "503"),
            }, params=[dry_run, idempotency], body=submission),
        },
        "/validate": {"post": _operation("Validate a command; nothing is queued", {
            "200": json_reply(ref("Validated"), "the command is valid"),
            **pick("400", "411", "413", "415", "422"),
        }, body=submission)},
        "/tasks": {"get": _operation("List tasks, newest first", {
            "200": json_reply(ref("TaskList"), "one page"), **pick("400"),
        }, params=[
            {"name": "status", "in": "query", "description": "absent: every status",
             "schema": {"enum": list(ALL_STATUSES)}},
            {"name": "cmd_type", "in": "query", "schema": {"type": "string"}},
            {"name": "sequence_id", "in": "query", "description": "a sequence's tasks: its "
             "steps' attempts and its fix-it commands", "schema": {"type": "string"}},
            {"name": "limit", "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
            {"name": "offset", "in": "query",
             "schema": {"type": "integer", "minimum": 0, "maximum": 10**9}},
            {"name": "cursor", "in": "query",
             "description": "next_cursor of a previous page (the page after it; maybe empty)",
             "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}},
            TASKS_EXTERNAL_ID,
        ])},
        "/task/{task_id}": {
            "get": _operation("A task", {
                "200": json_reply(ref("Task"), "the task document"), **pick("400", "404"),
            }, params=[task_id, wait]),
            "delete": _operation("Cancel a task", {
                "200": json_reply(ref("CancelResult"), "cancelled while pending"),
                "202": json_reply(ref("CancelResult"), "running: STOP sent"),
                **pick("404", "409"),
            }, params=[task_id]),
        },
        "/task/{task_id}/cancel": {"post": _operation("Cancel a task (as DELETE)", {
            "200": json_reply(ref("CancelResult"), "cancelled while pending"),
            "202": json_reply(ref("CancelResult"), "running: STOP sent"), **pick("404", "409"),
        }, params=[task_id])},
        "/task/{task_id}/retry": {"post": _operation("Queue a failed or cancelled task again", {
            "202": queued, **pick("404", "409", "503"),
        }, params=[task_id, idempotency])},
        "/task/{task_id}/transcript": {"get": _operation("Lines exchanged with the robot", {
            "200": json_reply(ref("Transcript"), "the transcript"), **pick("404"),
        }, params=[task_id])},
        "/queue/status": {"get": _operation("Queue counters", {
            "200": json_reply(ref("QueueStatus"), "queue status"), **pick("400"),
        }, params=[wait, {"name": "since", "in": "query",
                          "description": "with wait: answer once version > since "
                                         "(default: the current version); checked even "
                                         "without wait",
                          "schema": {"type": "integer", "minimum": 0, "maximum": 10**12}}])},
        "/queue/pause": {"post": _operation("Hold the queue (the running task finishes)", {
            "200": json_reply(ref("QueueState"), "paused"),
            "400": error_reply("not a JSON object, or reason not a string (not paused)"),
            **pick("415"),
        }, body={"required": False, "description": "optional; without it (or with reason "
                 "null or empty) the reason is 'paused by the operator'",
                 "content": {JSON: {"schema": {"type": "object", "properties": {"reason": {
                     "type": ["string", "null"],
                     "description": "shown on the console and the dashboard; the first "
                                    "200 characters, control characters as spaces"}}}}}})},
        "/queue/resume": {"post": _operation("Release the queue", {
            "200": json_reply(ref("QueueState"), "resumed")})},
        "/robot/stop": {"post": _operation("Emergency stop", {
            "200": json_reply(ref("StopResult"), "STOP sent (or not: robot disconnected)"),
        }, description="Needs no body and no Content-Length: `curl -X POST .../robot/stop` "
                       "works. Cancels the running task and pauses the queue.")},
        "/robot": {"get": _operation("Robot link state", {
            "200": json_reply(ref("Robot"), "link state")})},
        "/health": {"get": _operation("Liveness", {
            "200": json_reply(ref("Health"), "the worker runs and the task database takes writes"),
            "503": json_reply(ref("Health"), "the worker thread is dead or the task database "
                                             "cannot be written"),
        }, public_route=True)},
        "/commands": {"get": _operation("The accepted commands and their parameters", {
            "200": json_reply(ref("Commands"), "command catalog; descriptions in the "
                                           "Accept-Language language")})},
        "/metrics": {"get": _operation("Prometheus metrics (text format 0.0.4)", {
            "200": {"description": "tasks by final status, queue depth, task durations, "
                                   "robot link, HTTP responses by class",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}})},
        "/events": {"get": _operation("Server-Sent Events (task, progress, queue, robot)", {
            "200": {"description": "an endless text/event-stream: snapshot first, then "
                                   "task, progress, queue, robot and reset events",
                    "content": {"text/event-stream": {"schema": SSE_STREAM}}},
            "503": error_reply("too many subscribers (Retry-After)"),
        }, params=[{"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                   {"name": "last_event_id", "in": "query", "schema": {"type": "string"}}],
            description="Each event is a block of 'id:', 'event:' and 'data:' lines; the "
                        "data is JSON whose schema depends on the event type (components "
                        "Event, discriminated by event: EventSnapshot, EventTask, "
                        "EventProgress, EventQueue, EventRobot, EventSequence, "
                        "EventWebhook, EventReset).")},
        "/openapi.json": {"get": _operation("This document", {
            "200": json_reply({"type": "object"}, "OpenAPI 3.1")})},
        "/static/{name}": {"get": _operation("Dashboard files", {
            "200": {"description": "the file",
                    "content": {t: {"schema": {}} for t in static_types}},
            "304": {"description": "not modified (If-None-Match / If-Modified-Since)"},
            "404": error_reply("no such file"),
        }, params=[{"name": "name", "in": "path", "required": True,
                    "schema": {"type": "string"}}], public_route=True)},
        **sequence_paths(_operation, errors, dry_run=dry_run, idempotency=idempotency,
                         command_body=command_body),
        **security_paths(_operation, errors),
        **webhook_paths(_operation, errors),
        **queue_paths(_operation, errors),
    }
    closed_queue(paths)
    add_guard(paths)
    components = schemas(commands)
    components.update(sequence_schemas(components["Command"]))
    components.update(security_schemas())
    components.update(webhook_schemas(components["Command"]))
    components.update(queue_schemas(components))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Robot task server", "version": "1.0.0",
                 "description": "HTTP task server for a lab robot on a serial port. Every "
                                "error is {success: false, code, message}; code is stable, "
                                "message is in the language of Accept-Language (zh or en; "
                                "else the server's --lang). Once a user is added or "
                                "--api-token is set, every operation except the public "
                                "ones needs a token, and the token's role decides what it "
                                "may do (docs/security.md). A path "
                                "with a trailing slash (/queue/status/) is redirected, "
                                "308 with Location, to the one without."},
        "paths": paths,
        "webhooks": webhook_events(),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        # The token is optional per deployment: {} means "none needed when not set".
        "security": [{}, {"bearer": []}, {"apiKey": []}],
    }


def openapi_document(req: Request) -> Response:
    return Response(200, build_openapi(req.app.settings, req.app.commands))
