"""Who may talk to this server: client networks (--allow), trusted proxies, the Host
header and the Origin of a browser's request.

The handler (server/http.py) asks these questions in this order: client, Host,
Origin; then who the client is and what it may do (server/guard/identity.py). Each
check either passes silently or raises the ApiError the client gets. What is fixed for
the server's life (networks, names) is worked out once; --cors-origin is read from the
settings per request, as before.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from server.api.routing import Response
from server.errors import ApiError
from server.guard import crosssite
from server.guard.forwarded import Forwarded, Network, forwarded, in_networks
from settings import Settings

CORS_ALLOW_HEADERS = ("Authorization, Content-Type, X-API-Key, Idempotency-Key, Last-Event-ID, "
                      "X-Requested-With, X-Reason, X-Request-ID")
CORS_EXPOSE_HEADERS = "Location, Retry-After, Idempotent-Replayed, X-Request-ID"
_MAX_HOST_VERDICTS = 256  # bounded: Host is client-controlled


def parse_networks(spec: Any) -> tuple[Network, ...]:
    """'10.0.0.0/8,127.0.0.1' (or a sequence of such) -> networks; ValueError if malformed."""
    items = spec.split(",") if isinstance(spec, str) else list(spec or ())
    return tuple(ipaddress.ip_network(item.strip(), strict=False)
                 for item in items if item.strip())


@dataclass(frozen=True, slots=True)
class Peer:
    """What is known of a connection's TCP peer when it connects (once, not per request)."""

    direct: Forwarded  # the request as it came: client == peer
    trusted_proxy: bool  # its X-Forwarded-* count; the client is known per request
    allowed: bool  # --allow admits it (a trusted proxy: decided per request)


class Access:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.networks = parse_networks(settings.allow)
        self.trusted = parse_networks(settings.trusted_proxies)
        hostname = socket.gethostname().lower()
        # Names a browser may use for us; anything else (an attacker's DNS name
        # pointing here: DNS rebinding) is refused. IP literals are always fine.
        self.host_names = {"localhost", hostname, hostname.split(".")[0],
                           *(h.strip().lower().rstrip(".") for h in settings.allowed_hosts
                             if h.strip())}
        self._host_verdicts: dict[str, bool] = {}

    # -- the client -------------------------------------------------------------------
    def client_allowed(self, address: str) -> bool:
        return not self.networks or in_networks(address, self.networks)

    def is_trusted_proxy(self, address: str) -> bool:
        return in_networks(address, self.trusted)

    def forwarded(self, peer: str, headers: Any) -> Forwarded:
        return forwarded(peer, headers, self.trusted)

    def peer(self, address: str) -> Peer:
        behind_proxy = self.is_trusted_proxy(address)
        return Peer(Forwarded(address, address, None, None), behind_proxy,
                    behind_proxy or self.client_allowed(address))

    def client(self, peer: Peer, headers: Any) -> Forwarded:
        """The request as its client made it: what a trusted proxy says, else as it came.
        Without X-Forwarded-* a trusted proxy's request is its own (as forwarded())."""
        if peer.trusted_proxy and ("X-Forwarded-For" in headers
                                   or "X-Forwarded-Host" in headers
                                   or "X-Forwarded-Proto" in headers):
            return self.forwarded(peer.direct.peer, headers)
        return peer.direct

    def check_client(self, peer: Peer, fwd: Forwarded) -> None:
        if not peer.allowed or (peer.trusted_proxy and not self.client_allowed(fwd.client)):
            raise ApiError("client_not_allowed", 403, close=True)

    # -- the Host header --------------------------------------------------------------
    def check_host(self, headers: Any, version: str, fwd: Forwarded, *,
                   check_name: bool = True) -> None:
        hosts = headers.get_all("Host") or []
        if len(hosts) > 1:
            raise ApiError("duplicate_host", 400, close=True)
        if not hosts:
            if version == "HTTP/1.1":
                raise ApiError("missing_host", 400, close=True)
            return
        # Behind a trusted proxy, the name the browser used is the one to check.
        host = fwd.host or hosts[0]
        if check_name and not self.host_allowed(host):
            raise ApiError("host_not_allowed", 421, close=True,
                           params={"host": repr(host[:100])})

    def host_allowed(self, host: str) -> bool:
        """Host header check (memoised: a server sees few distinct Host values)."""
        known = self._host_verdicts.get(host)
        if known is None:
            known = self._host_allowed(host)
            if len(self._host_verdicts) < _MAX_HOST_VERDICTS:
                self._host_verdicts[host] = known
        return known

    def _host_allowed(self, host: str) -> bool:
        """An IP literal, or a name this server knows it has."""
        host = host.strip()
        if host.startswith("["):
            end = host.find("]")
            rest = host[end + 1:]
            if end < 0 or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
                return False
            try:
                ipaddress.IPv6Address(host[1:end])
            except ValueError:
                return False
            return True
        name, sep, port = host.rpartition(":")
        if not sep:
            name = host
        elif not (port.isascii() and port.isdigit()):
            return False
        name = name.lower().rstrip(".")
        try:
            ipaddress.IPv4Address(name)
            return True
        except ValueError:
            return name in self.host_names

    # -- the Origin of a browser's request --------------------------------------------
    def check_origin(self, method: str, headers: Any, fwd: Forwarded) -> dict[str, str] | None:
        """Refuse what a page on another site could make a browser send unasked
        (server/guard/crosssite.py). For the --cors-origin site: the CORS headers its
        replies carry; else None."""
        origin = headers.get("Origin")
        if origin is None:
            return None  # not a browser's cross-site request (curl, requests, scripts)
        allowed = crosssite.normalize_origin(self.settings.cors_origin or "")
        if allowed and crosssite.normalize_origin(origin) == allowed:
            return {"Access-Control-Allow-Origin": origin.strip(),
                    "Access-Control-Expose-Headers": CORS_EXPOSE_HEADERS,
                    "Vary": "Origin"}
        host = fwd.host or headers.get("Host")
        if crosssite.is_same_origin(origin, host, fwd.proto, headers):
            return None  # the dashboard, directly or through a proxy that keeps the name
        if crosssite.refuse_foreign(method, headers):
            raise ApiError("cross_origin", 403, close=True,
                           params={"origin": repr(origin[:100])})
        return None

    @staticmethod
    def preflight() -> Response:
        """The answer to the --cors-origin site's preflight."""
        return Response(204, b"", {"Access-Control-Allow-Methods": "GET, POST, DELETE",
                                   "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                                   "Access-Control-Max-Age": "600"})
