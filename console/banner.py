"""The start-up banner of `main.py serve`: in Chinese the user guide's lines, word for word.

    ✓ 任务队列模式已启用              ✓ Queue mode enabled
      - 多个命令会排队执行              - commands are queued and run one after another
      ...                               ...
    ✓ HTTP服务器已启动                ✓ HTTP server started
    监听地址: 0.0.0.0:8090 (所有网络接口)
    本机IP: 172.16.11.130
    模式: 队列模式
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from typing import Any

from i18n import Translator

MODE_KEYS = {"queue": "banner.mode_queue", "sync": "banner.mode_sync"}


def print_banner(server: Any, lang: str = "en") -> None:
    from console.terminal import can_encode

    tr = Translator(lang)
    s = server.settings
    lines: list[str] = []
    host, port = server.address
    ip = lan_ip()
    tick = "✓" if can_encode("✓") else "OK"  # GBK and ASCII consoles have no check mark
    if s.mode == "queue":
        lines.append(tr("banner.queue_enabled", tick=tick))
    else:
        lines.append(tr("banner.sync_enabled", tick=tick))
    where = {"0.0.0.0": tr("banner.all_interfaces"),
             "::": tr("banner.all_interfaces_dual")}.get(host, "")
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines.append("\n" + tr("banner.http_started", tick=tick))
    lines.append(tr("banner.listening", address=address, where=where))
    lines.append(tr("banner.lan_ip", ip=ip))
    lines.append(tr(MODE_KEYS.get(s.mode, "banner.mode_queue")))
    lines.append(identity_line(s, tr))  # after the guide's lines: which robot PC this is
    lines.append(tr("banner.robot_port", port=server.robot_port)
                 + (tr("banner.simulator") if s.robot == "sim" else ""))
    lines.append(tr("banner.robot_protocol", protocol=s.robot_protocol))
    lines.append(tr("banner.database", path=os.path.abspath(s.db)))
    table = server.commands
    if table is not None:  # which --commands file the server reads, so a lab can tell
        lines.append(tr("banner.commands", path=os.path.abspath(table.source or "?"),
                        count=len(table),
                        shipped=tr("banner.commands_shipped") if s.commands_file is None
                        else ""))
    robot = server.link.info() if server.link is not None else {}
    if not robot.get("ready"):
        lines.append(tr("banner.robot_not_ready",
                        error=robot.get("error") or tr("banner.robot_connecting")))
    if s.api_token:
        # Never the token itself: banners end up in journals and screenshots.
        hint = f" (…{s.api_token[-4:]})" if len(s.api_token) >= 16 else ""
        lines.append(tr("banner.token_set", hint=hint))
    active, any_principal = principals(server)
    if any_principal:  # tokens are needed: say how many may be used, never "open to all"
        lines.append(tr("banner.principals", count=active))
    elif not s.api_token and not _loopback(host):
        lines.append("\n" + tr("banner.no_token", address=address))
    if s.allow:
        lines.append(tr("banner.allowed", networks=", ".join(s.allow)))
    if server.interrupted:
        lines.append("\n" + tr("banner.interrupted", tasks=", ".join(server.interrupted)))
    if server.manager.paused:
        lines.append(tr("banner.queue_held", reason=server.manager.pause_reason,
                        url=resume_base(host, port, ip)))
    mode = server.manager.state.mode
    if mode.mode != "open":  # draining or in maintenance: no new work is taken
        key = "banner.draining" if mode.mode == "draining" else "banner.maintenance"
        lines.append(tr(key, reason=mode.reason or "", url=resume_base(host, port, ip)))
    # One write: log lines from other threads cannot cut into the banner.
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def identity_line(settings: Any, tr: Translator) -> str:
    """Which robot PC this is: "Name: scanner-2 (room=B204, model=XYZ)"."""
    if not settings.labels:
        return tr("banner.identity", name=settings.device_name)
    return tr("banner.identity_labels", name=settings.device_name,
              labels=", ".join(f"{key}={value}" for key, value in settings.labels))


def principals(server: Any) -> tuple[int, bool]:
    """(principals whose token works, whether any was ever made: then every client
    needs a token) from the server's task database (docs/security.md)."""
    identity = getattr(getattr(server, "app", None), "identity", None)
    if identity is None:
        return 0, False
    tokens, any_principal = identity.principals.tokens()
    return len(tokens), any_principal


def resume_base(host: str, port: int, lan: str) -> str:
    """The URL the banner's resume hint points at: the address the server listens on
    (a server on 127.0.0.1 refuses its LAN address); only a wildcard listener, which
    answers on every interface, is shown at its LAN address."""
    if host in ("0.0.0.0", "::", ""):
        host = lan
    if ":" in host:  # an IPv6 literal, its zone (fe80::1%eth0) escaped as RFC 6874 says
        return f"http://[{host.replace('%', '%25')}]:{port}"
    return f"http://{host}:{port}"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def lan_ip() -> str:
    """This machine's LAN address for the banner (no packets are sent): what the
    hostname resolves to, else the first non-loopback interface address (Linux)."""
    try:
        for *_, sockaddr in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            if not str(sockaddr[0]).startswith("127."):
                return str(sockaddr[0])
    except OSError:
        pass  # no resolvable hostname: ask the interfaces below
    for address in _interface_addresses():
        if not address.startswith("127."):
            return address
    return "127.0.0.1"


def _interface_addresses() -> list[str]:
    try:
        import fcntl
        import struct
    except ImportError:  # not POSIX
        return []
    siocgifaddr = 0x8915  # Linux ioctl: an interface's IPv4 address
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(sock.fileno(), siocgifaddr,
                                     struct.pack("256s", name[:15].encode()))
            except OSError:
                continue  # interface without an IPv4 address
            found.append(socket.inet_ntoa(packed[20:24]))
    return found
