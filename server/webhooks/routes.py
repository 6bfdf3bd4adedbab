"""Route functions of webhooks (docs/webhooks.md): subscriptions, their delivery log,
replay and test. Each change is audited; the secret is in the answer that makes it and
nowhere else."""

from __future__ import annotations

from typing import Any

from server.api.routing import Request, Response
from server.errors import ApiError
from server.webhooks.sender import WebhookSender
from server.webhooks.signing import new_secret
from tasks.store.outbox import EVENT_TYPES
from tasks.store.webhooks import DESCRIPTION_MAX, STATUSES, WebhookStore, subscribed

_FIELDS = {"url", "events", "description", "enabled"}  # enabled: a change's only


def _sender(req: Request) -> WebhookSender:
    sender = req.app.webhooks
    if sender is None:  # an Application built without a sender (a test double)
        raise ApiError("webhooks_unavailable", 503)
    return sender


def _store(req: Request) -> WebhookStore:
    return _sender(req).store


def _body(req: Request, *, creating: bool) -> dict[str, Any]:
    """The body's fields, each checked: 422 naming the first bad one."""
    body = req.framed_json()
    unknown = sorted(set(body) - (_FIELDS - {"enabled"} if creating else _FIELDS))
    if unknown:
        raise ApiError("webhook_field_unknown", 422, params={"names": ", ".join(unknown)},
                       extra={"field": unknown[0]})
    out: dict[str, Any] = {}
    if creating or "url" in body:
        url = body.get("url")
        if not isinstance(url, str):
            raise ApiError("webhook_url_invalid", 422, params={"url": repr(url)[:200]},
                           extra={"field": "url"})
        _sender(req).allow.check(url)  # 422 webhook_url_refused: not where it may go
        out["url"] = url
    if creating or "events" in body:
        out["events"] = _events(body.get("events"))
    if body.get("description") is not None:
        text = body["description"]
        if not isinstance(text, str) or len(text) > DESCRIPTION_MAX:
            raise ApiError("webhook_description_invalid", 422,
                           params={"max": DESCRIPTION_MAX}, extra={"field": "description"})
        out["description"] = text
    if "enabled" in body and not creating:
        if not isinstance(body["enabled"], bool):
            raise ApiError("webhook_enabled_invalid", 422, extra={"field": "enabled"})
        out["enabled"] = body["enabled"]
    return out


def _events(value: Any) -> list[str]:
    events = subscribed(value)
    if events is None:
        raise ApiError("webhook_events_invalid", 422,
                       params={"events": repr(value)[:200],
                               "known": ", ".join(("*",) + EVENT_TYPES)},
                       extra={"field": "events"})
    return events


def add_webhook(req: Request) -> Response:
    fields = _body(req, creating=True)
    secret = new_secret()
    hook = _store(req).add(fields["url"], fields["events"], fields.get("description"),
                           secret, audit=req.audit("webhook.add"))
    _sender(req).changed()
    return Response(201, {"success": True, "code": "webhook_added",
                          "message": req.t("info.webhook_added"), "id": hook.id,
                          "secret": secret, "webhook": hook.to_dict()},
                    {"Location": f"/webhooks/{hook.id}"},
                    log_note=f"webhook {hook.id} added")  # never the secret


def list_webhooks(req: Request) -> Response:
    return Response(200, {"webhooks": _store(req).overview()})


def change_webhook(req: Request) -> Response:
    hook_id = req.params["webhook_id"]
    _store(req).get(hook_id)  # 404 before the body's 422s
    fields = _body(req, creating=False)
    _store(req).change(hook_id, audit=req.audit("webhook.change"),
                       disabled_reason="by_operator", **fields)
    _sender(req).changed()
    (doc,) = _store(req).overview(hook_id)
    return Response(200, {"success": True, "webhook": doc},
                    log_note=f"webhook {hook_id} changed")


def remove_webhook(req: Request) -> Response:
    hook_id = req.params["webhook_id"]
    _store(req).remove(hook_id, audit=req.audit("webhook.remove"))
    _sender(req).changed()
    return Response(200, {"success": True, "id": hook_id},
                    log_note=f"webhook {hook_id} removed")


def deliveries(req: Request) -> Response:
    hook_id = req.params["webhook_id"]
    _store(req).get(hook_id)
    status = req.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise ApiError("unknown_status", 400,
                       params={"status": repr(status), "statuses": ", ".join(STATUSES)})
    limit = req.query_int("limit", default=50, low=1, high=500)
    before = req.query_int("before", default=0, low=0, high=10**18 - 1) or None
    rows = _store(req).deliveries(hook_id, status=status, limit=limit, before=before)
    return Response(200, {"deliveries": rows,
                          "next_before": rows[-1]["id"] if len(rows) == limit else None})


def _sent(req: Request, hook_id: str, delivery_id: int) -> Response:
    (doc,) = _store(req).deliveries(hook_id, delivery_id=delivery_id)
    return Response(200, {"success": True, "delivery": doc},
                    log_note=f"webhook {hook_id} delivery {delivery_id} {doc['status']}")


def replay(req: Request) -> Response:
    raw = req.params["delivery_id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) < 19):
        raise ApiError("delivery_not_found", 404, params={"id": raw[:80]})
    store = _store(req)
    old = store.delivery(int(raw))
    hook = store.get(old.webhook_id)
    # The same webhook-id: a receiver that has it already knows it is the same event.
    new = store.new_delivery(hook.id, old.type, old.body, msg_id=old.msg_id,
                             replay_of=old.id, audit=req.audit("webhook.replay"))
    _sender(req).send(hook, new)
    return _sent(req, hook.id, new.id)


def ping_webhook(req: Request) -> Response:
    hook = _store(req).get(req.params["webhook_id"])
    new, _ = _sender(req).ping(hook, req.audit("webhook.test"))
    return _sent(req, hook.id, new.id)


def add_routes(r: Any) -> None:
    r.add("GET", "/webhooks", list_webhooks, "webhooks")
    r.add("POST", "/webhooks", add_webhook, "webhooks")
    r.add("PATCH", "/webhooks/<webhook_id>", change_webhook, "webhooks")
    r.add("DELETE", "/webhooks/<webhook_id>", remove_webhook, "webhooks")
    r.add("GET", "/webhooks/<webhook_id>/deliveries", deliveries, "webhooks")
    r.add("POST", "/webhooks/<webhook_id>/test", ping_webhook, "webhooks")
    r.add("POST", "/webhooks/deliveries/<delivery_id>/replay", replay, "webhooks")
