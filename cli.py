"""Command-line client and operations commands of main.py (standard library only).

    python main.py submit FILE.json [--wait] [--timeout S]   # queue a command file
    python main.py status [TASK_ID]                          # one task, or the queue
    python main.py cancel TASK_ID
    python main.py tasks [--status S]
    python main.py check [--robot PORT] [--db PATH] [--port N]   # before starting a service

Server address: --url, else $ROBOT_SERVER_URL, else http://127.0.0.1:8090.
API token: --token, else $ROBOT_API_TOKEN.

Exit codes (stable: scripts may rely on them):
    0  success; with --wait: the task completed
    1  the task failed (with --wait); `check`: the configuration is not usable
    2  usage error or unusable command file
    3  the task was cancelled (with --wait)
    4  timed out waiting (the task is still pending or running on the server)
    5  the server could not be reached (after retries)
    6  the server refused the request (HTTP error; its message is printed)
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import socket
import sys
from typing import Any, TextIO

from tasks.client import (
    DEFAULT_URL,
    RobotClient,
    RobotClientError,
    RobotConnectionError,
    RobotHTTPError,
    RobotTimeoutError,
)

COMMANDS = ("submit", "status", "cancel", "tasks", "check")
PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_TIMEOUT = 4
EXIT_CONNECTION = 5
EXIT_HTTP = 6
EXIT_BY_STATUS = {"completed": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
STATUSES = ("pending", "running", "completed", "failed", "cancelled")


def db_path(given: str | None, default: str) -> str:
    """The task database as an absolute path. A --db given by the user is relative to
    the working directory, as usual; the default lives in the project folder (next to
    main.py), so a server started from a shortcut, a service or an IDE with another
    working directory still finds its history."""
    if given:
        return os.path.abspath(given)
    return os.path.normpath(os.path.join(PROJECT_DIR, default))


# -- parsers -------------------------------------------------------------------------------
def _client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help=f"server URL (default $ROBOT_SERVER_URL or {DEFAULT_URL})")
    p.add_argument("--token", help="API token (default $ROBOT_API_TOKEN)")
    p.add_argument("--request-timeout", type=float, default=10.0,
                   help="seconds per HTTP request (default 10)")


def add_parsers(sub: Any) -> None:
    """Add the client and check subcommands to main.py's subparsers."""
    submit = sub.add_parser("submit", help="queue a command file on a running server",
                            description="Exit codes: 0 completed (or queued without --wait), "
                                        "1 failed, 2 bad file, 3 cancelled, 4 timeout, "
                                        "5 cannot connect, 6 refused by the server.")
    submit.add_argument("file", help="command JSON file, e.g. SCAN_QR_CODE_command.json")
    submit.add_argument("--wait", action="store_true",
                        help="wait for the task, show its progress, exit by its final status")
    submit.add_argument("--timeout", type=float, default=600.0,
                        help="with --wait: give up after this many seconds (default 600)")
    submit.add_argument("--retries", type=int, default=4,
                        help="resend on connection errors, same Idempotency-Key (default 4)")
    _client_flags(submit)

    status = sub.add_parser("status", help="show one task, or the queue")
    status.add_argument("task_id", nargs="?", help="a task id (default: the queue)")
    status.add_argument("--json", action="store_true", help="print the server's JSON")
    _client_flags(status)

    cancel = sub.add_parser("cancel", help="cancel a pending or running task")
    cancel.add_argument("task_id")
    _client_flags(cancel)

    tasks = sub.add_parser("tasks", help="list tasks, newest first")
    tasks.add_argument("--status", choices=STATUSES, dest="task_status",
                       help="only tasks in this state")
    tasks.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    tasks.add_argument("--json", action="store_true", help="print the server's JSON")
    _client_flags(tasks)

    # SUPPRESS: a flag given before `check` (main.py's global flags) keeps its value.
    check = sub.add_parser("check", argument_default=argparse.SUPPRESS,
                           help="validate port, database and robot link, then exit")
    check.add_argument("--robot", help="serial port or URL, or 'sim'")
    check.add_argument("--baud", type=int, help="baud rate")
    check.add_argument("--robot-protocol", help="json, text or package.module:ClassName")
    check.add_argument("--commands", help="command table JSON (default tasks/commands.json)")
    check.add_argument("--db", help="task database file")
    check.add_argument("--host", help="listen address")
    check.add_argument("--port", help="listen port")  # text: a bad value gets our one line
    check.add_argument("--sim-speed", type=float, help="simulator speed factor")
    check.add_argument("--sim-transport", choices=("auto", "pty", "tcp"),
                       help="how the simulator is reached")
    check.add_argument("--robot-timeout", type=float, help="seconds to wait for PING")
    check.add_argument("--log-level", help="show this much logging while checking")


def build_parser() -> argparse.ArgumentParser:
    """Standalone parser (`python cli.py ...`), the same subcommands as main.py's."""
    parser = argparse.ArgumentParser(prog="cli.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser


def run(args: argparse.Namespace) -> int:
    """Run one of COMMANDS; returns the exit code."""
    if args.command == "check":
        return check(args)
    client = RobotClient(args.url or os.environ.get("ROBOT_SERVER_URL") or DEFAULT_URL,
                         token=args.token or os.environ.get("ROBOT_API_TOKEN") or None,
                         timeout=args.request_timeout,
                         retries=max(0, getattr(args, "retries", 4)))
    handler = {"submit": submit, "status": status, "cancel": cancel, "tasks": list_tasks}
    try:
        return handler[args.command](client, args)
    except RobotConnectionError as exc:
        _err(f"cannot reach the server at {client.url}: {exc}")
        return EXIT_CONNECTION
    except RobotHTTPError as exc:
        _err(f"the server refused: {exc.message} (HTTP {exc.status})")
        return EXIT_HTTP
    except RobotClientError as exc:
        _err(str(exc))
        return EXIT_HTTP


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2), flush=True)


# -- client commands -------------------------------------------------------------------------
def submit(client: RobotClient, args: argparse.Namespace) -> int:
    try:
        with open(args.file, encoding="utf-8") as fh:
            command = json.load(fh)
    except (OSError, ValueError) as exc:
        _err(f"cannot use {args.file}: {exc}")
        return EXIT_USAGE
    if not isinstance(command, dict):
        _err(f"cannot use {args.file}: it must hold a JSON object")
        return EXIT_USAGE
    try:
        accepted = client.submit(command)
    except RobotHTTPError as exc:
        _err(f"not queued: {exc.message} (HTTP {exc.status})")
        return EXIT_USAGE if exc.status in (400, 413, 415, 422) else EXIT_HTTP
    task_id = accepted["task_id"]
    note = " (already submitted: the first attempt's task)" if accepted.get("replayed") else ""
    if not args.wait:
        _err(f"queued: task {task_id}{note}; queue size {accepted.get('queue_size')}"
             + (f"; {accepted['warning']}" if accepted.get("warning") else ""))
        print(task_id, flush=True)
        return EXIT_OK
    _err(f"queued: task {task_id}{note}")
    if accepted.get("warning"):
        _err(f"warning: {accepted['warning']}")
    view = ProgressView(sys.stderr)
    try:
        task = client.wait(task_id, timeout=args.timeout, on_update=view.update)
    except RobotTimeoutError as exc:
        view.close()
        _err(f"timed out after {args.timeout:g} s: task {task_id} is still "
             f"{(exc.task or {}).get('status', 'unknown')} on the server "
             f"(cancel with: python main.py cancel {task_id})")
        return EXIT_TIMEOUT
    view.close()
    _print_json(task)
    result = task.get("result") or {}
    duration = task.get("duration_s")
    _err(f"task {task_id} {task['status']}"
         + (f" in {duration:.2f} s" if isinstance(duration, (int, float)) else "")
         + (f": {result.get('message')}" if result.get("message") else ""))
    return EXIT_BY_STATUS.get(task["status"], EXIT_FAILED)


def status(client: RobotClient, args: argparse.Namespace) -> int:
    if args.task_id:
        task = client.task(args.task_id)
        if args.json:
            _print_json(task)
            return EXIT_OK
        progress = task.get("progress") or {}
        lines = [f"task {task['task_id']}: {task['status']} ({task.get('cmd_type')})",
                 f"  submitted {task.get('submit_time')}, started {task.get('start_time')}, "
                 f"ended {task.get('end_time')}"]
        if progress.get("total"):
            lines.append(f"  progress {progress.get('done')}/{progress.get('total')} "
                         f"{progress.get('message') or ''}".rstrip())
        if task.get("queue_position"):
            lines.append(f"  queue position {task['queue_position']}"
                         + (f", expected to start {task['estimated_start_time']}"
                            if task.get("estimated_start_time") else ""))
        if task.get("result") is not None:
            lines.append("  result " + json.dumps(task["result"], ensure_ascii=False))
        print("\n".join(lines), flush=True)
        return EXIT_OK
    queue = client.queue_status()
    if args.json:
        _print_json(queue)
        return EXIT_OK
    paused = f"PAUSED ({queue.get('pause_reason')})" if queue.get("paused") else "running"
    print(f"queue {paused}: {queue.get('pending_tasks', 0)} pending, running "
          f"{queue.get('running_task') or 'nothing'}\n"
          f"tasks: {queue.get('total_tasks')} total, {queue.get('completed_tasks')} completed, "
          f"{queue.get('failed_tasks')} failed, {queue.get('cancelled_tasks', 0)} cancelled",
          flush=True)
    for task in queue.get("recent_tasks") or []:
        print(f"  {task['task_id']}  {task['status']:<9}  {task['cmd_type']:<12}  "
              f"{task.get('submit_time') or ''}", flush=True)
    return EXIT_OK


def cancel(client: RobotClient, args: argparse.Namespace) -> int:
    reply = client.cancel(args.task_id)
    print(f"task {args.task_id}: {reply.get('status')}: {reply.get('message')}", flush=True)
    return EXIT_OK


def list_tasks(client: RobotClient, args: argparse.Namespace) -> int:
    page = client.tasks(status=args.task_status, limit=args.limit)
    if args.json:
        _print_json(page)
        return EXIT_OK
    for task in page.get("tasks") or []:
        duration = task.get("duration_s")
        print(f"{task['task_id']}  {task['status']:<9}  {task['cmd_type']:<12}  "
              f"{task.get('submit_time') or ''}"
              + (f"  {duration:.2f} s" if isinstance(duration, (int, float)) else ""),
              flush=True)
    print(f"({page.get('count')} of {page.get('total')})", flush=True)
    return EXIT_OK


class ProgressView:
    """A progress bar on a terminal; one line per change when the output is a log/pipe."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last: tuple[Any, ...] | None = None
        self.drawn = False

    def update(self, task: dict[str, Any]) -> None:
        progress = task.get("progress") or {}
        done, total = progress.get("done"), progress.get("total")
        state = (task.get("status"), done, total, progress.get("message"))
        if state == self.last:
            return
        self.last = state
        if isinstance(done, int) and isinstance(total, int) and total > 0:
            fraction = min(max(done / total, 0.0), 1.0)
            filled = int(fraction * self.WIDTH)
            text = (f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {fraction * 100:5.1f}% "
                    f"{done}/{total} {task.get('status')} {progress.get('message') or ''}")
        else:
            position = task.get("queue_position")
            text = f"{task.get('status')}" + (f" (queue position {position})"
                                              if position else "")
        if self.tty:
            width = 79
            self.stream.write("\r" + text[:width].ljust(width))
            self.drawn = True
        else:
            self.stream.write(text.rstrip() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


# -- check -------------------------------------------------------------------------------------
class CheckFailed(Exception):
    pass


def check(args: argparse.Namespace) -> int:
    """Validate what `serve` would use; one line per check, one line on failure."""
    import constants

    def opt(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        return default if value is None else value

    level = opt("log_level", None)
    # Quiet by default: the robot layer logs its retries; the answer is our one line.
    logging.basicConfig(level=(level or "CRITICAL").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        host = opt("host", constants.HTTP_SERVER_HOST)
        port = check_port(host, opt("port", constants.HTTP_SERVER_PORT))
        print(f"ok: listen address {host}:{port} is free", flush=True)
        db = db_path(opt("db", None), constants.DB_PATH)
        print(f"ok: {check_db(db)}", flush=True)
        table = check_commands(opt("commands", constants.COMMANDS_FILE))
        print(f"ok: command table {table.source} ({len(table)} commands)", flush=True)
        robot = check_robot(opt("robot", constants.ROBOT_PORT),
                            opt("baud", constants.ROBOT_BAUDRATE),
                            sim_speed=opt("sim_speed", constants.SIM_SPEED),
                            sim_transport=opt("sim_transport", constants.SIM_TRANSPORT),
                            timeout=opt("robot_timeout", 5.0),
                            protocol=opt("robot_protocol", constants.ROBOT_PROTOCOL),
                            table=table)
        print(f"ok: {robot}", flush=True)
    except CheckFailed as exc:
        _err(f"check failed: {exc}")
        return EXIT_FAILED
    print("configuration OK", flush=True)
    return EXIT_OK


def check_port(host: str, raw: Any) -> int:
    text = str(raw).strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise CheckFailed(f"port: {raw!r} is not a port number (1-65535)")
    port = int(text)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As the server does (allow_reuse_address), so TIME_WAIT is not "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, 10048):  # 10048: WSAEADDRINUSE (Windows)
                raise CheckFailed(f"port: {host}:{port} is already in use (is the server "
                                  "running?)") from None
            raise CheckFailed(f"port: cannot listen on {host}:{port}: "
                              f"{exc.strerror or exc}") from None
    return port


def check_db(path: str) -> str:
    from tasks.instance_lock import InstanceLock, InstanceLockHeld
    from tasks.store import StoreError, TaskStore

    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise CheckFailed(f"database: {path} is a directory, not a file")
    directory = os.path.dirname(full)
    if not os.path.exists(full):
        # Do not create anything: find the directory the server would create it in.
        existing = directory
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
            raise CheckFailed(f"database: cannot create {path}: no write permission on "
                              f"{existing}")
        return f"database {path} will be created"
    if not os.access(full, os.R_OK | os.W_OK):
        raise CheckFailed(f"database: {path} is not readable and writable by this user")
    if not os.access(directory, os.W_OK | os.X_OK):
        # SQLite's WAL mode writes -wal and -shm files next to the database.
        raise CheckFailed(f"database: no write permission on {directory} (WAL files)")
    lock = InstanceLock(path)
    try:
        lock.acquire()  # a running server holds it: `serve` would be refused too
    except InstanceLockHeld as exc:
        raise CheckFailed(f"database: {exc}") from None
    except OSError as exc:
        raise CheckFailed(f"database: cannot lock {lock.path}: {exc.strerror or exc}") from None
    store = TaskStore(path)
    try:
        store.open()
        counts = store.status_counts()
    except StoreError as exc:
        raise CheckFailed(f"database: {exc}") from None
    finally:
        store.close()
        lock.release()
    return f"database {path} is a task database ({sum(counts.values())} tasks)"


def check_commands(path: str | None) -> Any:
    from tasks.commands import CommandsFileError, load_commands

    try:
        return load_commands(path)
    except CommandsFileError as exc:
        raise CheckFailed(str(exc)) from None


def check_robot(port: str, baudrate: int, *, sim_speed: float, timeout: float,
                sim_transport: str = "auto", protocol: str = "json",
                table: Any = None) -> str:
    try:
        from robot import RobotLinkError, build_robot, make_codec
    except ImportError as exc:  # pyserial missing from this Python
        raise CheckFailed(f"robot: cannot load the robot layer ({exc})") from None
    if port == "sim" and sim_speed <= 0:
        raise CheckFailed("robot: --sim-speed must be greater than 0")
    try:
        codec = make_codec(protocol, table.wire_forms() if table else None,
                           table.with_params() if table else ())
        robot = build_robot(port, codec, protocol=protocol,
                            baudrate=baudrate, sim_speed=sim_speed, sim_transport=sim_transport,
                            robot_timeout=timeout, handshake_timeout=min(timeout, 5.0),
                            reconnect_min=60.0)
    except RobotLinkError as exc:
        raise CheckFailed(f"robot: {exc}") from None
    url = robot.link.url
    try:
        robot.link.start(require_connection=True)  # opens the port and PINGs
        info = robot.link.info()
    except RobotLinkError as exc:
        raise CheckFailed(f"robot: {exc}") from None
    finally:
        robot.stop()
    where = f"built-in simulator ({url})" if port == "sim" else port
    return (f"robot on {where} answers PING (protocol {info.get('protocol')}, firmware "
            f"{info.get('firmware') or 'unknown'})")


if __name__ == "__main__":
    sys.exit(main())
