"""Route functions of sequences (docs/sequences.md): submit, read, list, and the
operator's recover, confirm, cancel and fix-it. The runner answers the requests
(tasks/sequences/runner.py); nothing here touches the robot."""

from __future__ import annotations

from typing import Any

from server.api.routing import Request, Response, paused_fields
from server.errors import ApiError
from tasks.sequences.plan import PlanInvalid, build_plan
from tasks.sequences.service import RECOVER_ACTIONS, SequenceService
from tasks.store import SequenceRow

STATUSES = ("pending", "running", "held", "completed", "failed", "cancelled")


def _service(req: Request) -> SequenceService:
    service = req.app.sequences
    if service is None:  # an Application built without sequences (a test double)
        raise ApiError("sequences_unavailable", 503)
    return service


def _document(req: Request, sequence_id: str) -> dict[str, Any]:
    doc = _service(req).document(sequence_id)
    if doc is None:
        raise ApiError("sequence_not_found", 404, params={"sequence_id": sequence_id})
    return doc


def _row(req: Request, sequence_id: str) -> SequenceRow:
    """The stored row (status, who did what), without the document's steps: what a
    request needs to check ownership and record its audit row's `before`."""
    row = _service(req).store.get(sequence_id)
    if row is None:
        raise ApiError("sequence_not_found", 404, params={"sequence_id": sequence_id})
    return row


def _plan_errors(req: Request, exc: PlanInvalid) -> ApiError:
    errors = []
    for p in exc.problems:
        entry: dict[str, Any] = {"step": p.step, "code": p.code,
                                 "message": req.t(f"error.{p.code}", **p.params)}
        if p.field is not None:
            entry["field"] = p.field
        errors.append(entry)
    return ApiError("sequence_invalid", 422, params={"count": len(errors)},
                    extra={"errors": errors})


def submit_sequence(req: Request) -> Response:
    key = req.idempotency_key()
    service = _service(req)
    try:
        plan = build_plan(req.framed_json(), req.app.commands or req.app.manager.commands)
    except PlanInvalid as exc:
        raise _plan_errors(req, exc) from None
    if req.query_flag("dry_run"):
        return Response(200, {"success": True, "code": "sequence_valid",
                              "message": req.t("info.sequence_valid"),
                              "plan": service.plan_estimate(plan)})
    sequence_id, created, task_ids, position = service.submit(
        plan, idempotency_key=key, audit=req.audit("sequence.submit", before=None))
    queue = req.app.manager.queue_brief()
    body: dict[str, Any] = {
        "success": True, "code": "queued", "message": req.t("info.sequence_queued"),
        "sequence_id": sequence_id, "task_ids": task_ids, "status": "pending",
        "queue_position": position, "queue_size": queue.queue_size}
    headers = {"Location": f"/sequences/{sequence_id}"}
    note = f"sequence {sequence_id} of {len(task_ids)} steps pending"
    if not created:
        doc = _document(req, sequence_id)
        body.update({"code": "idempotent_replay", "message": req.t("info.idempotent_replay"),
                     "status": doc["status"]})
        headers["Idempotent-Replayed"] = "true"
        note = f"sequence {sequence_id} replayed"
    body.update(paused_fields(req, queue))
    return Response(202, body, headers, log_note=note)


def get_sequence(req: Request) -> Response:
    return Response(200, _document(req, req.params["sequence_id"]))


def list_sequences(req: Request) -> Response:
    status = req.query.get("status")
    if status is not None and status not in STATUSES:
        raise ApiError("unknown_status", 400,
                       params={"status": repr(status), "statuses": ", ".join(STATUSES)})
    limit = req.query_int("limit", default=50, low=1, high=500)
    cursor = req.query.get("cursor")
    if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) < 19):
        raise ApiError("invalid_cursor", 400)
    rows, last = _service(req).list_page(status=status, limit=limit,
                                         before_seq=None if cursor is None else int(cursor))
    return Response(200, {"sequences": rows, "count": len(rows), "limit": limit,
                          "next_cursor": str(last) if len(rows) == limit and last else None})


def _answered(req: Request, done: bool, code: str, message: str) -> Response:
    doc = _document(req, req.params["sequence_id"])
    if not done:  # the runner has not answered yet (a STOP to confirm): it still will
        return Response(202, {"success": True, "code": "request_accepted",
                              "message": req.t("info.request_accepted"), "sequence": doc})
    return Response(200, {"success": True, "code": code, "message": message, "sequence": doc})


def recover_sequence(req: Request) -> Response:
    action = req.json_object().get("action")
    if not isinstance(action, str) or action not in RECOVER_ACTIONS:
        raise ApiError("recover_action_invalid", 400,
                       params={"actions": ", ".join(RECOVER_ACTIONS)})
    req.need_reason()
    sequence_id = req.params["sequence_id"]
    before = _row(req, sequence_id).status
    done = _service(req).ask(sequence_id, "recover", action,
                             audit=req.audit("sequence.recover", before=before))
    return _answered(req, done, "recovered", req.t("info.recovered", action=action))


def confirm_sequence(req: Request) -> Response:
    sequence_id = req.params["sequence_id"]
    before = _row(req, sequence_id).status
    done = _service(req).ask(sequence_id, "confirm",
                             audit=req.audit("sequence.confirm", before=before))
    return _answered(req, done, "confirmed", req.t("info.confirmed"))


def cancel_sequence(req: Request) -> Response:
    sequence_id = req.params["sequence_id"]
    row = _row(req, sequence_id)
    owner = row.by.get("submitted_by")
    req.check_owner(owner)
    if owner != req.principal.name:
        req.need_reason()
    done = _service(req).cancel(sequence_id,
                                audit=req.audit("sequence.cancel", before=row.status))
    return _answered(req, done, "cancelled_sequence", req.t("info.cancelled_sequence"))


def fixit_sequence(req: Request) -> Response:
    cmd_type, params = req.command()
    sequence_id = req.params["sequence_id"]
    task_id = _service(req).fixit(sequence_id, cmd_type, params,
                                  audit=req.audit("sequence.fixit", before=None))
    return Response(202, {"success": True, "code": "fixit_queued",
                          "message": req.t("info.fixit_queued"), "task_id": task_id,
                          "sequence_id": sequence_id},
                    {"Location": f"/task/{task_id}"}, log_note=f"fix-it {task_id} {cmd_type}")


def add_routes(r: Any) -> None:
    r.add("POST", "/sequences", submit_sequence, "submit")
    r.add("GET", "/sequences", list_sequences, "read")
    r.add("GET", "/sequences/<sequence_id>", get_sequence, "read")
    r.add("POST", "/sequences/<sequence_id>/recover", recover_sequence, "sequence")
    r.add("POST", "/sequences/<sequence_id>/confirm", confirm_sequence, "sequence")
    r.add("POST", "/sequences/<sequence_id>/cancel", cancel_sequence, "cancel")
    r.add("POST", "/sequences/<sequence_id>/fixit", fixit_sequence, "sequence")
