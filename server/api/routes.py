"""Route functions: each takes a Request and returns data. No robot I/O here
except through the worker's operator actions. The task layer's refusals (TaskError)
pass through: the handler answers them (server/errors.py from_task_error)."""

from __future__ import annotations

import json
import time
from typing import Any

from server.api.admin import add_routes as add_admin_routes
from server.api.openapi import openapi_document
from server.api.routing import (
    Request,
    Response,
    Router,
    StreamResponse,
    emergency,
    long_lived,
    paused_fields,
)
from server.api.sequences import add_routes as add_sequence_routes
from server.api.static_files import serve_static, static_file
from server.errors import ApiError
from server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from server.queueops.export import add_routes as add_export_routes
from server.queueops.export import task_filters
from server.queueops.routes import add_routes as add_queue_routes
from server.queueops.routes import localized, not_before
from server.queueops.waiting import localize_all
from server.transport.headers import one_line
from server.transport.streams import SubscriptionFrames
from server.webhooks.routes import add_routes as add_webhook_routes
from tasks.commands import CommandTable
from tasks.errors import TaskNotFound
from tasks.models import FINAL_STATUSES, TaskStatus
from tasks.queue.events import Event

# The guide's wording, in every language: clients match on it. Its code is "queued";
# it has no catalogue entry because it is never translated.
QUEUED_MESSAGE = "任务已加入队列"
QUEUED_NOTE = "使用 GET /task/<task_id> 查询任务状态"
KEEPALIVE_S = 15.0


# -- helpers ---------------------------------------------------------------------------
def _commands(req: Request) -> CommandTable:
    commands = req.app.commands
    assert commands is not None  # Application falls back to the manager's table
    return commands


def _get_task(req: Request) -> dict[str, Any]:
    task = req.app.manager.get(req.params["task_id"])
    if task is None:
        raise TaskNotFound(req.params["task_id"])
    return task


def _submit(req: Request, cmd_type: str, params: dict[str, Any], *,
            retry_of: str | None = None, key: str | None = None,
            quiet: bool = False, external_id: str | None = None,
            start_after: float | None = None) -> tuple[dict[str, Any], bool]:
    # Refused: QueueFull, IdempotencyConflict or StoreWriteError (nothing was queued).
    action = "task.submit" if retry_of is None else "task.retry"
    result = req.app.manager.submit(cmd_type, params, retry_of=retry_of,
                                    idempotency_key=key, quiet=quiet, audit=req.audit(action),
                                    external_id=external_id, not_before=start_after)
    return result.task, result.created


def _accepted(req: Request, task: dict[str, Any], created: bool) -> Response:
    """The 202; its access-log line also says what was queued (the manager, asked to be
    quiet, logs nothing of its own at INFO)."""
    queue = req.app.manager.queue_brief()
    body: dict[str, Any] = {
        "success": True, "code": "queued", "message": QUEUED_MESSAGE,
        "task_id": task["task_id"], "queue_size": queue.queue_size, "note": QUEUED_NOTE,
        "status": task["status"],
    }
    headers = {"Location": f"/task/{task['task_id']}"}
    note = f"task {task['task_id']} {task['cmd_type']} pending"
    if not created:
        body["code"] = "idempotent_replay"
        body["message"] = req.t("info.idempotent_replay")
        headers["Idempotent-Replayed"] = "true"
        note = f"task {task['task_id']} replayed"
    body.update(paused_fields(req, queue))
    if "queue_position" in task:
        body["queue_position"] = task["queue_position"]
    return Response(202, body, headers, log_note=note)


# -- tasks -----------------------------------------------------------------------------
def submit(req: Request) -> Response:
    key = req.idempotency_key()  # a dry run refuses what the real submit would
    if req.query_flag("dry_run"):
        return validate(req)
    cmd_type, params = req.command()
    external_id, start_after = req.external_id(), not_before(req)
    sync = req.app.settings.mode == "sync"
    if sync and req.app.manager.paused:
        # A sync client would hang until someone resumes; tell it now, queue nothing.
        raise ApiError("queue_paused", 503, params={"reason": req.app.manager.pause_reason},
                       headers={"Retry-After": "30"})
    # Sync mode's access line comes only when the task ends: the manager logs the submit.
    task, created = _submit(req, cmd_type, params, key=key, quiet=not sync,
                            external_id=external_id, start_after=start_after)
    if not sync:
        return _accepted(req, task, created)
    # Sync mode is queue mode plus a wait: the robot still runs one task at a time.
    deadline = time.monotonic() + req.app.settings.sync_timeout
    while task["status"] not in FINAL_STATUSES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ApiError("sync_timeout", 504, extra={"task_id": task["task_id"]})
        task = req.app.manager.wait(task["task_id"], min(remaining, 60.0)) or task
    result = dict(task["result"] or {})
    result["task_id"] = task["task_id"]
    result["status"] = task["status"]
    return Response(200, result, {"Location": f"/task/{task['task_id']}"})


def validate(req: Request) -> Response:
    cmd_type, params = req.command()
    req.external_id()
    not_before(req)  # a dry run refuses what the real submit would
    return Response(200, {"success": True, "code": "command_valid",
                          "message": req.t("info.command_valid"),
                          "command": {"cmd_type": cmd_type, "params": params}})


def _wait_s(req: Request) -> float | None:
    # Longer than max_wait is no error: the reply comes at max_wait with timed_out,
    # and the client asks again (as it must anyway: a proxy may cut a long request).
    return req.query_number("wait", low=0, high=req.app.settings.max_wait, clamp=True)


@long_lived("wait")
def get_task(req: Request) -> Response:
    wait = _wait_s(req)
    if wait is None:
        # A finished task's reply is encoded once and kept (it never changes).
        doc, encoded = req.app.manager.get_with_json(req.params["task_id"])
        if doc is None:
            raise TaskNotFound(req.params["task_id"])
        return Response(200, localized(req, doc) if encoded is None else encoded)
    task = _get_task(req)
    if task["status"] not in FINAL_STATUSES:
        task = req.app.manager.wait(task["task_id"], wait) or task
    if task["status"] in FINAL_STATUSES:
        # The finished task's kept bytes plus the flag: encoded once for every reader.
        _, encoded = req.app.manager.get_with_json(task["task_id"])
        if encoded is not None and encoded.endswith(b"}"):
            return Response(200, encoded[:-1] + b', "timed_out": false}')
    return Response(200, {**localized(req, task),
                          "timed_out": task["status"] not in FINAL_STATUSES})


def task_transcript(req: Request) -> Response:
    task = _get_task(req)
    task_id = task["task_id"]
    # A running task's lines live in the link until it ends: show them as they come,
    # which is when an operator debugging a silent robot needs them.
    live = req.app.worker.live_transcript(task_id) if task["status"] == TaskStatus.RUNNING else None
    lines = live if live is not None else req.app.manager.transcript(task_id)
    return Response(200, {"task_id": task_id, "status": task["status"],
                          "live": live is not None, "transcript": lines or []})


def _not_a_step(req: Request, task: dict[str, Any] | None) -> None:
    """A sequence's step is cancelled or retried with its sequence, never alone: the
    protocol's order and its rules would break (docs/sequences.md)."""
    if task is not None and "step" in task and task.get("sequence_id"):
        raise ApiError("task_in_sequence", 409, params={"task_id": task["task_id"],
                                                        "sequence_id": task["sequence_id"]},
                       extra={"sequence_id": task["sequence_id"]})


def _owned(req: Request, task: dict[str, Any]) -> None:
    """An operator acts on their own tasks; another's needs `others` (and, with
    --require-reason, a reason)."""
    owner = task.get("submitted_by")
    req.check_owner(owner)
    if owner != req.principal.name:
        req.need_reason()


def cancel_task(req: Request) -> Response:
    task_id = req.params["task_id"]
    task = req.app.manager.get(task_id)
    _not_a_step(req, task)
    if task is not None:
        _owned(req, task)
    state = req.app.worker.cancel(task_id, req.audit("task.cancel"))  # TaskNotFound...
    if state == "cancelled":
        return Response(200, {"success": True, "task_id": task_id,
                              "status": TaskStatus.CANCELLED.value,
                              "code": "cancelled", "message": req.t("info.cancelled")})
    return Response(202, {"success": True, "task_id": task_id,
                          "status": TaskStatus.RUNNING.value,
                          "code": "cancel_requested", "message": req.t("info.cancel_requested")})


def retry_task(req: Request) -> Response:
    old = _get_task(req)
    _not_a_step(req, old)
    req.check_owner(old.get("submitted_by"))
    if old["status"] not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        raise ApiError("task_not_retryable", 409,
                       params={"task_id": old["task_id"], "status": old["status"]})
    # The retry is the same sample's work: it keeps the LIMS's id.
    task, created = _submit(req, old["cmd_type"], old["params"], retry_of=old["task_id"],
                            key=req.idempotency_key(), quiet=True,
                            external_id=old.get("external_id"))
    response = _accepted(req, task, created)
    if created:  # not the guide's submit: its own code, in the request's language
        response.body["code"] = "requeued"
        response.body["message"] = req.t("info.requeued", task_id=old["task_id"])
    response.body["retry_of"] = old["task_id"]
    return response


def list_tasks(req: Request) -> Response:
    filters = task_filters(req)  # the CSV export's too
    limit = req.query_int("limit", default=50, low=1, high=500)
    offset = req.query_int("offset", default=0, low=0, high=10**9)
    cursor = req.query.get("cursor")
    if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) < 19):
        raise ApiError("invalid_cursor", 400)  # "" too: a lost next_cursor, not page one
    tasks, last_seq = req.app.manager.list_page(
        limit=limit, offset=offset if cursor is None else 0,
        before_seq=None if cursor is None else int(cursor), **filters)
    next_cursor = str(last_seq) if len(tasks) == limit and last_seq is not None else None
    tasks = localize_all(tasks, req.lang, req.app.manager.lang)
    return Response(200, {"tasks": tasks, "count": len(tasks), "limit": limit,
                          "offset": offset, "next_cursor": next_cursor,
                          "total": req.app.manager.count(**filters)})


# -- queue -------------------------------------------------------------------------------
@long_lived("wait")
def queue_status(req: Request) -> Response:
    wait = _wait_s(req)
    # Checked with or without wait, so a typo shows before it is relied on.
    since = req.query_int("since", default=req.app.events.version, low=0, high=10**12)
    recent = req.app.settings.recent_in_status
    if wait is None:
        # The reply bytes are cached with the document: a poll between changes encodes nothing.
        return Response(200, req.app.manager.queue_status(recent, encoded=True))
    changed = req.app.events.wait_for_change(since, wait) > since
    return Response(200, {**req.app.manager.queue_status(recent), "timed_out": not changed})


def queue_pause(req: Request) -> Response:
    reason = None  # the manager's "paused by the operator", in the server's language
    if req.body.strip():
        reason = req.json_object().get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ApiError("pause_reason_invalid", 400)  # not paused: a script's mistake
        if reason is not None:  # shown on the console and the page: one sane line
            reason = one_line(reason, 200)
    return Response(200, {"success": True, "code": "paused", "message": req.t("info.paused"),
                          **req.app.manager.pause(reason, audit=req.audit("queue.pause"))})


def queue_resume(req: Request) -> Response:
    req.need_reason()  # resuming after a hold says why the robot may go on
    return Response(200, {"success": True, "code": "resumed", "message": req.t("info.resumed"),
                          **req.app.manager.resume(req.audit("queue.resume"))})


# -- robot ---------------------------------------------------------------------------------
@emergency  # reachable even when every ordinary connection slot is taken
def robot_stop(req: Request) -> Response:
    state = req.app.worker.emergency_stop(req.audit("robot.stop", target="robot"))
    if state["stop_sent"]:
        code, message = "stop_sent", req.t("info.stop_sent")
    else:
        code, message = "stop_not_sent", req.t("info.stop_not_sent")
    return Response(200, {"success": bool(state["stop_sent"]), "code": code, "message": message,
                          **state})


def robot_info(req: Request) -> Response:
    return Response(200, {**req.app.robot_info(), **req.app.device()})  # + name, labels


def health(req: Request) -> Response:
    status, body = req.app.health()
    return Response(status, body)


def commands(req: Request) -> Response:
    return Response(200, {"commands": _commands(req).catalog(req.lang)})


def service(req: Request) -> Response:
    # Browsers rank text/html first; scripts send */* or nothing and get JSON.
    if req.app.static_dir and req.prefers_html():
        return serve_static(req, "index.html")
    return Response(200, {
        "service": "robot task server", "mode": req.app.settings.mode,
        "submit": "POST / with a JSON command", "task": "GET /task/<task_id>",
        "queue": "GET /queue/status", "tasks": "GET /tasks", "events": "GET /events",
        "commands": "GET /commands", "health": "GET /health", "openapi": "GET /openapi.json",
        "dashboard": "GET / from a browser",
    }, {"Vary": "Accept"})  # the same URL is the dashboard for browsers: caches must know


def metrics(req: Request) -> Response:
    # Gauges and task counters are read now, so they always agree with /queue/status.
    text = req.app.metrics.render(req.app.manager.queue_status(recent=0), req.app.robot_info())
    return Response(200, text.encode("utf-8"), content_type=METRICS_CONTENT_TYPE)


# -- live events -----------------------------------------------------------------------
def _sse(event_id: int | None, kind: str, data: Any) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {kind}")
    lines.append("data: " + json.dumps(data, ensure_ascii=False))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _sse_event(event: Event) -> bytes:
    return _sse(event.id, event.kind, event.data)


@long_lived()
def events(req: Request) -> StreamResponse:
    raw = req.headers.get("Last-Event-ID") or req.query.get("last_event_id")
    last_id = int(raw) if raw and raw.isascii() and raw.isdigit() and len(raw) < 19 else None
    sub = req.app.events.subscribe(last_id)  # TooManySubscribers
    try:
        # retry in the snapshot's block: a lone retry block is an "event" without
        # data that some clients (and proxies' buffering) handle badly.
        first = b"retry: 2000\n" + _sse(None, "snapshot", {
            "queue": req.app.manager.queue_status(), "robot": req.app.robot_info(),
            "mode": req.app.settings.mode})
    except BaseException:
        sub.close()
        raise
    return StreamResponse(SubscriptionFrames(sub, first, _sse_event, KEEPALIVE_S))


def build_router() -> Router:
    # Every route says what it needs (server/guard/permissions.py, docs/security.md).
    # Public: the page shell and its files (no lab data: the page asks for a token
    # before it reads anything) and /health (liveness for monitors).
    r = Router()
    r.add("GET", "/", service, "public")
    r.add("POST", "/", submit, "submit")
    r.add("POST", "/validate", validate, "read")
    r.add("GET", "/tasks", list_tasks, "read")
    r.add("GET", "/task/<task_id>", get_task, "read")
    r.add("DELETE", "/task/<task_id>", cancel_task, "cancel")
    r.add("POST", "/task/<task_id>/cancel", cancel_task, "cancel")
    r.add("POST", "/task/<task_id>/retry", retry_task, "submit")
    r.add("GET", "/task/<task_id>/transcript", task_transcript, "read")
    r.add("GET", "/queue/status", queue_status, "read")
    r.add("POST", "/queue/pause", queue_pause, "queue")
    r.add("POST", "/queue/resume", queue_resume, "queue")
    r.add("POST", "/robot/stop", robot_stop, "stop")
    r.add("GET", "/robot", robot_info, "read")
    r.add("GET", "/health", health, "public")
    r.add("GET", "/commands", commands, "read")
    r.add("GET", "/metrics", metrics, "read")
    r.add("GET", "/events", events, "read")
    r.add("GET", "/openapi.json", openapi_document, "read")
    r.add("GET", "/static/<name>", static_file, "public")
    add_sequence_routes(r)
    add_admin_routes(r)
    add_webhook_routes(r)
    add_export_routes(r)
    add_queue_routes(r)
    return r
