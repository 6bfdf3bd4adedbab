"""What a trusted reverse proxy says about the request it passes on (X-Forwarded-*).

Anyone can send these headers, so they count only when the TCP peer is one of the
proxies named by --trusted-proxy (default: this machine). They then give the real
client's address (for the access log and --allow), the name the browser used (for
the Host check) and its scheme (for the same-origin test).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_ip(address: str) -> Address | None:
    """An address as a client has it; IPv4 clients of a dual-stack socket as IPv4."""
    try:
        ip = ipaddress.ip_address(address.strip().split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def in_networks(address: str, networks: tuple[Network, ...]) -> bool:
    """Whether a client address (as the socket reports it) is inside one of `networks`."""
    return _in(client_ip(address), networks)


def _in(ip: Address | None, networks: tuple[Network, ...]) -> bool:
    return ip is not None and any(ip in net for net in networks)


@dataclass(frozen=True)
class Forwarded:
    client: str  # the address --allow checks and the log shows
    peer: str  # who connected: the client itself, or the proxy
    host: str | None  # X-Forwarded-Host from a trusted proxy, else None (use Host)
    proto: str | None  # "http"/"https" from a trusted proxy, else None

    @property
    def via_proxy(self) -> bool:
        return self.client != self.peer


def _first(value: str | None) -> str | None:
    if not value:
        return None
    first = value.split(",")[0].strip()
    return first or None


def forwarded(peer: str, headers: Any, trusted: tuple[Network, ...]) -> Forwarded:
    """The request as the trusted proxy saw it, or as it came when the peer is not one."""
    if not in_networks(peer, trusted):
        return Forwarded(peer, peer, None, None)
    client = peer
    hops = [h.strip() for v in headers.get_all("X-Forwarded-For") or [] for h in v.split(",")]
    # Right to left: each trusted proxy appended the address it saw; the first one not
    # ours is the client. Anything left of it was written by the client and proves nothing.
    for hop in reversed(hops):
        ip = client_ip(hop)
        if ip is None:
            break  # a malformed entry: trust nothing beyond it
        client = str(ip)
        if not _in(ip, trusted):
            break
    proto = (_first(headers.get("X-Forwarded-Proto")) or "").lower()
    return Forwarded(client, peer, _first(headers.get("X-Forwarded-Host")),
                     proto if proto in ("http", "https") else None)
