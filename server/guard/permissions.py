"""Roles and what each may do (docs/security.md). Every route declares one permission
(server/api/routes.py); `public` needs no token at all."""

from __future__ import annotations

ROLES = ("viewer", "operator", "admin")
PUBLIC = "public"
# In the order docs/security.md lists them, with what each covers.
PERMISSIONS: dict[str, str] = {
    "read": "read every task, sequence, the queue, the robot, events, metrics",
    "stop": "press the emergency stop (stopping is always safe)",
    "submit": "submit tasks and sequences; retry their own tasks",
    "cancel": "cancel their own tasks and sequences",
    "queue": "pause and resume the queue",
    "sequence": "confirm, recover and fix a held sequence",
    "others": "act on another principal's tasks and sequences",
    "users": "manage principals and their tokens",
    "audit": "read, export and verify the audit trail",
    "webhooks": "manage webhook subscriptions; read, replay and test their deliveries",
}
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read", "stop"}),
    "operator": frozenset({"read", "stop", "submit", "cancel", "queue", "sequence"}),
    "admin": frozenset(PERMISSIONS),
}


def allowed(role: str, permission: str) -> bool:
    """May ``role`` do what ``permission`` covers? `public` is anyone's."""
    return permission == PUBLIC or permission in ROLE_PERMISSIONS.get(role, frozenset())


def permissions_of(role: str) -> list[str]:
    return [p for p in PERMISSIONS if p in ROLE_PERMISSIONS.get(role, frozenset())]
