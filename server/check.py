"""`python main.py check`: validate what `serve` would use (listen port, task database,
command table, robot link), one line per check and one line on failure.

It is given the Settings that `serve` would get (main.py: the flags over the defaults)
and answers with a bool; the exit code is the CLI's (client/cli.py).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import sys
from typing import Any

import i18n
from i18n import CodedError, Translator, t
from i18n.stdlib import os_error_text
from settings import Settings

ENGLISH = Translator("en")


class CheckFailed(CodedError):
    """A check that failed: a ``check.*`` catalogue key and its params, shown in the
    operator's language (``str()`` is English). A param that is an error is shown in
    that language too: a coded one by its code, an OSError by its errno."""

    def __init__(self, key: str, **params: object) -> None:
        self.key = key
        super().__init__(key.removeprefix("check."), params)

    def text(self, lang: str) -> str:
        return t(self.key, lang, **{name: _localized(value, lang)
                                    for name, value in self.params.items()})


class ListenRefused(CheckFailed, OSError):
    """The listen address cannot be bound. An OSError too, so that `serve` reports it
    as it reports every start-up OSError."""


def _localized(value: object, lang: str) -> object:
    if isinstance(value, CodedError):
        return value.text(lang)
    if isinstance(value, OSError):
        return os_error_text(value, lang)
    return value


def add_parser(sub: Any, tr: Translator | None = None) -> None:
    """Add the `check` subcommand to main.py's subparsers."""
    tr = tr or ENGLISH
    # SUPPRESS: a flag given before `check` (main.py's global flags) keeps its value.
    check = sub.add_parser("check", argument_default=argparse.SUPPRESS,
                           help=tr("args.check"), description=tr("args.check"))
    check.add_argument("--robot", help="serial port or URL, or 'sim'")
    check.add_argument("--baud", type=int, help="baud rate")
    check.add_argument("--robot-protocol", help="json, text or package.module:ClassName")
    check.add_argument("--commands",
                       help="command table JSON (default tasks/commands/commands.json)")
    check.add_argument("--db", help="task database file")
    check.add_argument("--host", help="listen address")
    check.add_argument("--port", help="listen port")  # text: a bad value gets our one line
    check.add_argument("--sim-speed", type=float, help="simulator speed factor")
    check.add_argument("--sim-transport", choices=("auto", "pty", "tcp"),
                       help="how the simulator is reached")
    check.add_argument("--robot-timeout", type=float, help="seconds to wait for PING")
    check.add_argument("--log-level", help="show this much logging while checking")
    # As console/text.py's lang_flag, which sits above this layer.
    check.add_argument("--lang", choices=i18n.LANGS, help=tr("args.lang"))


def check(settings: Settings, tr: Translator = ENGLISH, *, ping_timeout: float,
          log_level: str | None = None) -> bool:
    """Validate what `serve` would use; one line per check, one line on failure.
    `ping_timeout`: how long the robot has to answer PING; `log_level`: None is quiet
    (the robot layer logs its retries; the answer is our one line)."""
    logging.basicConfig(level=(log_level or "CRITICAL").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        host = settings.host
        # check's --port is text (from_args keeps it as given): a bad value gets our line.
        port = check_port(host, settings.port, tr)
        print(tr("check.port_free", address=listen_address(host, port)), flush=True)
        print(tr("check.ok", detail=check_db(settings.db, tr)), flush=True)
        table = check_commands(settings.commands_file, tr)
        print(tr("check.commands", source=table.source, count=len(table)), flush=True)
        robot = check_robot(settings.robot, settings.baudrate, sim_speed=settings.sim_speed,
                            sim_transport=settings.sim_transport, timeout=ping_timeout,
                            protocol=settings.robot_protocol, table=table, tr=tr)
        print(tr("check.ok", detail=robot), flush=True)
    except CheckFailed as exc:
        print(tr("check.failed", reason=exc.text(tr.lang)), file=sys.stderr, flush=True)
        return False
    print(tr("check.all_ok"), flush=True)
    return True


def check_port(host: str, raw: Any, tr: Translator = ENGLISH) -> int:
    text = str(raw).strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise CheckFailed("check.port_invalid", port=repr(raw))
    port = int(text)
    probe_port(host, port)
    return port


def listen_address(host: str, port: int) -> str:
    """``host:port`` as an operator types it (an IPv6 literal in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def probe_port(host: str, port: int) -> None:
    """Bind ``host:port`` as the server will, and let it go: ListenRefused (naming the
    address) if the server could not. `serve` calls it before the robot is touched."""
    from server.transport.listener import listen_options

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            listen_options(s, host)  # as the server's socket, so the answer is the server's
            s.bind((host, port))
    except OSError as exc:
        raise listen_refused(host, port, exc) from None


def listen_refused(host: str, port: int, exc: OSError) -> ListenRefused:
    """What to say when ``host:port`` cannot be bound (``exc``)."""
    address = listen_address(host, port)
    if exc.errno in (errno.EADDRINUSE, 10048):  # 10048: WSAEADDRINUSE (Windows)
        refused = ListenRefused("check.port_in_use", address=address)
    else:
        refused = ListenRefused("check.port_cannot_listen", address=address, error=exc)
    refused.errno = exc.errno
    return refused


def check_db(path: str, tr: Translator = ENGLISH) -> str:
    from tasks.errors import StoreError
    from tasks.store import TaskStore, on_read_only_fs
    from tasks.store.instance_lock import InstanceLock, InstanceLockHeld

    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise CheckFailed("check.db_is_directory", path=path)
    directory = os.path.dirname(full)
    # Do not create anything: find the directory the server would create it in.
    existing = directory
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if on_read_only_fs(existing):
        # Checked first: as root every access() test below passes or fails for the
        # wrong reason, and "no permission" would send the operator to chmod.
        raise CheckFailed("check.db_read_only", path=path, directory=existing)
    if not os.path.exists(full):
        if not os.path.isdir(existing):
            raise CheckFailed("check.db_not_in_directory", path=path, file=existing)
        if not os.access(existing, os.W_OK | os.X_OK):
            raise CheckFailed("check.db_cannot_create", path=path, directory=existing)
        return tr("check.db_will_be_created", path=path)
    if not os.access(full, os.R_OK | os.W_OK):
        raise CheckFailed("check.db_not_writable", path=path)
    if not os.access(directory, os.W_OK | os.X_OK):
        # SQLite's WAL mode writes -wal and -shm files next to the database.
        raise CheckFailed("check.db_directory_not_writable", directory=directory)
    lock = InstanceLock(path)
    try:
        lock.acquire()  # a running server holds it: `serve` would be refused too
    except (InstanceLockHeld, StoreError) as exc:  # StoreError: a file with several names
        raise CheckFailed("check.db_error", error=exc) from None
    except OSError as exc:
        raise CheckFailed("check.db_cannot_lock", path=lock.path, error=exc) from None
    store = TaskStore(path)
    try:
        store.open()
        counts = store.status_counts()
    except StoreError as exc:
        raise CheckFailed("check.db_error", error=exc) from None
    finally:
        store.close()
        lock.release()
    return tr("check.db_ok", path=path, count=sum(counts.values()))


def check_commands(path: str | None, tr: Translator = ENGLISH) -> Any:
    from tasks.commands import CommandsFileError, load_commands

    try:
        return load_commands(path)
    except CommandsFileError as exc:
        raise CheckFailed("check.commands_error", error=exc) from None


def check_robot(port: str, baudrate: int, *, sim_speed: float, timeout: float,
                sim_transport: str = "auto", protocol: str = "json",
                table: Any = None, tr: Translator = ENGLISH) -> str:
    try:
        from robot import RobotLinkError, open_robot
    except ImportError as exc:  # pyserial missing from this Python
        raise CheckFailed("check.robot_layer_missing", module=exc.name or "serial") from None
    if port == "sim" and sim_speed <= 0:
        raise CheckFailed("check.robot_sim_speed")
    try:
        robot = open_robot(port, protocol, wire_forms=table.wire_forms() if table else None,
                           commands_with_params=table.with_params() if table else (),
                           baudrate=baudrate, sim_speed=sim_speed, sim_transport=sim_transport,
                           robot_timeout=timeout, handshake_timeout=min(timeout, 5.0),
                           reconnect_min=60.0,
                           reply_rules=table.reply_rules() if table else None)
    except RobotLinkError as exc:
        raise CheckFailed("check.robot_error", error=exc) from None
    url = robot.link.url
    try:
        robot.link.start(require_connection=True)  # opens the port and PINGs
        info = robot.link.info()
    except RobotLinkError as exc:
        raise CheckFailed("check.robot_error", error=exc) from None
    finally:
        robot.stop()
    where = tr("check.simulator", url=url) if port == "sim" else port
    return tr("check.robot_ok", where=where, protocol=info.get("protocol"),
              firmware=info.get("firmware") or tr("check.firmware_unknown"))
