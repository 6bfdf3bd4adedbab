"""Who is asking, in the OpenAPI document (docs/security.md): the paths of /me, the user
administration and the audit trail, their component schemas, and what every operation
gains from the guard: 401, 403 and 429 replies, the `X-Reason` and `X-Request-ID`
headers.

Names and roles come from tasks/store/principals.py, so the document refuses what the
server refuses (a reserved name, a role that does not exist).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.api.admin import _SINCE
from server.api.openapi_schemas import JSON, NULLABLE_STRING, error_reply, json_reply, ref
from tasks.store.principals import KINDS, NAME, RESERVED, ROLES

Operation = Callable[..., dict[str, Any]]
UTC = {"type": "string", "description": "ISO 8601 UTC, e.g. 2026-12-06T14:02:03.123Z"}
NULLABLE_UTC = {**UTC, "type": ["string", "null"]}
AUDIT_LIMIT_MAX = 1000
REASON_MAX = 500
# The methods whose requests change something, and so take a reason (the audit row's).
_CHANGING = ("post", "delete")
_NOT_AUDITED = ("/validate",)  # checks a command, changes nothing

REQUEST_ID = {"name": "X-Request-ID", "in": "header", "required": False,
              "description": "your own id for this request: echoed in the reply's "
                             "X-Request-ID and written in its audit row (one the server "
                             "finds unfit is replaced by a generated one)",
              "schema": {"type": "string"}}
REASON = {"name": "X-Reason", "in": "header", "required": False,
          "description": "why (kept in the audit row): UTF-8, may be percent-encoded "
                         "(encodeURIComponent); trimmed, control characters removed, at "
                         f"most {REASON_MAX} characters kept. A JSON body's `reason` field "
                         "does the same. With --require-reason, resuming the queue, "
                         "cancelling another's task or sequence and recovering a sequence "
                         "need one (400 reason_required)",
          "schema": {"type": "string"}}
_REQUEST_ID_HEADER = {"description": "this request's id: the client's X-Request-ID, or one "
                                     "the server made; its audit row names it",
                      "required": True, "schema": {"type": "string"}}


def security_schemas() -> dict[str, Any]:
    """The components of /me, /admin/users and /audit."""
    user = {
        "type": "object",
        "required": ["name", "role", "kind", "created", "created_by", "revoked"],
        "properties": {"name": {"type": "string"}, "role": {"enum": list(ROLES)},
                       "kind": {"enum": list(KINDS)}, "created": UTC,
                       "created_by": {**NULLABLE_STRING, "description": "who added it"},
                       "revoked": {**NULLABLE_UTC, "description": "null while its token "
                                                                  "works"}}}
    token = {"type": "string", "minLength": 32,
             "description": "shown once: only its SHA-256 hash is stored"}

    def answer(codes: list[str], with_token: bool) -> dict[str, Any]:
        props: dict[str, Any] = {"success": {"const": True}, "code": {"enum": codes},
                                 "message": {"type": "string"}, "user": ref("User")}
        if with_token:
            props["token"] = token
        return {"type": "object", "required": list(props), "properties": props}

    entry_props: dict[str, Any] = {
        "seq": {"type": "integer", "minimum": 1}, "time": UTC,
        "principal": {"type": "string",
                      "description": "a principal's name, or admin (--api-token), "
                                     "anonymous (nothing set up), console (python main.py), "
                                     "unknown (refused: no known token)"},
        "role": {"type": "string"},
        "address": {"type": "string", "description": "the client's address; local for "
                                                     "the server PC's console"},
        "action": {"type": "string", "description": "task.submit, task.cancel, "
                   "queue.resume, user.add, auth.refused, auth.lockout, ..."},
        "target": {**NULLABLE_STRING, "description": "a task id, a sequence id, a user "
                                                     "name, queue or robot"},
        "before": NULLABLE_STRING, "after": NULLABLE_STRING,
        "reason": NULLABLE_STRING, "request_id": NULLABLE_STRING,
        "status": {"type": ["integer", "null"],
                   "description": "a refusal's HTTP status (401, 403, 429); null for a change"},
        "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                 "description": "sha256(previous row's hash + this row's canonical JSON)"}}
    return {
        "Me": {
            "type": "object",
            "required": ["name", "role", "kind", "permissions", "auth_required",
                         "require_reason"],
            "properties": {
                "name": {"type": "string"}, "role": {"enum": list(ROLES)},
                "kind": {"enum": [*KINDS, "token", "anonymous"],
                         "description": "token: the --api-token; anonymous: no principal "
                                        "and no token set up (an open server)"},
                "permissions": {"type": "array", "items": {"type": "string"},
                                "description": "what this role may do (docs/security.md)"},
                "auth_required": {"type": "boolean",
                                  "description": "false: an open server, no token needed"},
                "require_reason": {"type": "boolean",
                                   "description": "--require-reason is on"}}},
        "User": user,
        "UserList": {"type": "object", "required": ["users"],
                     "properties": {"users": {"type": "array", "items": ref("User"),
                                              "description": "never a token or a hash"}}},
        "UserToken": answer(["user_added", "token_issued"], True),
        "UserRevoked": answer(["user_revoked"], False),
        "AuditEntry": {"type": "object", "required": list(entry_props),
                       "properties": entry_props},
        "AuditPage": {"type": "object", "required": ["entries", "next_cursor"],
                      "properties": {"entries": {"type": "array", "items": ref("AuditEntry"),
                                                 "description": "newest first"},
                                     "next_cursor": {**NULLABLE_STRING,
                                                     "description": "pass as cursor for "
                                                                    "older entries"}}},
        "AuditVerify": {
            "type": "object", "required": ["ok", "rows"],
            "properties": {"ok": {"type": "boolean"}, "rows": {"type": "integer"},
                           "first_bad": {"type": "integer",
                                         "description": "the first row that does not match"},
                           "problem": {"type": "string"}}},
    }


def security_paths(operation: Operation, errors: dict[str, Any]) -> dict[str, Any]:
    """The paths of /me, /admin/users and /audit; ``errors`` are the document's common
    replies by status."""
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    not_found = error_reply("no such user, or revoked (user_not_found)")
    user_body = {"required": True, "content": {JSON: {"schema": {
        "type": "object", "required": ["name", "role"],
        "properties": {
            "name": {"type": "string", "pattern": f"^{NAME.pattern}$",
                     "not": {"enum": list(RESERVED)},
                     "description": "1-64 letters, digits and . _ @ -; not "
                                    f"{', '.join(RESERVED)} (the server's own names)"},
            "role": {"enum": list(ROLES)},
            "kind": {"enum": list(KINDS), "description": "program: a LIMS or a script; "
                                                         "absent: person"},
            "reason": {"type": ["string", "null"], "description": "as X-Reason"}}}}}}
    filters = [
        {"name": "since", "in": "query", "description": "entries at or after this time, "
         "ISO 8601 UTC as the entries' time, or a prefix of it: 2026-12-06T14:00:00Z, "
         "2026-12-06T14:00, 2026-12-06 (else 400 audit_since_invalid)",
         "schema": {"type": "string", "pattern": f"^{_SINCE.pattern}$"}},
        {"name": "principal", "in": "query", "schema": {"type": "string"}},
        {"name": "action", "in": "query", "description": "e.g. task.cancel",
         "schema": {"type": "string"}},
        {"name": "target", "in": "query", "description": "a task or sequence id, a user, "
         "queue, robot", "schema": {"type": "string"}},
    ]
    csv = "text/csv; charset=utf-8"
    return {
        "/me": {"get": operation("Who am I: the principal of this request's token", {
            "200": json_reply(ref("Me"), "name, role, kind and what it may do")})},
        "/admin/users": {
            "get": operation("The people and programs that may use the server", {
                "200": json_reply(ref("UserList"), "every principal, revoked ones too")}),
            "post": operation("Add a person or program; its token is shown once", {
                "201": json_reply(ref("UserToken"), "added (code user_added)"),
                "400": error_reply("user_invalid: a bad name, role or kind; or a body "
                                   "that is no JSON object"),
                "409": error_reply("user_exists: the name is taken (revoke it first)"),
                **{c: errors[c] for c in ("411", "413", "415")},
            }, body=user_body),
        },
        "/admin/users/{name}/token": {"post": operation(
            "A new token for a user; the old one stops working", {
                "200": json_reply(ref("UserToken"), "issued (code token_issued)"),
                "404": not_found}, params=[name])},
        "/admin/users/{name}": {"delete": operation("Revoke a user: its token stops working", {
            "200": json_reply(ref("UserRevoked"), "revoked (code user_revoked)"),
            "404": not_found}, params=[name])},
        "/audit": {"get": operation("The audit trail, newest first", {
            "200": json_reply(ref("AuditPage"), "one page"), **{c: errors[c] for c in ("400",)},
        }, params=[*filters,
                   {"name": "limit", "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": AUDIT_LIMIT_MAX,
                               "default": 100}},
                   {"name": "cursor", "in": "query",
                    "description": "next_cursor of a previous page: the entries below it",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}}])},
        "/audit.csv": {"get": operation("The audit trail as CSV (for Excel)", {
            "200": {"description": "UTF-8 with a byte-order mark, a header row of the "
                                   "entry's keys, newest first; Content-Disposition: "
                                   "attachment; filename=\"audit.csv\"",
                    "content": {csv: {"schema": {"type": "string"}}}},
            **{c: errors[c] for c in ("400",)}}, params=filters)},
        "/audit/verify": {"get": operation("Check the audit trail's hash chain", {
            "200": json_reply(ref("AuditVerify"), "ok, or the first row that does not "
                                                  "match")},
            description="Proves the rows are consistent with each other, not that nobody "
                        "with the database file rewrote them all (docs/security.md)")},
    }


def add_guard(paths: dict[str, Any]) -> None:
    """What every operation gains from the guard: 401, 403 and 429 unless it is public,
    X-Reason where it changes something, X-Request-ID on the way in and out."""
    refused = {
        "401": {**error_reply("not_authenticated: a token is needed (any principal or "
                              "--api-token set up) and none or a wrong one came"),
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"},
                                                 "description": 'Bearer realm="robot"'}}},
        "403": error_reply("forbidden: this principal's role lacks the permission the body "
                           "names; or client_not_allowed, cross_origin"),
        "429": {**error_reply("too_many_bad_tokens: 10 wrong tokens from this address "
                              "within 60 s; refused for 60 s"),
                "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
    }
    for path, item in paths.items():
        for method, op in item.items():
            if op.get("security") != []:
                op["responses"] = {**op["responses"],
                                   **{s: r for s, r in refused.items()
                                      if s not in op["responses"]}}
            params = op.setdefault("parameters", [])
            if method in _CHANGING and path not in _NOT_AUDITED:
                params.append(REASON)
            params.append(REQUEST_ID)
            op["responses"] = {
                status: {**reply, "headers": {**reply.get("headers", {}),
                                              "X-Request-ID": _REQUEST_ID_HEADER}}
                for status, reply in op["responses"].items()}
