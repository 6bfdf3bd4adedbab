"""The webhooks' part of the OpenAPI document (docs/webhooks.md): the paths of
server/webhooks/routes.py and their component schemas, the requests this server sends
to subscribers (the document's top-level `webhooks`), and a task's `external_id` (the
body of POST / and POST /validate, the query of GET /tasks).

The event types and delivery statuses are the task store's (tasks/store/outbox.py,
tasks/store/webhooks.py), so the document names what the server sends.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from server.api.openapi_schemas import (
    JSON,
    NULLABLE_STRING,
    error_reply,
    json_reply,
    object_schema,
    ref,
)
from server.api.openapi_security import NULLABLE_UTC, REASON, UTC
from server.api.routing import EXTERNAL_ID_MAX
from server.webhooks.routes import DESCRIPTION_MAX
from tasks.store.outbox import (
    EVENT_TYPES,
    MODE_EVENTS,
    PING,
    QUEUE_EVENTS,
    ROBOT_EVENTS,
    SEQUENCE_EVENTS,
    TASK_EVENTS,
)
from tasks.store.webhooks import STATUSES

Operation = Callable[..., dict[str, Any]]
# 1-200 characters, not all white space, no control characters (C0 or DEL).
EXTERNAL_ID = {"type": "string", "minLength": 1, "maxLength": EXTERNAL_ID_MAX,
               "pattern": r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$",
               "description": "the caller's own id, e.g. a LIMS sample or order id "
                              "(docs/webhooks.md#external_id); not unique"}
TASKS_EXTERNAL_ID = {"name": "external_id", "in": "query", "required": False,
                     "description": "only the tasks submitted with exactly this external_id",
                     "schema": {"type": "string"}}
NULLABLE_INT = {"type": ["integer", "null"]}
_SUBSCRIBABLE = [*EVENT_TYPES, "*"]
_EVENTS = {"type": "array", "minItems": 1, "items": {"enum": _SUBSCRIBABLE},
           "description": "event types, or [\"*\"] for all; never ping"}
_URL = {"type": "string", "minLength": 1,
        "description": "http or https, with a host, no user name or password; the host "
                       "must resolve only to addresses --webhook-allow allows "
                       "(docs/webhooks.md#safety)"}


def submission(command: dict[str, Any]) -> dict[str, Any]:
    """POST /'s body: each command of the table (the Command schema's variants) with an
    optional external_id beside cmd_type and params."""
    variants = []
    for variant in command["oneOf"]:
        one = copy.deepcopy(variant)
        one["properties"]["external_id"] = {
            **EXTERNAL_ID, "type": ["string", "null"],
            "description": "the caller's own id, kept with the task and sent back in its "
                           "document and events; null or absent: none "
                           "(422 external_id_invalid)"}
        variants.append(one)
    return {"description": "A robot command (see GET /commands), with the caller's own "
                           "external_id.", "oneOf": variants}


def _event_data() -> dict[str, Any]:
    """What `data` holds, by the event's kind."""
    summary = object_schema([], {
        "success": {"type": "boolean"}, "code": {"type": "string"},
        "message": {"type": "string", "description": "at most 300 characters"},
        "error": {"type": "string"},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"},
                   "description": "the number of items of each list in the result"}},
        "a few fields of the result, and its whole-number ..._count fields (scanned_count); "
        "the full result is at url")
    summary["patternProperties"] = {"_count$": {"type": "integer"}}
    task = object_schema(["task_id", "status"], {
        "task_id": {"type": "string"}, "status": {"enum": ["completed", "failed", "cancelled"]},
        "cmd_type": {"type": "string"},
        "external_id": {**NULLABLE_STRING, "description": "given on POST /; null if none"},
        "submitted_by": {"type": "string", "description": "only when known"},
        "sequence_id": {"type": "string", "description": "only for a sequence's step"},
        "step": {"type": "integer", "minimum": 1, "description": "only for a sequence's step"},
        "result_summary": summary,
        "url": {"type": "string", "description": "the task document (--public-url)"}})
    sequence = object_schema(["sequence_id", "status"], {
        "sequence_id": {"type": "string"},
        "status": {"enum": ["completed", "failed", "held", "cancelled"]},
        "name": NULLABLE_STRING, "external_id": NULLABLE_STRING,
        "submitted_by": {"type": "string", "description": "only when known"},
        "current_step": {**NULLABLE_INT, "description": "only for sequence.held: the "
                                                     "step it is held at"},
        "hold": {"type": "object", "description": "only for sequence.held: why (the "
                 "document's hold_code, and what its hold_reason is made from)",
                 "properties": {"code": {"type": ["string", "null"]},
                                "params": {"type": "object"}}},
        "result_summary": object_schema(["steps", "completed"], {
            "steps": {"type": "integer"}, "completed": {"type": "integer"}}),
        "url": {"type": "string", "description": "the sequence document (--public-url)"}})
    queue = object_schema(["paused"], {
        "paused": {"type": "boolean"},
        "reason": {**NULLABLE_STRING, "description": "only in queue.paused"},
        "code": {**NULLABLE_STRING, "description": "only in queue.paused"},
        "by": {**NULLABLE_STRING, "description": "who; null: the server itself (a hold)"}})
    mode = object_schema(["queue_mode", "reason", "by", "window"], {
        "queue_mode": {"enum": ["draining", "maintenance", "open"]},
        "reason": {**NULLABLE_STRING, "description": "the window's reason (queue.opened: "
                   "the reason given for opening, if any)"},
        "by": {**NULLABLE_STRING, "description": "who; null: the server itself (a "
               "drained queue entering maintenance)"},
        "window": {"type": ["integer", "null"],
                   "description": "the maintenance record's id (GET /maintenance)"}})
    robot = object_schema(["event"], {
        "event": {"enum": ["disconnected", "fault", "alarm"]}, "error": NULLABLE_STRING,
        "cmd": {"type": "string", "description": "the command in flight, if any"}})
    ping = object_schema(["webhook_id", "message"], {
        "webhook_id": {"type": "string"}, "message": {"const": "ping"}})
    return {"WebhookTaskData": task, "WebhookSequenceData": sequence,
            "WebhookQueueData": queue, "WebhookModeData": mode, "WebhookRobotData": robot,
            "WebhookPingData": ping}


_DATA_OF = {**{k: "WebhookTaskData" for k in TASK_EVENTS},
            **{k: "WebhookSequenceData" for k in SEQUENCE_EVENTS},
            **{k: "WebhookQueueData" for k in QUEUE_EVENTS},
            **{k: "WebhookModeData" for k in MODE_EVENTS},
            **{k: "WebhookRobotData" for k in ROBOT_EVENTS}, PING: "WebhookPingData"}


def webhook_schemas(command: dict[str, Any]) -> dict[str, Any]:
    """The components of webhooks and of POST /'s body; ``command`` is the document's
    Command schema."""
    last = {"type": ["object", "null"], "required": ["time", "status_code", "error",
                                                      "delivery_id", "ok"],
            "description": "the latest attempt; null before the first",
            "properties": {"time": UTC, "status_code": NULLABLE_INT, "error": NULLABLE_STRING,
                           "delivery_id": {"type": "integer"}, "ok": {"type": "boolean"}}}
    hook_props: dict[str, Any] = {
        "id": {"type": "string"}, "url": {"type": "string"},
        "events": {"type": "array", "items": {"enum": _SUBSCRIBABLE}},
        "description": NULLABLE_STRING, "enabled": {"type": "boolean"},
        "disabled_reason": {**NULLABLE_STRING, "description": "gone (the receiver answered "
                            "410), retries_exhausted, by_operator; null while enabled"},
        "created": UTC, "created_by": NULLABLE_STRING,
        "pending": {"type": "integer", "minimum": 0,
                    "description": "deliveries not yet delivered nor given up"},
        "last": last}
    hook_required = [k for k in hook_props if k not in ("pending", "last")]
    attempt = object_schema(["n", "time", "status_code", "error", "duration_ms"], {
        "n": {"type": "integer", "minimum": 1}, "time": UTC,
        "status_code": {**NULLABLE_INT, "description": "null: no answer"},
        "error": {**NULLABLE_STRING, "description": "null: a 2xx answer"},
        "duration_ms": {"type": "integer", "minimum": 0}})
    delivery_props: dict[str, Any] = {
        "id": {"type": "integer"}, "webhook_id": {"type": "string"},
        "msg_id": {"type": "string", "description": "the webhook-id header: the same on "
                                                   "every retry and replay"},
        "type": {"enum": [*EVENT_TYPES, PING]}, "status": {"enum": list(STATUSES)},
        "created": UTC,
        "next_try": {**NULLABLE_UTC, "description": "when it is tried next; null unless "
                                                    "pending"},
        "replay_of": {**NULLABLE_INT, "description": "the delivery this one replayed"},
        "attempts": {"type": "array", "items": attempt},
        "body": {"type": ["object", "null"], "description": "the payload as signed and sent "
                 "(WebhookPayload)"}}
    success = {"const": True}
    body_props: dict[str, Any] = {
        "url": _URL, "events": _EVENTS,
        "description": {**NULLABLE_STRING, "maxLength": DESCRIPTION_MAX,
                        "description": "for people; null or absent: none (POST), "
                                       "unchanged (PATCH)"}}
    return {
        "Submission": submission(command),
        "Webhook": object_schema(hook_required, hook_props, "a subscription; never its secret. "
                           "pending and last are absent in POST's reply (a new one has "
                           "none)"),
        "WebhookList": object_schema(["webhooks"], {"webhooks": {"type": "array",
                                                           "items": ref("Webhook")}}),
        "WebhookBody": object_schema(["url", "events"], body_props, closed=True),
        "WebhookChange": object_schema([], {**body_props, "enabled": {"type": "boolean"}},
                                 "only what is given changes; enabling again sends its "
                                 "pending deliveries", closed=True),
        "WebhookCreated": object_schema(["success", "id", "secret", "webhook"], {
            "success": success, "code": {"const": "webhook_added"},
            "message": {"type": "string"}, "id": {"type": "string"},
            "secret": {"type": "string", "pattern": "^whsec_",
                       "description": "shown this once: signs every delivery"},
            "webhook": ref("Webhook")}),
        "WebhookChanged": object_schema(["success", "webhook"], {"success": success,
                                                           "webhook": ref("Webhook")}),
        "WebhookRemoved": object_schema(["success", "id"], {"success": success,
                                                      "id": {"type": "string"}}),
        "Delivery": object_schema(list(delivery_props), delivery_props),
        "DeliveryPage": object_schema(["deliveries", "next_before"], {
            "deliveries": {"type": "array", "items": ref("Delivery"),
                           "description": "newest first"},
            "next_before": {**NULLABLE_INT, "description": "pass as before for older ones"}}),
        "DeliverySent": object_schema(["success", "delivery"], {
            "success": {**success, "description": "also when the receiver failed: see "
                                                  "delivery.status and its attempts"},
            "delivery": ref("Delivery")}),
        "WebhookPayload": object_schema(["type", "timestamp", "data"], {
            "type": {"enum": [*EVENT_TYPES, PING]},
            "timestamp": {**UTC, "description": "when the event happened"},
            "data": {"type": "object"}}, "the body of a delivery: compact JSON, UTF-8, "
                                         "under 20 KB"),
        **_event_data(),
    }


def webhook_paths(operation: Operation, errors: dict[str, Any]) -> dict[str, Any]:
    """The paths of server/webhooks/routes.py; ``errors`` are the document's common
    replies by status."""
    def pick(*codes: str) -> dict[str, Any]:
        return {c: errors[c] for c in codes}

    hook_id = {"name": "webhook_id", "in": "path", "required": True,
               "schema": {"type": "string"}}
    delivery_id = {"name": "delivery_id", "in": "path", "required": True,
                   "schema": {"type": "string"}}
    not_found = error_reply("no such subscription (webhook_not_found)")
    refused = error_reply("webhook_url_invalid (not http/https, no host, a user name or "
                          "password), webhook_url_refused (the host resolves outside "
                          "--webhook-allow; host and address name it), "
                          "webhook_events_invalid (empty, or an unknown type), "
                          "webhook_description_invalid, webhook_enabled_invalid, "
                          "webhook_field_unknown; field names it")
    body = {"required": True, "content": {JSON: {"schema": ref("WebhookBody"), "example": {
        "url": "http://127.0.0.1:9000/robot", "events": ["task.completed", "task.failed"],
        "description": "LIMS"}}}}
    change = {"required": True, "content": {JSON: {"schema": ref("WebhookChange")}}}
    sent = json_reply(ref("DeliverySent"), "sent: the delivery with its one attempt")
    return {
        "/webhooks": {
            "get": operation("The webhook subscriptions, with their last result", {
                "200": json_reply(ref("WebhookList"), "every subscription, never a secret")}),
            "post": operation("Subscribe a URL to events; its secret is shown once", {
                "201": json_reply(ref("WebhookCreated"), "subscribed: it hears of events "
                                                         "from now on"),
                "422": refused, **pick("400", "411", "413", "415"),
            }, body=body, description="The server POSTs each event to the URL, signed as "
               "Standard Webhooks says, retried until delivered, in order "
               "(docs/webhooks.md)."),
        },
        "/webhooks/{webhook_id}": {
            "patch": operation("Enable, disable or change a subscription", {
                "200": json_reply(ref("WebhookChanged"), "changed"), "404": not_found,
                "422": refused, **pick("400", "411", "413", "415"),
            }, params=[hook_id, REASON], body=change),
            "delete": operation("Remove a subscription with its deliveries", {
                "200": json_reply(ref("WebhookRemoved"), "removed"), "404": not_found,
            }, params=[hook_id]),
        },
        "/webhooks/{webhook_id}/deliveries": {"get": operation(
            "A subscription's deliveries with every attempt, newest first", {
                "200": json_reply(ref("DeliveryPage"), "one page"), "404": not_found,
                **pick("400"),
            }, params=[hook_id,
                       {"name": "status", "in": "query", "description": "absent: every status",
                        "schema": {"enum": list(STATUSES)}},
                       {"name": "limit", "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500,
                                   "default": 50}},
                       {"name": "before", "in": "query",
                        "description": "next_before of a previous page: older deliveries "
                                       "(0: from the newest)",
                        "schema": {"type": "integer", "minimum": 0,
                                   "maximum": 10**18 - 1}}])},  # query_int: 18 digits
        "/webhooks/{webhook_id}/test": {"post": operation(
            "Send a ping to this subscription now and wait for the answer", {
                "200": sent, "404": not_found}, params=[hook_id])},
        "/webhooks/deliveries/{delivery_id}/replay": {"post": operation(
            "Send a delivery again now (same webhook-id, new timestamp and signature)", {
                "200": sent,
                "404": error_reply("no such delivery (delivery_not_found)")},
            params=[delivery_id], description="Recorded as a new delivery whose replay_of "
            "names this one; not retried.")},
    }


def webhook_events() -> dict[str, Any]:
    """The requests this server sends to subscribers (OpenAPI's top-level `webhooks`):
    one per event type."""
    headers = [
        {"name": "webhook-id", "in": "header", "required": True,
         "description": "msg_...: the same on every retry and replay of one delivery; "
                        "deduplicate on it (at least once)", "schema": {"type": "string"}},
        {"name": "webhook-timestamp", "in": "header", "required": True,
         "description": "when this attempt was sent, Unix seconds",
         "schema": {"type": "string", "pattern": "^[0-9]+$"}},
        {"name": "webhook-signature", "in": "header", "required": True,
         "description": "v1,<base64 HMAC-SHA256 of \"<webhook-id>.<webhook-timestamp>."
                        "<body>\"> keyed with the base64-decoded part of the secret after "
                        "whsec_ (docs/webhooks.md#verifying-a-delivery)",
         "schema": {"type": "string", "pattern": "^v1,"}},
    ]
    out = {}
    for kind, data in _DATA_OF.items():
        payload = object_schema(["type", "timestamp", "data"], {
            "type": {"const": kind}, "timestamp": {**UTC, "description": "when it happened"},
            "data": ref(data)})
        out[kind] = {"post": {
            "summary": f"{kind}: sent to each subscription that wants it"
                       if kind != PING else "ping: sent by a test, never subscribed to",
            "parameters": headers,
            "requestBody": {"required": True, "content": {JSON: {"schema": payload}}},
            "responses": {
                "2XX": {"description": "delivered (within 15 s)"},
                "410": {"description": "gone: the subscription is disabled"},
                "default": {"description": "failed (also a 3xx: redirects are not "
                                           "followed): retried on the schedule; after the "
                                           "last retry the subscription is disabled"}}}}
    return out
