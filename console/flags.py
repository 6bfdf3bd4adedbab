"""main.py's flags of serve, run and check (argparse): each names its ROBOT_* variable
(settings.py's FLAGS) and shows its default from the one Settings."""

from __future__ import annotations

import argparse
from typing import Any

import constants
from settings import DEFAULTS, names, networks, public_url, seconds_list


def robot_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--robot", help=f"serial port or URL, or 'sim' (default {DEFAULTS.robot})")
    p.add_argument("--baud", type=int, help=f"baud rate (default {DEFAULTS.baudrate})")
    p.add_argument("--robot-protocol", metavar="NAME",
                   help="what the robot's firmware speaks: json (this project's), text, or a "
                        "lab's own codec as package.module:ClassName (default "
                        f"{DEFAULTS.robot_protocol}; see docs/robot-adapters.md)")
    p.add_argument("--sim-speed", type=float,
                   help=f"simulator speed factor (default {DEFAULTS.sim_speed})")
    p.add_argument("--sim-transport", choices=("auto", "pty", "tcp"),
                   help="how the simulator is reached: pty, tcp (loopback socket://), or "
                        f"auto = pty where the system has them (default "
                        f"{DEFAULTS.sim_transport})")
    p.add_argument("--robot-timeout", type=float,
                   help=f"seconds of robot silence that fail a command "
                        f"(default {DEFAULTS.robot_timeout:g})")
    p.add_argument("--robot-settle", type=float, metavar="S",
                   help="robots without reply ids (text, G-code): seconds the robot must send "
                        "nothing before the server's handshake, after a STOP or a restart "
                        f"(default {DEFAULTS.robot_settle:g}; above its BUSY interval)")
    p.add_argument("--commands", metavar="FILE",
                   help="command table JSON (default: the shipped tasks/commands/commands.json); "
                        "see docs/commands.md")
    p.add_argument("--log-level", help="logging level of the console and the log file "
                   f"(default {constants.CONSOLE_LOG_LEVEL} on the console, "
                   f"{DEFAULTS.log_level} in the file)")
    p.add_argument("--log-file", help="also log to this file (rotated)")
    p.add_argument("--access-log", choices=("file", "console", "off"),
                   help="where HTTP access lines go (default: the log file; the console "
                        "too with --log-level INFO)")


def server_flags(p: argparse.ArgumentParser, *, with_mode: bool = True) -> None:
    if with_mode:
        p.add_argument("--mode", choices=("sync", "queue"), help="execution mode")
    p.add_argument("--host", help=f"listen address (default {DEFAULTS.host})")
    p.add_argument("--port", type=int, help=f"listen port (default {DEFAULTS.port})")
    p.add_argument("--db", help=f"task database file (default {DEFAULTS.db} in the "
                                "project folder; a path given here is relative to the "
                                "working directory)")
    p.add_argument("--auto-resume", action="store_true", default=None,
                   help="do not hold the queue after a fault or an interrupted task")
    p.add_argument("--require-reason", action="store_true", default=None,
                   help="resuming the queue, recovering a sequence and cancelling another "
                        "principal's task or sequence need a reason (docs/security.md)")
    p.add_argument("--max-queue", type=int,
                   help=f"most unfinished tasks accepted (default {DEFAULTS.max_queue})")
    p.add_argument("--keep-days", type=float,
                   help=f"days finished tasks are kept (default {DEFAULTS.keep_days})")
    p.add_argument("--shutdown-grace", type=float,
                   help=f"seconds the running task may finish at shutdown before STOP "
                        f"(default {DEFAULTS.shutdown_grace:g})")
    p.add_argument("--api-token",
                   help="require this token (Authorization: Bearer or X-API-Key) on every "
                        "endpoint but /health; default: env ROBOT_API_TOKEN")
    p.add_argument("--allow", type=_networks, metavar="CIDR,...",
                   help="only these client networks may connect, e.g. 172.16.11.0/24,127.0.0.1")
    p.add_argument("--allowed-host", type=names, metavar="NAME,...",
                   help="DNS names clients may use for this server (IP addresses, localhost "
                        "and the hostname always work)")
    p.add_argument("--trusted-proxy", type=_networks, metavar="CIDR,...",
                   help="reverse proxies whose X-Forwarded-For/-Host/-Proto count (default "
                        f"this machine: {','.join(DEFAULTS.trusted_proxies)}; '' trusts none); "
                        "see docs/deploy.md")
    p.add_argument("--cors-origin", metavar="ORIGIN",
                   help="one other web origin allowed to call the API from a browser, "
                        "e.g. http://lims.lab:8080")
    p.add_argument("--max-connections", type=int,
                   help="ordinary connections served at once; beyond: 503 (default "
                        f"{DEFAULTS.max_connections})")
    p.add_argument("--webhook-allow", type=names, metavar="HOST,CIDR,...",
                   help="where webhooks may be delivered (default the private and loopback "
                        "networks; link-local never); see docs/webhooks.md")
    p.add_argument("--webhook-retry", type=_parsed(seconds_list), metavar="S,...",
                   help="seconds between a webhook's attempts (default "
                        f"{','.join(f'{s:g}' for s in DEFAULTS.webhook_retry)})")
    p.add_argument("--public-url", type=_parsed(public_url), metavar="URL",
                   help="this server's URL as other systems reach it (the `url` in webhook "
                        "events, e.g. behind nginx); default this PC's LAN address")
    # Text as given: settings.py checks it, so a refusal is one line saying why.
    p.add_argument("--name", metavar="NAME",
                   help="this server's name in /health, /robot, /metrics, the banner and the "
                        "dashboard's title, 1-64 characters (default the host name)")
    p.add_argument("--labels", metavar="KEY=VALUE,...",
                   help="more of its identity beside the name, e.g. room=B204,model=XYZ "
                        "(keys as Prometheus label names; not `name`)")


def _networks(text: str) -> tuple[str, ...]:
    try:
        return networks(text)  # settings.py's, which parses ROBOT_ALLOW too
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parsed(parse: Any) -> Any:
    def checked(text: str) -> Any:
        try:
            return parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value: {text!r}") from None
    return checked
