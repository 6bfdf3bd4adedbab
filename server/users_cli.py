"""`python main.py users ...` and `python main.py audit verify`: the server PC's command
line for principals and the audit trail (docs/security.md).

They open the task database as a second connection, as SQLite's WAL mode allows, and
never take the server's instance lock (tasks/store/instance_lock.py): they work while the
server runs, and a running server sees a change within a second (its principals cache,
server/guard/identity.py). Each change is audited as principal `console` (role admin)
from address `local`, in the change's own transaction (tasks/store/principals.py).

A new token is the only line on standard output (``TOKEN=$(python main.py users add ...)``);
what it is and that it will not be shown again go to standard error.
"""

from __future__ import annotations

import argparse
import os
import sys
import unicodedata
from typing import TYPE_CHECKING, Any

import i18n
from i18n import Translator, error_text
from server.guard.permissions import ROLES
from settings import DEFAULTS

if TYPE_CHECKING:
    from tasks.store import TaskStore
    from tasks.store.audit import AuditEntry

COMMANDS = ("users", "audit")
KINDS = ("person", "program")  # tasks/store/principals.py's (imported lazily: start-up time)
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# The columns of `users list`: GET /admin/users's fields, and their titles.
_COLUMNS = {"name": "users.col_name", "role": "users.col_role", "kind": "users.col_kind",
            "created": "users.col_created", "created_by": "users.col_created_by",
            "revoked": "users.col_revoked"}


# -- flags ------------------------------------------------------------------------------
def add_parsers(sub: Any, tr: Translator) -> None:
    """Add `users` (add, list, revoke, token) and `audit` (verify) to main.py's
    subparsers. SUPPRESS: a --db or --lang given before the command keeps its value."""
    users = sub.add_parser("users", help=tr("args.users"), description=tr("args.users"))
    actions = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = _leaf(actions, "add", tr("args.users_add"))
    add.add_argument("name", help="1-64 letters, digits or . _ @ -")
    add.add_argument("--role", choices=ROLES, required=True, help="what the principal may do")
    add.add_argument("--kind", choices=KINDS, help="a person (default) or a program")
    _leaf(actions, "list", tr("args.users_list"))
    for action, help_key in (("revoke", "args.users_revoke"), ("token", "args.users_token")):
        _leaf(actions, action, tr(help_key)).add_argument("name")
    audit = sub.add_parser("audit", help=tr("args.audit"), description=tr("args.audit"))
    checks = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    _leaf(checks, "verify", tr("args.audit_verify"))


def _leaf(actions: Any, name: str, text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = actions.add_parser(
        name, help=text, description=text, argument_default=argparse.SUPPRESS)
    p.add_argument("--db", help=f"the server's task database file (default {DEFAULTS.db} "
                                "in the project folder; env ROBOT_DB)")
    p.add_argument("--lang", choices=i18n.LANGS, help="zh or en")  # as console/text.py's
    p.set_defaults(usage_error=p.error)
    return p


# -- commands ---------------------------------------------------------------------------
def run(args: argparse.Namespace, db: str) -> int:
    """One `users` or `audit` command on the database ``db`` (a full path); its exit code."""
    tr = Translator(args.console_lang)
    if args.command == "audit":
        return verify(db, tr)
    action = args.users_command
    if action == "add" and not _valid_name(args.name):
        args.usage_error(_invalid(args.name, tr))  # exits 2, as argparse does
    store = _open(db, tr, create=action == "add")
    if store is None:
        return EXIT_FAILED
    try:
        if action == "list":
            return list_users(store, tr)
        return _change(store, action, args, tr)
    finally:
        store.close()


def _change(store: TaskStore, action: str, args: argparse.Namespace, tr: Translator) -> int:
    from tasks.errors import TaskError
    from tasks.store.principals import PrincipalStore

    principals = PrincipalStore(store)
    try:
        if action == "add":
            row, token = principals.add(args.name, args.role, getattr(args, "kind", "person"),
                                        audit=_audit("user.add"))
            _note(tr("users.added", name=row.name, role=row.role, kind=row.kind,
                     path=store.path))
        elif action == "token":
            row, token = principals.issue_token(args.name, audit=_audit("user.token"))
            _note(tr("users.token_issued", name=row.name))
        else:
            row = principals.revoke(args.name, audit=_audit("user.revoke"))
            print(tr("users.revoked", name=row.name), flush=True)
            return EXIT_OK
    except TaskError as exc:  # PrincipalError (user_exists, user_not_found), a failed write
        if getattr(exc, "code", None) == "user_invalid":
            args.usage_error(exc.text(tr.lang))
        _note(error_text(exc, tr.lang))
        return EXIT_FAILED
    print(token, flush=True)
    _note(tr("users.token_once", name=row.name))
    return EXIT_OK


def list_users(store: TaskStore, tr: Translator) -> int:
    from tasks.store.principals import PrincipalStore

    rows = [row.to_dict() for row in PrincipalStore(store).list()]
    if not rows:
        print(tr("users.none"), flush=True)
        return EXIT_OK
    titles = [tr(key) for key in _COLUMNS.values()]
    cells = [[str(row[c]) if row[c] is not None else "-" for c in _COLUMNS] for row in rows]
    widths = [max(_width(line[i]) for line in [titles, *cells]) for i in range(len(_COLUMNS))]
    for line in [titles, *cells]:
        print("  ".join(_pad(cell, w) for cell, w in zip(line, widths, strict=True)).rstrip())
    sys.stdout.flush()
    return EXIT_OK


def verify(db: str, tr: Translator) -> int:
    """Recompute the audit trail's hash chain: ``ok: N rows`` (0) or its first bad row (1)."""
    store = _open(db, tr)
    if store is None:
        return EXIT_FAILED
    try:
        result = store.audit_verify()
    finally:
        store.close()
    if result.ok:
        print(tr("users.verify_ok", rows=result.rows), flush=True)
        return EXIT_OK
    # tasks/store/audit.py's verify stops at the first row that is not the next seq (a
    # row is missing before it) or whose hash does not match; ``rows`` counts it.
    if result.first_bad != result.rows:
        problem = tr("users.row_missing", missing=result.rows)
    else:
        problem = tr("users.row_altered")
    print(tr("users.verify_bad", seq=result.first_bad, problem=problem), flush=True)
    return EXIT_FAILED


# -- helpers ----------------------------------------------------------------------------
def _open(db: str, tr: Translator, *, create: bool = False) -> TaskStore | None:
    """The task database, opened as the server opens it (WAL; no instance lock); None
    after saying why not. Only `users add` creates a missing one (set up before the
    first start): a mistyped --db must not leave an empty database behind."""
    from tasks.errors import StoreError
    from tasks.store import TaskStore

    if not create and not os.path.isfile(db):
        _note(tr("users.no_database", path=db))
        return None
    store = TaskStore(db)
    try:
        store.open()
    except StoreError as exc:
        _note(tr("users.cannot_open", error=error_text(exc, tr.lang)))
        return None
    return store


def _audit(action: str) -> AuditEntry:
    from tasks.store.audit import AuditEntry

    return AuditEntry(principal="console", role="admin", address="local", action=action)


def _valid_name(name: str) -> bool:
    from tasks.store.principals import NAME, RESERVED

    return bool(NAME.fullmatch(name)) and name not in RESERVED


def _invalid(name: str, tr: Translator) -> str:
    from tasks.store.principals import PrincipalError

    return PrincipalError(code="user_invalid", name=repr(name[:64])).text(tr.lang)


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _width(text: str) -> int:
    """Display columns: a Chinese character takes two (as console/text.py's pad)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))
