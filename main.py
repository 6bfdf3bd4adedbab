"""Robot task server: menus, flags and wiring. Everything else lives in packages.

    python main.py                      # interactive menus (as in the user guide)
    python main.py serve --mode queue   # no questions: for scripts and services
    python main.py run FILE.json        # run one command file on the robot, print the result
    python main.py submit FILE.json --wait   # client of a running server (see client/cli.py)
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

import constants
import i18n
from client import cli
from console.banner import print_banner
from console.events import ConsoleEvents
from console.flags import robot_flags, server_flags
from console.menus import SERVE_HINT, MenuExit, fill_from_menus
from console.text import console_language, lang_flag, say, warn_if_not_shown
from i18n import Translator, error_text
from server import users_cli
from server.webhooks import cli as webhooks_cli
from settings import DEFAULTS, fill_from_environ, from_args, mention_environ

if TYPE_CHECKING:
    from server.logbatch import LogBatch

# Commands on the server's task database, run beside a running server (no instance lock).
LOCAL_COMMANDS = (*users_cli.COMMANDS, *webhooks_cli.COMMANDS)
# The console's language once main() has chosen it: the Windows pause after main() speaks it.
console_lang = i18n.DEFAULT_LANG


def build_parser(lang: str = "en") -> argparse.ArgumentParser:
    """The parser; its description, command summaries and --lang speak ``lang``
    (argparse's own words and the flags' help stay English)."""
    tr = Translator(lang)
    parser = argparse.ArgumentParser(prog="main.py", description=tr("args.description"),
                                     epilog=tr("args.epilog", hint=SERVE_HINT))
    server_flags(parser)
    robot_flags(parser)
    lang_flag(parser, tr, default=None)
    sub = parser.add_subparsers(dest="command")
    # SUPPRESS: a flag not given after the command keeps the value given before it.
    serve = sub.add_parser("serve", help=tr("args.serve"), description=tr("args.serve"),
                           argument_default=argparse.SUPPRESS)
    server_flags(serve)
    robot_flags(serve)
    lang_flag(serve, tr)
    serve.add_argument("--check", action="store_true", help="first run the checks of `check` "
                       "with the same settings; refuse to start if one fails")
    run = sub.add_parser("run", help=tr("args.run"), description=tr("args.run"),
                         argument_default=argparse.SUPPRESS)
    run.add_argument("file", help=tr("args.command_file"))
    robot_flags(run)
    lang_flag(run, tr)
    ports = sub.add_parser("ports", help=tr("args.ports"), description=tr("args.ports"))
    lang_flag(ports, tr)
    cli.add_parsers(sub, tr)  # submit, status, cancel, tasks
    from server.check import add_parser as add_check_parser

    add_check_parser(sub, tr)
    users_cli.add_parsers(sub, tr)  # users add/list/revoke/token, audit verify
    webhooks_cli.add_parsers(sub, tr)  # webhooks add/list/remove/test
    for each in (parser, serve, run, sub.choices["check"]):
        mention_environ(each)
    return parser


def _lang_flag(argv: list[str]) -> str | None:
    """--lang before the full parse: the parser's own help text is in that language."""
    early = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    early.add_argument("--lang")
    try:
        return early.parse_known_args(argv)[0].lang
    except argparse.ArgumentError:
        return None  # e.g. --lang without a value: the full parse reports it


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def db_path(given: str | None, default: str) -> str:
    """The task database as an absolute path. A --db given by the user is relative to
    the working directory, as usual; the default lives in the project folder (next to
    main.py), so a server started from a shortcut, a service or an IDE with another
    working directory still finds its history."""
    if given:
        return os.path.abspath(given)
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), default))


# -- logging -----------------------------------------------------------------------------
def setup_logging(level: str | None, log_file: str | None,
                  access: str | None = None) -> LogBatch:
    """stderr plus, with a log file, a rotating one, through server.logbatch: request
    threads only enqueue, one writer thread formats and writes in batches (logging was
    ~35 % of a GET's time in profiles). The console keeps to warnings unless --log-level
    is given: an operator reads the banner and the task lines there, not every request."""
    from server import logbatch

    given = logging.getLevelName(level.upper()) if level else None
    if access is None:
        access = "console" if isinstance(given, int) and given <= logging.INFO else "file"
    return logbatch.setup(level or DEFAULTS.log_level, log_file,
                          console_level=level or constants.CONSOLE_LOG_LEVEL,
                          access_console=access == "console",
                          access_file=False if access == "off" else None,
                          max_bytes=DEFAULTS.log_max_bytes, backups=DEFAULTS.log_backups)


def tune_interpreter() -> None:
    """What serve() changes in the interpreter; bench/serve.py calls it too, so the
    bench measures what runs in production."""
    # Shorter GIL hand-offs: the STOP and completion paths cross several threads
    # (pty reader, worker, handlers) while many clients poll.
    sys.setswitchinterval(0.001)
    # A log record looks up its caller's file and line (a walk up the stack) and the
    # process's name, none of which our format prints: the worker logs on a task's path.
    # (The logging HOWTO's "Optimization": _srcfile None skips the caller.)
    logging._srcfile = None
    logging.logMultiprocessing = False
    logging.logProcesses = False


def tune_after_start() -> None:
    """Once the server is up: what start-up made to last (modules, tables, the robot
    link) is moved out of the cyclic collector's sight, so a full collection under load
    walks only what was made since (its pauses were the completion path's worst tail)."""
    gc.collect()
    gc.freeze()


# -- commands ----------------------------------------------------------------------------
def serve(args: argparse.Namespace) -> int:
    from console.terminal import install_shutdown_handlers
    from robot import RobotLinkError
    from server.runtime import RobotServer
    from tasks.commands import CommandsFileError
    from tasks.errors import StoreError
    from tasks.store.instance_lock import InstanceLockHeld

    tr = Translator(args.console_lang)
    settings = from_args(args, db=db_path(args.db, DEFAULTS.db))
    if settings.sim_speed <= 0:
        print(tr("start.sim_speed"), file=sys.stderr)
        return 2
    if getattr(args, "check", False):
        from server.check import check

        # check releases the port, the database's lock and the robot before returning.
        if not check(settings, tr, ping_timeout=constants.CHECK_PING_TIMEOUT_S):
            return cli.EXIT_FAILED
    tune_interpreter()
    server = RobotServer(settings)
    try:
        server.start()
    except (CommandsFileError, StoreError, RobotLinkError, InstanceLockHeld, OSError) as exc:
        print(tr("start.cannot_start", error=error_text(exc, tr.lang)), file=sys.stderr)
        return 1
    tune_after_start()
    stop = threading.Event()
    finished = threading.Event()

    def stop_robot_now(why: str, *, wait: bool = True) -> None:
        worker = server.worker
        if worker is not None:
            say(why)
            running = server.manager.running_task_id if server.manager else None
            if worker.abort_for_shutdown(wait=wait):
                say(tr("shutdown.not_waiting", task_id=running or "?"))

    def on_signal(signum: int) -> None:
        if stop.is_set():
            # A second Ctrl+C: the operator wants neither the task nor the robot's
            # confirmation of STOP waited for; the task is recorded as unconfirmed.
            stop_robot_now(tr("shutdown.second_signal"), wait=False)
            return
        logging.getLogger("main").info("signal %d: shutting down", signum)
        stop.set()

    def on_console_close() -> None:
        # Windows ends the process seconds after the window closes: no grace period.
        stop.set()
        stop_robot_now(tr("shutdown.console_closing"))

    # Before the banner: whoever reads it as "started" may signal at once.
    install_shutdown_handlers(on_signal, on_console_close, finished)

    assert server.events is not None
    task_lines = ConsoleEvents(server.events, tr.lang)  # subscribed before the banner
    print_banner(server, tr.lang)
    task_lines.start()

    # Wait in slices: a signal delivered to another thread runs its Python handler only
    # when the main thread next wakes (an untimed wait may never wake).
    while not stop.wait(0.2):
        pass
    running = server.manager.running_task_id if server.manager else None
    if running:
        say(tr("shutdown.grace", task_id=running, grace=f"{settings.shutdown_grace:g}"))
    server.stop()
    task_lines.stop()  # after the tasks' last events, before the last line
    say(tr("shutdown.stopped"))
    finished.set()
    return 0


def run_local(args: argparse.Namespace) -> int:
    from robot import RobotLinkError, open_robot
    from tasks.commands import CommandsFileError, load_commands
    from tasks.reasons import failure, outcome_code, progress_message

    tr = Translator(args.console_lang)
    s = from_args(args)
    try:
        table = load_commands(s.commands_file)
    except CommandsFileError as exc:
        print(tr("start.cannot_start", error=error_text(exc, tr.lang)), file=sys.stderr)
        return 1
    try:
        with open(args.file, encoding="utf-8") as fh:
            cmd_type, params = table.validate(json.load(fh))
    except (OSError, ValueError) as exc:  # CommandError is a ValueError
        print(tr("run.cannot_use", file=args.file, error=error_text(exc, tr.lang)),
              file=sys.stderr)
        return 2
    try:
        robot = open_robot(s.robot, s.robot_protocol, wire_forms=table.wire_forms(),
                           commands_with_params=table.with_params(), baudrate=s.baudrate,
                           sim_speed=s.sim_speed, sim_transport=s.sim_transport,
                           robot_timeout=s.robot_timeout,
                           command_timeouts=s.command_timeouts_for(table.timeouts()),
                           settle_time=s.robot_settle, settle_timeout=s.robot_settle_timeout,
                           reply_rules=table.reply_rules())
    except RobotLinkError as exc:
        print(tr("start.cannot_start", error=error_text(exc, tr.lang)), file=sys.stderr)
        return 1
    try:
        robot.link.start(require_connection=True)
        outcome = robot.link.execute(cmd_type, params, on_progress=lambda e: print(
            f"  {e.get('done')}/{e.get('total')} {progress_message(e, tr.lang) or ''}",
            flush=True))
    except RobotLinkError as exc:
        print(tr("run.cannot_reach", error=error_text(exc, tr.lang)), file=sys.stderr)
        return 1
    finally:
        robot.stop()
    if outcome.success:
        head = {"success": True, "message": outcome.message}
    else:  # shaped as a server's stored failure: its code, its text in this console's language
        code, code_params = outcome_code(outcome)
        head = failure(code, tr.lang, **code_params)
    result = {**head, **table.result_data(cmd_type, outcome.data, outcome.items)}
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0 if outcome.success else 1


def list_ports_command(args: argparse.Namespace) -> int:
    from robot import list_ports

    ports = list_ports()
    if not ports:
        print(Translator(args.console_lang)("ports.none"))
    for port in ports:
        print(f"{port['device']}\t{port.get('description', '')}\t{port.get('hwid', '')}")
    return 0


def check_command(args: argparse.Namespace) -> int:
    """`check`: the settings `serve` would use, from the flags given before or after it."""
    from server.check import check

    settings = from_args(args, db=db_path(getattr(args, "db", None), DEFAULTS.db))
    ok = check(settings, Translator(args.console_lang),
               ping_timeout=_pick(getattr(args, "robot_timeout", None),
                                  constants.CHECK_PING_TIMEOUT_S),
               log_level=getattr(args, "log_level", None))
    return cli.EXIT_OK if ok else cli.EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    from console.terminal import make_console_safe

    global console_lang
    make_console_safe()  # first: nothing printed later may raise on a GBK/ASCII console
    argv = sys.argv[1:] if argv is None else argv
    lang = i18n.choose_language(_lang_flag(argv), configured=constants.LANG)
    console_lang = console_language(lang)
    args = build_parser(console_lang).parse_args(argv)
    args.lang, args.console_lang = lang, console_lang
    if args.command in (None, "serve", "run", "check", *LOCAL_COMMANDS):
        try:  # before the menus: they ask only what neither a flag nor the environment gave
            fill_from_environ(args)
        except i18n.CodedError as exc:  # settings.EnvSettingError: a variable's bad value
            print(error_text(exc, console_lang), file=sys.stderr)
            return 2
    if args.command in (*cli.COMMANDS, "check", *LOCAL_COMMANDS):
        warn_if_not_shown(lang, console_lang)
        # No menus, and quiet: their output is the answer.
        if args.command in LOCAL_COMMANDS:  # the server's database, without its lock
            local = users_cli if args.command in users_cli.COMMANDS else webhooks_cli
            return local.run(args, db_path(getattr(args, "db", None), DEFAULTS.db))
        return check_command(args) if args.command == "check" else cli.run(args)
    setup_logging(getattr(args, "log_level", None), getattr(args, "log_file", None),
                  getattr(args, "access_log", None))
    warn_if_not_shown(lang, console_lang)
    try:
        fill_from_menus(args, console_lang)
    except MenuExit as exc:
        return int(exc.code or 2)
    commands = {"serve": serve, "run": run_local, "ports": list_ports_command}
    return commands[args.command](args)


def _interactive(argv: list[str]) -> bool:
    """Started without a command (menus): likely a double-clicked window."""
    return not any(arg in ("serve", "run", "ports", "check", *cli.COMMANDS, *LOCAL_COMMANDS)
                   for arg in argv)


if __name__ == "__main__":
    from console.terminal import pause_before_exit

    code = main()
    pause_before_exit(code, interactive=_interactive(sys.argv[1:]), lang=console_lang)
    sys.exit(code)
