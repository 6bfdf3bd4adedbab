"""Route functions of who is asking, the principals and the audit trail
(docs/security.md): GET /me, /admin/users, /audit, /audit.csv and /audit/verify."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from server.api.routing import Request, Response
from server.errors import ApiError
from server.guard.permissions import permissions_of
from tasks.store.audit import FIELDS

# ?since= is compared with the stored ISO 8601 UTC text: a prefix of that form
# ("2026-12-06", "2026-12-06T14:02") compares as the time it names.
_SINCE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}(:\d{2}(:\d{2}(\.\d{1,3})?)?)?Z?)?")


def me(req: Request) -> Response:
    who = req.principal
    return Response(200, {"name": who.name, "role": who.role, "kind": who.kind,
                          "permissions": permissions_of(who.role),
                          "auth_required": req.app.identity.auth_required(),
                          "require_reason": req.app.settings.require_reason})


# -- principals ------------------------------------------------------------------------
def list_users(req: Request) -> Response:
    return Response(200, {"users": [p.to_dict() for p in req.app.identity.principals.list()]})


def add_user(req: Request) -> Response:
    body = req.framed_json()
    name, role = body.get("name"), body.get("role")
    kind = body.get("kind", "person")
    if not (isinstance(name, str) and isinstance(role, str) and isinstance(kind, str)):
        raise ApiError("user_invalid", 400, params={"name": repr(str(name)[:64])})
    row, token = req.app.identity.principals.add(name, role, kind,
                                                 audit=req.audit("user.add"))
    req.app.identity.invalidate()
    return Response(201, {"success": True, "code": "user_added",
                          "message": req.t("info.user_added", name=row.name),
                          "user": row.to_dict(), "token": token},
                    {"Location": "/admin/users"}, log_note=f"user {row.name} {row.role} added")


def issue_token(req: Request) -> Response:
    row, token = req.app.identity.principals.issue_token(req.params["name"],
                                                         audit=req.audit("user.token"))
    req.app.identity.invalidate()
    return Response(200, {"success": True, "code": "token_issued",
                          "message": req.t("info.token_issued", name=row.name),
                          "user": row.to_dict(), "token": token},
                    log_note=f"user {row.name} new token")


def revoke_user(req: Request) -> Response:
    row = req.app.identity.principals.revoke(req.params["name"],
                                             audit=req.audit("user.revoke"))
    req.app.identity.invalidate()
    return Response(200, {"success": True, "code": "user_revoked",
                          "message": req.t("info.user_revoked", name=row.name),
                          "user": row.to_dict()}, log_note=f"user {row.name} revoked")


# -- the audit trail -------------------------------------------------------------------
def _filters(req: Request) -> dict[str, Any]:
    since = req.query.get("since")
    if since is not None and not _SINCE.fullmatch(since):
        raise ApiError("audit_since_invalid", 400, params={"since": repr(since[:40])})
    return {"since": since.rstrip("Z") if since else None,
            "principal": req.query.get("principal") or None,
            "action": req.query.get("action") or None,
            "target": req.query.get("target") or None}


def audit_page(req: Request) -> Response:
    filters = _filters(req)
    limit = req.query_int("limit", default=100, low=1, high=1000)
    cursor = req.query.get("cursor")
    if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) < 19):
        raise ApiError("invalid_cursor", 400)
    entries = req.app.manager.store.audit_page(
        limit=limit, before_seq=None if cursor is None else int(cursor), **filters)
    last = entries[-1]["seq"] if len(entries) == limit else None
    return Response(200, {"entries": entries,
                          "next_cursor": None if last is None else str(last)})


def audit_csv(req: Request) -> Response:
    out = io.StringIO()
    out.write("\ufeff")  # the BOM: Excel then reads UTF-8 (Chinese reasons intact)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow((*FIELDS, "hash"))
    for row in req.app.manager.store.audit_rows(**_filters(req)):
        writer.writerow(["" if v is None else v for v in row])
    return Response(200, out.getvalue().encode("utf-8"),
                    {"Content-Disposition": 'attachment; filename="audit.csv"'},
                    content_type="text/csv; charset=utf-8")


def audit_verify(req: Request) -> Response:
    return Response(200, req.app.manager.store.audit_verify().to_dict())


def add_routes(r: Any) -> None:
    r.add("GET", "/me", me, "read")
    r.add("GET", "/admin/users", list_users, "users")
    r.add("POST", "/admin/users", add_user, "users")
    r.add("POST", "/admin/users/<name>/token", issue_token, "users")
    r.add("DELETE", "/admin/users/<name>", revoke_user, "users")
    r.add("GET", "/audit", audit_page, "audit")
    r.add("GET", "/audit.csv", audit_csv, "audit")
    r.add("GET", "/audit/verify", audit_verify, "audit")
