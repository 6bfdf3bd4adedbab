"""Robot task server: menus, flags and wiring. Everything else lives in packages.

    python main.py                      # interactive menus (as in the user guide)
    python main.py serve --mode queue   # no questions: for scripts and services
    python main.py run FILE.json        # run one command file on the robot, print the result
    python main.py submit FILE.json --wait   # client of a running server (see cli.py)
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import logging.handlers
import os
import queue
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import cli
import constants

SERVE_HINT = "python main.py serve --mode queue"


class MenuExit(SystemExit):
    pass


# -- flags ------------------------------------------------------------------------------
def _robot_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--robot", help=f"serial port or URL, or 'sim' (default {constants.ROBOT_PORT})")
    p.add_argument("--baud", type=int, help=f"baud rate (default {constants.ROBOT_BAUDRATE})")
    p.add_argument("--robot-protocol", metavar="NAME",
                   help="what the robot's firmware speaks: json (this project's), text, or a "
                        "lab's own codec as package.module:ClassName (default "
                        f"{constants.ROBOT_PROTOCOL}; see docs/robot-adapters.md)")
    p.add_argument("--sim-speed", type=float,
                   help=f"simulator speed factor (default {constants.SIM_SPEED})")
    p.add_argument("--sim-transport", choices=("auto", "pty", "tcp"),
                   help="how the simulator is reached: pty, tcp (loopback socket://), or "
                        f"auto = pty where the system has them (default "
                        f"{constants.SIM_TRANSPORT})")
    p.add_argument("--robot-timeout", type=float,
                   help=f"seconds of robot silence that fail a command "
                        f"(default {constants.ROBOT_TIMEOUT_S:g})")
    p.add_argument("--commands", metavar="FILE",
                   help="command table JSON (default: the shipped tasks/commands.json); "
                        "see docs/commands.md")
    p.add_argument("--log-level", help=f"logging level (default {constants.LOG_LEVEL})")
    p.add_argument("--log-file", help="also log to this file (rotated)")


def _server_flags(p: argparse.ArgumentParser, *, with_mode: bool = True) -> None:
    if with_mode:
        p.add_argument("--mode", choices=("sync", "queue"), help="execution mode")
    p.add_argument("--host", help=f"listen address (default {constants.HTTP_SERVER_HOST})")
    p.add_argument("--port", type=int, help=f"listen port (default {constants.HTTP_SERVER_PORT})")
    p.add_argument("--db", help=f"task database file (default {constants.DB_PATH} in the "
                                "project folder; a path given here is relative to the "
                                "working directory)")
    p.add_argument("--auto-resume", action="store_true", default=None,
                   help="do not hold the queue after a fault or an interrupted task")
    p.add_argument("--max-queue", type=int,
                   help=f"most unfinished tasks accepted (default {constants.MAX_QUEUE_SIZE})")
    p.add_argument("--keep-days", type=float,
                   help=f"days finished tasks are kept (default {constants.KEEP_DAYS})")
    p.add_argument("--shutdown-grace", type=float,
                   help=f"seconds the running task may finish at shutdown before STOP "
                        f"(default {constants.SHUTDOWN_GRACE_S:g})")
    p.add_argument("--api-token",
                   help="require this token (Authorization: Bearer or X-API-Key) on every "
                        "endpoint but /health; default: env ROBOT_API_TOKEN")
    p.add_argument("--allow", type=_networks, metavar="CIDR,...",
                   help="only these client networks may connect, e.g. 172.16.11.0/24,127.0.0.1")
    p.add_argument("--allowed-host", type=_names, metavar="NAME,...",
                   help="DNS names clients may use for this server (IP addresses, localhost "
                        "and the hostname always work)")
    p.add_argument("--cors-origin", metavar="ORIGIN",
                   help="one other web origin allowed to call the API from a browser, "
                        "e.g. http://lims.lab:8080")
    p.add_argument("--max-connections", type=int,
                   help="ordinary connections served at once; beyond: 503 (default 200)")


def _networks(text: str) -> tuple[str, ...]:
    import ipaddress

    items = tuple(part.strip() for part in text.split(",") if part.strip())
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an address or CIDR network: {item}") from None
    return items


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py", description="HTTP task server for a lab robot on a serial port.",
        epilog=f"Without a command, menus ask what no flag gave. For services: {SERVE_HINT}")
    _server_flags(parser)
    _robot_flags(parser)
    sub = parser.add_subparsers(dest="command")
    # SUPPRESS: a flag not given after the command keeps the value given before it.
    serve = sub.add_parser("serve", help="run the HTTP server (no menus)",
                           argument_default=argparse.SUPPRESS)
    _server_flags(serve)
    _robot_flags(serve)
    run = sub.add_parser("run", help="run one command file on the robot and print the result",
                         argument_default=argparse.SUPPRESS)
    run.add_argument("file", help="command JSON file, e.g. SCAN_QR_CODE_command.json")
    _robot_flags(run)
    sub.add_parser("ports", help="list serial ports")
    cli.add_parsers(sub)  # submit, status, cancel, tasks, check
    return parser


# -- menus -------------------------------------------------------------------------------
def ask(prompt: str, choices: dict[str, str], *, read: Callable[[str], str] = input) -> str:
    """Ask until one of `choices` is typed; end of input exits naming the serve command."""
    while True:
        try:
            answer = read(prompt).strip()
        except EOFError:
            print(f"\nNo answer (end of input). To start without questions, use:\n"
                  f"  {SERVE_HINT}", file=sys.stderr)
            raise MenuExit(2) from None
        if answer in choices:
            return choices[answer]
        print(f"Please type one of: {', '.join(choices)}")


def ask_robot_port(read: Callable[[str], str] = input) -> str:
    """Offer the serial ports found; asked only when there are some (else the default)."""
    from robot import list_ports

    ports = list_ports()
    if not ports:
        return constants.ROBOT_PORT
    print("Robot port\n  0) sim (built-in simulator)")
    choices = {"": constants.ROBOT_PORT, "0": "sim"}
    for n, port in enumerate(ports, 1):
        print(f"  {n}) {port['device']}  {port.get('description') or ''}")
        choices[str(n)] = port["device"]
    return ask(f"Choose robot port [Enter = {constants.ROBOT_PORT}]: ", choices, read=read)


def ask_robot_protocol(read: Callable[[str], str] = input) -> str:
    """Asked with the port: a lab robot's firmware rarely speaks this project's JSON."""
    print("Robot protocol\n  1) json (this project's firmware)\n"
          "  2) text (plain lines: PING/PONG, OK, ERR, BUSY, ALARM)\n"
          "  (a lab's own codec: --robot-protocol package.module:ClassName)")
    choices = {"": constants.ROBOT_PROTOCOL, "1": "json", "2": "text"}
    return ask(f"Choose robot protocol [Enter = {constants.ROBOT_PROTOCOL}]: ", choices,
               read=read)


def fill_from_menus(args: argparse.Namespace) -> None:
    interactive = args.command is None  # `serve`/`run` given: scripts, never ask
    if args.command is None:
        print("Robot task server\n  1) HTTP server mode\n  2) Local mode (run one command file)")
        args.command = ask("Choose mode [1/2]: ", {"1": "serve", "2": "run"})
    if args.command == "serve" and args.mode is None:
        print("Execution mode\n  1) Sync mode: each request waits until the robot is done\n"
              "  2) Queue mode (recommended): returns a task_id at once, tasks run in order")
        args.mode = ask("Choose execution mode [1/2]: ", {"1": "sync", "2": "queue"})
    if args.command in ("serve", "run") and args.robot is None and interactive:
        args.robot = ask_robot_port()
        if args.robot != "sim" and args.robot_protocol is None:
            args.robot_protocol = ask_robot_protocol()
    if args.command == "run" and getattr(args, "file", None) is None:
        try:
            args.file = input("Command file [SCAN_QR_CODE_command.json]: ").strip() \
                or "SCAN_QR_CODE_command.json"
        except EOFError:
            print("\nNo answer (end of input). Use: python main.py run FILE.json",
                  file=sys.stderr)
            raise MenuExit(2) from None


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


# -- logging -----------------------------------------------------------------------------
class _LockFreeQueueHandler(logging.handlers.QueueHandler):
    """SimpleQueue.put is thread-safe on its own: the per-handler lock that
    logging.Handler takes around emit() only made 16 request threads queue up
    (about 30 % of a GET's time in profiles)."""

    def createLock(self) -> None:  # noqa: N802 (logging's name)
        self.lock = None

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


def setup_logging(level: str | None, log_file: str | None) -> None:
    """Log through a queue: request threads only enqueue a record, and one listener
    thread does the formatting-free I/O (profiling showed 16 handler threads
    queuing on the stream handler's lock and flush)."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        handlers.append(logging.handlers.RotatingFileHandler(
            log_file, maxBytes=constants.LOG_FILE_MAX_BYTES,
            backupCount=constants.LOG_FILE_BACKUPS, encoding="utf-8"))
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in handlers:
        handler.setFormatter(formatter)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
    root = logging.getLogger()
    root.handlers[:] = [_LockFreeQueueHandler(records)]
    root.setLevel((level or constants.LOG_LEVEL).upper())
    listener.start()
    atexit.register(listener.stop)  # flush what is queued before the process exits


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


# -- commands ----------------------------------------------------------------------------
def serve(args: argparse.Namespace) -> int:
    from robot import RobotLinkError
    from server.console import install_shutdown_handlers
    from server.runtime import RobotServer, ServerSettings
    from tasks.commands import CommandsFileError
    from tasks.instance_lock import InstanceLockHeld
    from tasks.store import StoreError

    settings = ServerSettings(
        mode=_pick(args.mode, constants.DEFAULT_MODE),
        host=_pick(args.host, constants.HTTP_SERVER_HOST),
        port=_pick(args.port, constants.HTTP_SERVER_PORT),
        robot=_pick(args.robot, constants.ROBOT_PORT),
        robot_protocol=_pick(args.robot_protocol, constants.ROBOT_PROTOCOL),
        baudrate=_pick(args.baud, constants.ROBOT_BAUDRATE),
        db=cli.db_path(args.db, constants.DB_PATH),
        sim_speed=_pick(args.sim_speed, constants.SIM_SPEED),
        sim_transport=_pick(args.sim_transport, constants.SIM_TRANSPORT),
        robot_timeout=_pick(args.robot_timeout, constants.ROBOT_TIMEOUT_S),
        # As resolve_timeouts: an explicit --robot-timeout is for every command; without
        # one the server takes each command's timeout_s from the table it loads.
        command_timeouts=None if args.robot_timeout is None else {},
        commands_file=_pick(args.commands, constants.COMMANDS_FILE),
        write_timeout=constants.ROBOT_WRITE_TIMEOUT_S,
        reconnect_min=constants.ROBOT_RECONNECT_MIN_S,
        reconnect_max=constants.ROBOT_RECONNECT_MAX_S,
        auto_resume=_pick(args.auto_resume, constants.AUTO_RESUME),
        max_queue=_pick(args.max_queue, constants.MAX_QUEUE_SIZE),
        max_body=constants.MAX_BODY_BYTES,
        max_wait=constants.MAX_WAIT_S,
        sync_timeout=constants.SYNC_WAIT_TIMEOUT_S,
        recent_in_status=constants.RECENT_TASKS_IN_STATUS,
        shutdown_grace=_pick(args.shutdown_grace, constants.SHUTDOWN_GRACE_S),
        keep_days=_pick(args.keep_days, constants.KEEP_DAYS),
        backlog=constants.LISTEN_BACKLOG,
        # An empty --api-token "" means none, so a unit file can switch it off.
        api_token=_pick(args.api_token, os.environ.get("ROBOT_API_TOKEN")) or None,
        allow=_pick(args.allow, ()),
        allowed_hosts=_pick(args.allowed_host, ()),
        cors_origin=args.cors_origin,
        max_connections=_pick(args.max_connections, ServerSettings.max_connections),
    )
    if settings.sim_speed <= 0:
        print("--sim-speed must be greater than 0", file=sys.stderr)
        return 2
    # Shorter GIL hand-offs: the STOP and completion paths cross several threads
    # (pty reader, worker, handlers) while many clients poll.
    sys.setswitchinterval(0.001)
    server = RobotServer(settings)
    try:
        server.start()
    except (CommandsFileError, StoreError, RobotLinkError, InstanceLockHeld, OSError) as exc:
        print(f"Cannot start: {exc}", file=sys.stderr)
        return 1
    print_banner(server)

    stop = threading.Event()
    finished = threading.Event()

    def stop_robot_now(why: str) -> None:
        if server.worker is not None:
            print(f"{why}: sending STOP to the robot now.", flush=True)
            server.worker.abort_for_shutdown()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            # A second Ctrl+C: the operator does not want to wait for the task.
            stop_robot_now("Second signal")
            return
        logging.getLogger("main").info("signal %d: shutting down", signum)
        stop.set()

    def on_console_close() -> None:
        # Windows ends the process seconds after the window closes: no grace period.
        stop.set()
        stop_robot_now("Console closing")

    install_shutdown_handlers(on_signal, on_console_close, finished)
    # Wait in slices: a signal delivered to another thread runs its Python handler only
    # when the main thread next wakes (an untimed wait may never wake).
    while not stop.wait(0.2):
        pass
    running = server.manager.running_task_id if server.manager else None
    if running:
        print(f"Stopping: task {running} may finish for up to {settings.shutdown_grace:g} s, "
              "then it is stopped (press Ctrl+C again to stop it now).", flush=True)
    server.stop()
    print("Server stopped.", flush=True)
    finished.set()
    return 0


def print_banner(server: Any) -> None:
    from server.console import can_encode

    s = server.settings
    lines: list[str] = []
    host, port = server.address
    ip = lan_ip()
    tick = "✓" if can_encode("✓") else "OK"  # GBK and ASCII consoles have no check mark
    if s.mode == "queue":
        lines.append(f"{tick} Queue mode enabled\n"
                     "  - commands are queued and run one after another\n"
                     "  - POST / returns a task_id at once; ask GET /task/<task_id>")
    else:
        lines.append(f"{tick} Sync mode enabled\n"
                     "  - each POST / waits until the robot has finished\n"
                     "  - long actions may exceed client time-outs: prefer queue mode")
    where = " (all network interfaces)" if host in ("0.0.0.0", "::") else ""
    lines.append(f"\n{tick} HTTP server started\nListening on: {host}:{port}{where}\n"
                 f"LAN IP: {ip}\nMode: {s.mode} mode\nRobot port: {server.robot_port}"
                 + (" (built-in simulator)" if s.robot == "sim" else "")
                 + f"\nRobot protocol: {s.robot_protocol}"
                 + f"\nTask database: {os.path.abspath(s.db)}")
    robot = server.link.info() if server.link is not None else {}
    if not robot.get("ready"):
        lines.append(f"! Robot not answering yet: {robot.get('error') or 'connecting'}; "
                     "retrying in the background (see GET /health)")
    if s.api_token:
        # Never the token itself: banners end up in journals and screenshots.
        hint = f" (…{s.api_token[-4:]})" if len(s.api_token) >= 16 else ""
        lines.append(f"API token: set{hint}")
    elif not _loopback(host):
        lines.append(f"\n! No API token: anyone who can reach {host}:{port} can queue robot "
                     "commands and stop the robot.\n  Set --api-token or ROBOT_API_TOKEN "
                     "(and/or --allow CIDR).")
    if s.allow:
        lines.append(f"Allowed clients: {', '.join(s.allow)}")
    if server.interrupted:
        lines.append(f"\n! Interrupted task(s) marked failed: {', '.join(server.interrupted)}")
    if server.manager.paused:
        lines.append(f"! The queue is held: {server.manager.pause_reason}\n"
                     f"  Resume with: curl -X POST http://{ip}:{port}/queue/resume")
    # One write: log lines from other threads cannot cut into the banner.
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run_local(args: argparse.Namespace) -> int:
    from robot import RobotLinkError, build_robot, make_codec
    from tasks.commands import CommandError, CommandsFileError, load_commands, resolve_timeouts

    try:
        table = load_commands(_pick(args.commands, constants.COMMANDS_FILE))
    except CommandsFileError as exc:
        print(f"Cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        with open(args.file, encoding="utf-8") as fh:
            cmd_type, params = table.validate(json.load(fh))
    except (OSError, ValueError) as exc:
        message = exc.message if isinstance(exc, CommandError) else str(exc)
        print(f"Cannot use {args.file}: {message}", file=sys.stderr)
        return 2
    robot_timeout, command_timeouts = resolve_timeouts(args.robot_timeout, table,
                                                       constants.ROBOT_TIMEOUT_S)
    protocol = _pick(args.robot_protocol, constants.ROBOT_PROTOCOL)
    try:
        codec = make_codec(protocol, table.wire_forms(), table.with_params())
        robot = build_robot(_pick(args.robot, constants.ROBOT_PORT), codec, protocol=protocol,
                            baudrate=_pick(args.baud, constants.ROBOT_BAUDRATE),
                            sim_speed=_pick(args.sim_speed, constants.SIM_SPEED),
                            sim_transport=_pick(args.sim_transport, constants.SIM_TRANSPORT),
                            robot_timeout=robot_timeout, command_timeouts=command_timeouts)
    except RobotLinkError as exc:
        print(f"Cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        robot.link.start(require_connection=True)
        outcome = robot.link.execute(cmd_type, params, on_progress=lambda e: print(
            f"  {e.get('done')}/{e.get('total')} {e.get('message') or ''}", flush=True))
    except RobotLinkError as exc:
        print(f"Cannot reach the robot: {exc}", file=sys.stderr)
        return 1
    finally:
        robot.stop()
    result = {"success": outcome.success, "message": outcome.message,
              **table.result_data(cmd_type, outcome.data, outcome.items)}
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0 if outcome.success else 1


def list_ports_command(args: argparse.Namespace) -> int:
    from robot import list_ports

    ports = list_ports()
    if not ports:
        print("No serial ports found. Use --robot sim for the built-in simulator.")
    for port in ports:
        print(f"{port['device']}\t{port.get('description', '')}\t{port.get('hwid', '')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from server.console import make_console_safe

    make_console_safe()  # first: nothing printed later may raise on a GBK/ASCII console
    args = build_parser().parse_args(argv)
    if args.command in cli.COMMANDS:
        return cli.run(args)  # no menus, and quiet: their output is the answer
    try:
        fill_from_menus(args)
    except MenuExit as exc:
        return int(exc.code or 2)
    setup_logging(getattr(args, "log_level", None), getattr(args, "log_file", None))
    commands = {"serve": serve, "run": run_local, "ports": list_ports_command}
    return commands[args.command](args)


def _interactive(argv: list[str]) -> bool:
    """Started without a command (menus): likely a double-clicked window."""
    return not any(arg in ("serve", "run", "ports", *cli.COMMANDS) for arg in argv)


if __name__ == "__main__":
    from server.console import pause_before_exit

    code = main()
    pause_before_exit(code, interactive=_interactive(sys.argv[1:]))
    sys.exit(code)
