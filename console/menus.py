"""The interactive menus of `python main.py`, as in the user guide:

    选择模式 1（HTTP服务器模式）
    选择执行模式 2（队列模式）

They ask only what no flag gave, in the console's language, and offer the defaults
of settings.py; what they fill in becomes the Settings as a flag would (settings.from_args).
End of input exits naming the command that asks nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from i18n import Translator
from settings import DEFAULTS

SERVE_HINT = "python main.py serve --mode queue"
RUN_HINT = "python main.py run FILE.json"
DEFAULT_COMMAND_FILE = "SCAN_QR_CODE_command.json"


class MenuExit(SystemExit):
    pass


def ask(prompt: str, choices: dict[str, str], *, read: Callable[[str], str] = input,
        tr: Translator | None = None) -> str:
    """Ask until one of `choices` is typed; end of input exits naming the serve command."""
    tr = tr or Translator("en")
    while True:
        try:
            answer = read(prompt).strip()
        except EOFError:
            print("\n" + tr("menu.no_answer", hint=SERVE_HINT), file=sys.stderr)
            raise MenuExit(2) from None
        if answer in choices:
            return choices[answer]
        print(tr("menu.type_one_of", choices=", ".join(choices)))


def ask_robot_port(read: Callable[[str], str] = input, tr: Translator | None = None) -> str:
    """Offer the serial ports found; asked only when there are some (else the default)."""
    from robot import list_ports

    tr = tr or Translator("en")
    ports = list_ports()
    if not ports:
        return DEFAULTS.robot
    print(tr("menu.port_title"))
    choices = {"": DEFAULTS.robot, "0": "sim"}
    for n, port in enumerate(ports, 1):
        print(f"  {n}) {port['device']}  {port.get('description') or ''}")
        choices[str(n)] = port["device"]
    return ask(tr("menu.port_prompt", default=DEFAULTS.robot), choices, read=read, tr=tr)


def ask_robot_protocol(read: Callable[[str], str] = input,
                       tr: Translator | None = None) -> str:
    """Asked with the port: a lab robot's firmware rarely speaks this project's JSON."""
    tr = tr or Translator("en")
    print(tr("menu.protocol_title"))
    choices = {"": DEFAULTS.robot_protocol, "1": "json", "2": "text"}
    return ask(tr("menu.protocol_prompt", default=DEFAULTS.robot_protocol), choices,
               read=read, tr=tr)


def fill_from_menus(args: argparse.Namespace, lang: str = "en") -> None:
    tr = Translator(lang)
    interactive = args.command is None  # `serve`/`run` given: scripts, never ask
    if args.command is None:
        print(tr("menu.mode_title"))
        args.command = ask(tr("menu.mode_prompt"), {"1": "serve", "2": "run"}, tr=tr)
    if args.command == "serve" and args.mode is None:
        print(tr("menu.execution_title"))
        args.mode = ask(tr("menu.execution_prompt"), {"1": "sync", "2": "queue"}, tr=tr)
    if args.command in ("serve", "run") and args.robot is None and interactive:
        args.robot = ask_robot_port(tr=tr)
        if args.robot != "sim" and args.robot_protocol is None:
            args.robot_protocol = ask_robot_protocol(tr=tr)
    if args.command == "run" and getattr(args, "file", None) is None:
        try:
            args.file = input(tr("menu.file_prompt", default=DEFAULT_COMMAND_FILE)).strip() \
                or DEFAULT_COMMAND_FILE
        except EOFError:
            print("\n" + tr("menu.no_answer_run", hint=RUN_HINT), file=sys.stderr)
            raise MenuExit(2) from None
