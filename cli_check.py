"""`python main.py check`: validate what `serve` would use (listen port, task database,
command table, robot link), one line per check and one line on failure, then exit."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import sys
from typing import Any

import constants
from cli import EXIT_FAILED, EXIT_OK, db_path
from console_text import error_text
from i18n import Translator

ENGLISH = Translator("en")


class CheckFailed(Exception):
    pass


def check(args: argparse.Namespace, tr: Translator = ENGLISH) -> int:
    """Validate what `serve` would use; one line per check, one line on failure."""
    def opt(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        return default if value is None else value

    level = opt("log_level", None)
    # Quiet by default: the robot layer logs its retries; the answer is our one line.
    logging.basicConfig(level=(level or "CRITICAL").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        host = opt("host", constants.HTTP_SERVER_HOST)
        port = check_port(host, opt("port", constants.HTTP_SERVER_PORT), tr)
        print(tr("check.port_free", address=f"{host}:{port}"), flush=True)
        db = db_path(opt("db", None), constants.DB_PATH)
        print(tr("check.ok", detail=check_db(db, tr)), flush=True)
        table = check_commands(opt("commands", constants.COMMANDS_FILE), tr)
        print(tr("check.commands", source=table.source, count=len(table)), flush=True)
        robot = check_robot(opt("robot", constants.ROBOT_PORT),
                            opt("baud", constants.ROBOT_BAUDRATE),
                            sim_speed=opt("sim_speed", constants.SIM_SPEED),
                            sim_transport=opt("sim_transport", constants.SIM_TRANSPORT),
                            timeout=opt("robot_timeout", 5.0),
                            protocol=opt("robot_protocol", constants.ROBOT_PROTOCOL),
                            table=table, tr=tr)
        print(tr("check.ok", detail=robot), flush=True)
    except CheckFailed as exc:
        print(tr("check.failed", reason=exc), file=sys.stderr, flush=True)
        return EXIT_FAILED
    print(tr("check.all_ok"), flush=True)
    return EXIT_OK


def check_port(host: str, raw: Any, tr: Translator = ENGLISH) -> int:
    text = str(raw).strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise CheckFailed(tr("check.port_invalid", port=repr(raw)))
    port = int(text)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As the server does (allow_reuse_address), so TIME_WAIT is not "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, 10048):  # 10048: WSAEADDRINUSE (Windows)
                raise CheckFailed(tr("check.port_in_use", address=f"{host}:{port}")) from None
            raise CheckFailed(tr("check.port_cannot_listen", address=f"{host}:{port}",
                                 error=exc.strerror or exc)) from None
    return port


def check_db(path: str, tr: Translator = ENGLISH) -> str:
    from tasks.instance_lock import InstanceLock, InstanceLockHeld
    from tasks.store import StoreError, TaskStore

    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise CheckFailed(tr("check.db_is_directory", path=path))
    directory = os.path.dirname(full)
    # Do not create anything: find the directory the server would create it in.
    existing = directory
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    from tasks.store import on_read_only_fs

    if on_read_only_fs(existing):
        # Checked first: as root every access() test below passes or fails for the
        # wrong reason, and "no permission" would send the operator to chmod.
        raise CheckFailed(tr("check.db_read_only", path=path, directory=existing))
    if not os.path.exists(full):
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
            raise CheckFailed(tr("check.db_cannot_create", path=path, directory=existing))
        return tr("check.db_will_be_created", path=path)
    if not os.access(full, os.R_OK | os.W_OK):
        raise CheckFailed(tr("check.db_not_writable", path=path))
    if not os.access(directory, os.W_OK | os.X_OK):
        # SQLite's WAL mode writes -wal and -shm files next to the database.
        raise CheckFailed(tr("check.db_directory_not_writable", directory=directory))
    lock = InstanceLock(path)
    try:
        lock.acquire()  # a running server holds it: `serve` would be refused too
    except InstanceLockHeld as exc:
        raise CheckFailed(tr("check.db_error", error=error_text(exc, tr.lang))) from None
    except OSError as exc:
        raise CheckFailed(tr("check.db_cannot_lock", path=lock.path,
                             error=exc.strerror or exc)) from None
    store = TaskStore(path)
    try:
        store.open()
        counts = store.status_counts()
    except StoreError as exc:
        raise CheckFailed(tr("check.db_error", error=error_text(exc, tr.lang))) from None
    finally:
        store.close()
        lock.release()
    return tr("check.db_ok", path=path, count=sum(counts.values()))


def check_commands(path: str | None, tr: Translator = ENGLISH) -> Any:
    from tasks.commands import CommandsFileError, load_commands

    try:
        return load_commands(path)
    except CommandsFileError as exc:
        raise CheckFailed(error_text(exc, tr.lang)) from None


def check_robot(port: str, baudrate: int, *, sim_speed: float, timeout: float,
                sim_transport: str = "auto", protocol: str = "json",
                table: Any = None, tr: Translator = ENGLISH) -> str:
    try:
        from robot import RobotLinkError, build_robot, make_codec
    except ImportError as exc:  # pyserial missing from this Python
        raise CheckFailed(tr("check.robot_layer_missing", error=exc)) from None
    if port == "sim" and sim_speed <= 0:
        raise CheckFailed(tr("check.robot_sim_speed"))
    try:
        codec = make_codec(protocol, table.wire_forms() if table else None,
                           table.with_params() if table else ())
        robot = build_robot(port, codec, protocol=protocol,
                            baudrate=baudrate, sim_speed=sim_speed, sim_transport=sim_transport,
                            robot_timeout=timeout, handshake_timeout=min(timeout, 5.0),
                            reconnect_min=60.0)
    except RobotLinkError as exc:
        raise CheckFailed(tr("check.robot_error", error=error_text(exc, tr.lang))) from None
    url = robot.link.url
    try:
        robot.link.start(require_connection=True)  # opens the port and PINGs
        info = robot.link.info()
    except RobotLinkError as exc:
        raise CheckFailed(tr("check.robot_error", error=error_text(exc, tr.lang))) from None
    finally:
        robot.stop()
    where = tr("check.simulator", url=url) if port == "sim" else port
    return tr("check.robot_ok", where=where, protocol=info.get("protocol"),
              firmware=info.get("firmware") or tr("check.firmware_unknown"))
