"""Standard Webhooks signatures (https://www.standardwebhooks.com/): the secret is
``whsec_`` and base64 of random bytes; the signature ``v1,`` and base64 of
HMAC-SHA256 over ``<webhook-id>.<webhook-timestamp>.<body>`` with the decoded secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _key(secret: str) -> bytes:
    return base64.b64decode(secret[len(PREFIX):] if secret.startswith(PREFIX) else secret)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header's value."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify(secret: str, msg_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """Does any ``v1`` signature of ``header`` (space-separated) match? (tests, docs)"""
    expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1]
    return any(part.startswith("v1,") and hmac.compare_digest(part[3:], expected)
               for part in header.split())
