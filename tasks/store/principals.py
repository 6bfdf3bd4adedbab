"""The people and programs that may use the server (docs/security.md), in the task
database. Only a SHA-256 hash of each token is stored: a token is 43 random URL-safe
characters (256 bits), so a plain hash is enough (no password stretching needed).
Each change is committed with its audit row (tasks/store/audit.py)."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks.errors import TaskError
from tasks.store.audit import AuditEntry, utc_iso
from tasks.store.taskstore import TaskStore

ROLES = ("viewer", "operator", "admin")
KINDS = ("person", "program")
NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
# Names the server itself uses in the audit trail: never a principal's.
RESERVED = ("anonymous", "admin", "console")


class PrincipalError(TaskError):
    """user_exists, user_not_found, user_invalid."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class PrincipalRow:
    name: str
    role: str
    kind: str
    created: float
    created_by: str | None
    revoked: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "kind": self.kind,
                "created": utc_iso(self.created), "created_by": self.created_by,
                "revoked": None if self.revoked is None else utc_iso(self.revoked)}


_COLUMNS = "name, role, kind, created, created_by, revoked"


class PrincipalStore:
    """Principals' reads and writes over the task store's connections."""

    def __init__(self, store: TaskStore, *, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.wall = wall

    def check(self, name: str, role: str, kind: str) -> None:
        if not isinstance(name, str) or not NAME.fullmatch(name) or name in RESERVED:
            raise PrincipalError(code="user_invalid", name=repr(str(name)[:64]))
        if role not in ROLES or kind not in KINDS:
            raise PrincipalError(code="user_invalid", name=name)

    def add(self, name: str, role: str, kind: str, *,
            audit: AuditEntry) -> tuple[PrincipalRow, str]:
        """A new principal and its token (shown once). A revoked name may be added again."""
        self.check(name, role, kind)
        token = new_token()
        now = self.wall()
        audit.target, audit.after = name, role
        with self.store._transaction() as conn:
            row = conn.execute("SELECT revoked, role FROM principals WHERE name = ?",
                               (name,)).fetchone()
            if row is not None and row[0] is None:
                raise PrincipalError(code="user_exists", name=name)
            audit.before = None if row is None else "revoked"
            conn.execute("INSERT OR REPLACE INTO principals(name, role, kind, token_hash, "
                         "created, created_by, revoked) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                         (name, role, kind, token_hash(token), now, audit.principal))
            audit.statement()(conn)
        return PrincipalRow(name, role, kind, now, audit.principal, None), token

    def issue_token(self, name: str, *, audit: AuditEntry) -> tuple[PrincipalRow, str]:
        """A replacement token: the old one stops working in the same commit."""
        token = new_token()
        audit.target = name
        with self.store._transaction() as conn:
            row = self._active(conn, name)
            audit.before = audit.after = row.role
            conn.execute("UPDATE principals SET token_hash = ? WHERE name = ?",
                         (token_hash(token), name))
            audit.statement()(conn)
        return row, token

    def revoke(self, name: str, *, audit: AuditEntry) -> PrincipalRow:
        now = self.wall()
        audit.target = name
        with self.store._transaction() as conn:
            row = self._active(conn, name)
            audit.before, audit.after = row.role, "revoked"
            conn.execute("UPDATE principals SET token_hash = NULL, revoked = ? WHERE name = ?",
                         (now, name))
            audit.statement()(conn)
        return PrincipalRow(row.name, row.role, row.kind, row.created, row.created_by, now)

    def _active(self, conn: Any, name: str) -> PrincipalRow:
        row = conn.execute(f"SELECT {_COLUMNS} FROM principals WHERE name = ?",
                           (name,)).fetchone()
        if row is None or row[5] is not None:
            raise PrincipalError(code="user_not_found", name=str(name)[:64])
        return PrincipalRow(*row)

    # -- reads -------------------------------------------------------------------------
    def list(self) -> list[PrincipalRow]:
        with self.store._reader() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM principals ORDER BY name").fetchall()
        return [PrincipalRow(*r) for r in rows]

    def tokens(self) -> tuple[dict[str, PrincipalRow], bool]:
        """(token hash -> principal, of every principal not revoked; whether any
        principal was ever made). A lab that revoked everyone stays closed."""
        with self.store._reader() as conn:
            rows = conn.execute(f"SELECT token_hash, {_COLUMNS} FROM principals").fetchall()
        return ({r[0]: PrincipalRow(*r[1:]) for r in rows if r[0] and r[6] is None},
                bool(rows))
