"""The sequences' part of the OpenAPI document (docs/sequences.md): the paths of
server/api/sequences.py and their component schemas.

A sequence's steps are the commands of the table this server validates with (the
Command schema's variants), each with its own label, on_error and retry, plus the
built-in CONFIRM; the limits are the ones tasks/sequences/plan.py checks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from server.api.openapi_schemas import (
    BY,
    JSON,
    NULLABLE_STRING,
    TIME,
    error_reply,
    json_reply,
    ref,
)
from server.api.sequences import STATUSES
from tasks.models import ALL_STATUSES
from tasks.sequences.plan import (
    CONFIRM,
    CONFIRM_MESSAGE_MAX,
    CONFIRM_TIMEOUT_MAX,
    MAX_RETRY,
    MAX_STEPS,
    MAX_TEXT,
    ON_ERROR,
)
from tasks.sequences.service import RECOVER_ACTIONS
from tasks.sequences.views import HOLD_TEXTS

Operation = Callable[..., dict[str, Any]]
STEP_STATUSES = (*ALL_STATUSES, "skipped")
NULLABLE_INT = {"type": ["integer", "null"]}
NULLABLE_BY = {**BY, "type": ["string", "null"]}


def _text(limit: int, description: str) -> dict[str, Any]:
    """A text the plan strips: at least one character that is not white space."""
    return {"type": ["string", "null"], "minLength": 1, "maxLength": limit, "pattern": r"\S",
            "description": description}


def _rule(description: str) -> dict[str, Any]:
    return {"enum": [*ON_ERROR, None], "description": description}


def _step_variants(command: dict[str, Any]) -> list[dict[str, Any]]:
    """Each command of the table as a step, and CONFIRM."""
    extra = {
        "label": _text(MAX_TEXT, "a name people read"),
        "on_error": _rule("this step's rule when it fails; null or absent: the sequence's"),
        "retry": {"type": "integer", "minimum": 0, "maximum": MAX_RETRY,
                  "description": "re-run the step up to n times when the robot reported an "
                                 "error (ERR), before on_error applies"},
    }
    variants = []
    for variant in command["oneOf"]:
        if variant["properties"]["cmd_type"].get("const") == CONFIRM:
            continue  # built in: a table's own CONFIRM is never reached in a sequence
        step = copy.deepcopy(variant)
        step["properties"].update(copy.deepcopy(extra))
        variants.append(step)
    confirm_params = {
        "type": "object", "additionalProperties": False, "required": ["message"],
        "properties": {
            "message": {"type": "string", "minLength": 1, "maxLength": CONFIRM_MESSAGE_MAX,
                        "pattern": r"\S", "description": "shown to the operator"},
            "timeout_s": {"type": ["number", "null"], "minimum": 1,
                          "maximum": CONFIRM_TIMEOUT_MAX,
                          "description": "no answer within this many seconds fails the step "
                                         "(confirm_timeout); absent or null: no limit"}}}
    variants.append({
        "title": CONFIRM, "type": "object", "additionalProperties": False,
        "description": "the operator gate: sends nothing to the robot and runs until POST "
                       "/sequences/{sequence_id}/confirm (only inside a sequence)",
        "required": ["cmd_type", "params"],
        "properties": {"cmd_type": {"const": CONFIRM}, "params": confirm_params,
                       "label": extra["label"], "on_error": extra["on_error"],
                       "retry": {"const": 0, "description": "a CONFIRM is not retried"}}})
    return variants


def sequence_schemas(command: dict[str, Any]) -> dict[str, Any]:
    """The components of sequences; ``command`` is the document's Command schema."""
    confirm = {"type": ["object", "null"], "required": ["step", "message", "deadline"],
               "description": "set while a CONFIRM step waits",
               "properties": {"step": {"type": "integer", "minimum": 1},
                              "message": {"type": "string"},
                              "deadline": {**TIME, "description": "when it fails without an "
                                                                  "answer; null: never"}}}
    progress = {"type": "object", "required": ["steps_done", "steps_total", "percent"],
                "properties": {"steps_done": {"type": "integer", "minimum": 0,
                                              "description": "completed, skipped, or failed "
                                                             "under continue"},
                               "steps_total": {"type": "integer", "minimum": 1},
                               "percent": {"type": "number"}}}
    summary_props: dict[str, Any] = {
        "sequence_id": {"type": "string"}, "name": NULLABLE_STRING,
        "external_id": NULLABLE_STRING, "on_error": {"enum": list(ON_ERROR)},
        "status": {"enum": list(STATUSES)},
        "current_step": {**NULLABLE_INT, "description": "the step running, held at, or next "
                                                        "to run; null once ended"},
        "hold_code": {"enum": [*HOLD_TEXTS, None], "description": "why it is held"},
        "hold_reason": {**NULLABLE_STRING, "description": "hold_code's text in the "
                                                          "server's language"},
        "confirm": confirm,
        "failed_steps": {"type": "array", "items": {"type": "integer"}},
        "progress": progress, "submit_time": TIME, "start_time": TIME, "end_time": TIME}
    summary_required = list(summary_props)
    summary_props.update({  # each only once someone did it (absent in older work)
        "submitted_by": BY, "cancelled_by": NULLABLE_BY, "recovered_by": NULLABLE_BY,
        "resumed_by": {**NULLABLE_BY, "description": "who answered its CONFIRM step"}})
    step_state = {
        "type": "object",
        "required": ["step", "label", "cmd_type", "params", "on_error", "retry", "task_id",
                     "task_ids", "status", "attempts", "result"],
        "properties": {
            "step": {"type": "integer", "minimum": 1}, "label": NULLABLE_STRING,
            "cmd_type": {"type": "string"}, "params": {"type": "object"},
            "on_error": {"enum": [*ON_ERROR, None]}, "retry": {"type": "integer"},
            "task_id": {"type": "string", "description": "the latest attempt's task"},
            "task_ids": {"type": "array", "items": {"type": "string"},
                         "description": "every attempt's task, oldest first"},
            "status": {"enum": list(STEP_STATUSES),
                       "description": "the latest attempt's task's, or skipped"},
            "attempts": {"type": "integer", "minimum": 0,
                         "description": "attempts that started"},
            "result": {"type": ["object", "null"],
                       "description": "the latest attempt's task result"}}}
    fixit = {"type": "object", "required": ["task_id", "cmd_type", "params", "status", "at_step"],
             "properties": {"task_id": {"type": "string"}, "cmd_type": {"type": "string"},
                            "params": {"type": "object"},
                            "status": {"enum": list(ALL_STATUSES)},
                            "at_step": {**NULLABLE_INT, "description": "the step it followed"}}}
    planned = {
        "type": "object",
        "required": ["step", "label", "cmd_type", "params", "on_error", "retry", "estimated_s"],
        "properties": {
            "step": {"type": "integer", "minimum": 1}, "label": NULLABLE_STRING,
            "cmd_type": {"type": "string"}, "params": {"type": "object"},
            "on_error": {"enum": [*ON_ERROR, None]}, "retry": {"type": "integer"},
            "estimated_s": {"type": ["number", "null"],
                            "description": "the mean of this command's recent completed runs; "
                                           "null without history, and for CONFIRM"}}}
    answer = {"type": "object", "required": ["success", "code", "message", "sequence"],
              "properties": {
                  "success": {"const": True},
                  "code": {"enum": ["recovered", "confirmed", "cancelled_sequence",
                                    "request_accepted"]},
                  "message": {"type": "string"}, "sequence": ref("Sequence")}}
    return {
        "SequenceStep": {"description": "A step: a command of GET /commands with its own "
                                        "label, on_error and retry, or CONFIRM.",
                         "oneOf": _step_variants(command)},
        "SequenceBody": {
            "type": "object", "additionalProperties": False, "required": ["steps"],
            "properties": {
                "name": _text(MAX_TEXT, "a name people read"),
                "external_id": _text(MAX_TEXT, "the caller's own id, e.g. a LIMS batch"),
                "on_error": _rule("the rule for a failed step without its own; null or "
                                  "absent: hold"),
                "steps": {"type": "array", "minItems": 1, "maxItems": MAX_STEPS,
                          "items": ref("SequenceStep")}}},
        "SequenceQueued": {
            "type": "object",
            "required": ["success", "code", "message", "sequence_id", "task_ids", "status",
                         "queue_position", "queue_size"],
            "properties": {
                "success": {"const": True}, "code": {"enum": ["queued", "idempotent_replay"]},
                "message": {"type": "string"}, "sequence_id": {"type": "string"},
                "task_ids": {"type": "array", "items": {"type": "string"},
                             "description": "the steps' tasks"},
                "status": {"enum": list(STATUSES)},
                "queue_position": {**NULLABLE_INT, "description": "of its first step (1 = "
                                                                  "next); null on a replay"},
                "queue_size": {"type": "integer"}, "queue_paused": {"type": "boolean"},
                "pause_reason": NULLABLE_STRING, "pause_code": NULLABLE_STRING,
                "warning": {"type": "string"}}},
        "SequenceValid": {
            "type": "object", "required": ["success", "code", "message", "plan"],
            "properties": {
                "success": {"const": True}, "code": {"const": "sequence_valid"},
                "message": {"type": "string"},
                "plan": {"type": "object",
                         "required": ["name", "external_id", "on_error", "steps",
                                      "estimated_s"],
                         "properties": {"name": NULLABLE_STRING,
                                        "external_id": NULLABLE_STRING,
                                        "on_error": {"enum": list(ON_ERROR)},
                                        "steps": {"type": "array", "items": planned},
                                        "estimated_s": {"type": ["number", "null"],
                                                        "description": "the steps' sum; null "
                                                                       "if one is unknown"}}}}},
        "SequenceSummary": {"type": "object", "required": summary_required,
                            "properties": summary_props},
        "Sequence": {
            "type": "object",
            "required": [*summary_required, "steps", "fixits", "estimated_end_time"],
            "properties": {**summary_props, "steps": {"type": "array", "items": step_state},
                           "fixits": {"type": "array", "items": fixit},
                           "estimated_end_time": TIME}},
        "SequenceList": {
            "type": "object", "required": ["sequences", "count", "limit", "next_cursor"],
            "properties": {"sequences": {"type": "array", "items": ref("SequenceSummary")},
                           "count": {"type": "integer"}, "limit": {"type": "integer"},
                           "next_cursor": NULLABLE_STRING}},
        "SequenceAnswer": {**answer, "description": "200: done; 202 (request_accepted): the "
                                                    "running step's STOP is not yet confirmed"},
        "FixitQueued": {
            "type": "object",
            "required": ["success", "code", "message", "task_id", "sequence_id"],
            "properties": {"success": {"const": True}, "code": {"const": "fixit_queued"},
                           "message": {"type": "string"}, "task_id": {"type": "string"},
                           "sequence_id": {"type": "string"}}},
    }


def sequence_paths(operation: Operation, errors: dict[str, Any], *,
                   dry_run: dict[str, Any], idempotency: dict[str, Any],
                   command_body: dict[str, Any]) -> dict[str, Any]:
    """The paths of server/api/sequences.py; ``errors`` are the document's common
    replies by status, ``command_body`` POST /'s request body."""
    def pick(*codes: str) -> dict[str, Any]:
        return {c: errors[c] for c in codes}

    sequence_id = {"name": "sequence_id", "in": "path", "required": True,
                   "schema": {"type": "string"}}
    not_found = error_reply("no such sequence (sequence_not_found)")
    answered = {"200": json_reply(ref("SequenceAnswer"), "done: the sequence document"),
                "202": json_reply(ref("SequenceAnswer"), "accepted; the robot has not yet "
                                                         "confirmed the STOP"),
                "404": not_found}
    body = {**command_body, "content": {JSON: {"schema": ref("SequenceBody")}}}
    return {
        "/sequences": {
            "post": operation("Submit a sequence: several steps as one unit", {
                "202": json_reply(ref("SequenceQueued"),
                                  "queued as one entry (Location: /sequences/<sequence_id>)"),
                "200": json_reply(ref("SequenceValid"), "dry run: the valid plan with "
                                                        "estimates; nothing queued"),
                "422": error_reply("sequence_invalid (errors: [{step, code, message, "
                                   "field?}], step null for the sequence itself), or "
                                   "idempotency_key_reused"),
                **pick("400", "411", "413", "415"),
                "503": error_reply("queue full (each step counts), store unavailable "
                                   "(Retry-After)"),
            }, params=[dry_run, {**idempotency, "description": "a retry with the same key "
                                 "and body returns the original sequence"}], body=body,
                description="Validation is all or nothing: one bad step refuses the whole "
                            "sequence. Once its first step starts the sequence holds the "
                            "robot until it ends (docs/sequences.md)."),
            "get": operation("List sequences, newest first", {
                "200": json_reply(ref("SequenceList"), "one page of summaries"),
                **pick("400"),
            }, params=[
                {"name": "status", "in": "query", "description": "absent: every status",
                 "schema": {"enum": list(STATUSES)}},
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                {"name": "cursor", "in": "query",
                 "description": "next_cursor of a previous page",
                 "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}},
            ]),
        },
        "/sequences/{sequence_id}": {"get": operation("A sequence with its steps", {
            "200": json_reply(ref("Sequence"), "the sequence document"), "404": not_found,
        }, params=[sequence_id])},
        "/sequences/{sequence_id}/recover": {"post": operation(
            "Decide about a held sequence: retry, skip or abort its step", {
                **answered,
                "400": error_reply("recover_action_invalid, or a body that is no JSON "
                                   "object"),
                "409": error_reply("sequence_not_held, sequence_ended, fixit_running"),
                **pick("415"),
            }, params=[sequence_id], body={"required": True, "content": {JSON: {"schema": {
                "type": "object", "required": ["action"],
                "properties": {"action": {"enum": list(RECOVER_ACTIONS)}}}}}})},
        "/sequences/{sequence_id}/confirm": {"post": operation(
            "Answer the CONFIRM step that waits", {
                **answered, "409": error_reply("not_waiting_confirm, sequence_ended"),
            }, params=[sequence_id])},
        "/sequences/{sequence_id}/cancel": {"post": operation(
            "Cancel a sequence (a running step is STOPped)", {
                **answered, "409": error_reply("sequence_ended"),
            }, params=[sequence_id])},
        "/sequences/{sequence_id}/fixit": {"post": operation(
            "Run one command at once while the sequence stays held", {
                "202": json_reply(ref("FixitQueued"), "queued ahead of everything "
                                                      "(Location: /task/<task_id>)"),
                "404": not_found,
                "409": error_reply("sequence_not_held, sequence_ended"),
                **pick("400", "411", "413", "415", "422", "503"),
            }, params=[sequence_id], body=command_body)},
    }
