"""Where webhooks may go: `--webhook-allow` (host names and networks), checked when a
subscription is made and again before every delivery, because DNS may change. The
request then goes to the address that was checked, never to a second lookup's."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from server.errors import ApiError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Never, whatever the list says: link-local holds the clouds' metadata service
# (169.254.169.254), and nothing listens on an unspecified or multicast address.
NEVER = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16", "fe80::/10", "0.0.0.0/8", "::/128", "224.0.0.0/4", "ff00::/8",
    "255.255.255.255/32"))


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and what to ask for."""
    scheme: str
    host: str
    port: int
    path: str
    address: str


class Refused(ApiError):
    """A URL that may not be used: ``webhook_url_invalid`` or ``webhook_url_refused``
    (422 at subscription; a delivery's error text at delivery)."""

    def __init__(self, code: str, **params: object) -> None:
        super().__init__(code, 422, params={k: str(v) for k, v in params.items()},
                         extra={"field": "url"})


def _address(text: str) -> Address:
    address = ipaddress.ip_address(text.split("%", 1)[0])  # a zone id is not an address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class AllowList:
    def __init__(self, entries: tuple[str, ...],
                 resolve: Callable[[str, int], list[str]] | None = None) -> None:
        self.networks: list[Network] = []
        self.names: set[str] = set()
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(entry.lower().rstrip("."))
        self._resolve = resolve or _resolve

    def allows(self, host: str, address: Address) -> bool:
        if any(address in net for net in NEVER if net.version == address.version):
            return False
        if host.lower().rstrip(".") in self.names:
            return True
        return any(address in net for net in self.networks if net.version == address.version)

    def check(self, url: str) -> Target:
        """The URL's target, every address its host resolves to allowed; else Refused."""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise Refused("webhook_url_invalid", url=url[:200]) from None
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host or parts.username is not None \
                or parts.password is not None or len(url) > 2000:
            raise Refused("webhook_url_invalid", url=url[:200])
        try:
            addresses = [_address(a) for a in self._resolve(host, port)]
        except (OSError, ValueError, UnicodeError):
            raise Refused("webhook_url_refused", host=host, address="?") from None
        if not addresses:
            raise Refused("webhook_url_refused", host=host, address="?")
        for address in addresses:
            if not self.allows(host, address):
                raise Refused("webhook_url_refused", host=host, address=address)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return Target(parts.scheme, host, port, path, str(addresses[0]))


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen
