"""The interactive menus of `python main.py`, as in the user guide:

    选择模式 1（HTTP服务器模式）
    选择执行模式 2（队列模式）

They ask only what no flag gave, in the console's language, and offer the defaults
of settings.py; what they fill in becomes the Settings as a flag would (settings.from_args).
End of input exits naming the command that asks nothing, except at a question with a
default (the robot's port and protocol): there it takes the default, so the guide's two
answers piped in (`printf '1\n2\n' | python main.py`) still start the simulator.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable

from i18n import Translator
from settings import DEFAULTS

SERVE_HINT = "python main.py serve --mode queue"
RUN_HINT = "python main.py run FILE.json"
DEFAULT_COMMAND_FILE = "SCAN_QR_CODE_command.json"


class MenuExit(SystemExit):
    pass


# What may be typed at the port question besides a number: a URL pyserial opens
# (serial_for_url), a device path, a Windows COM port.
PORT_URL = re.compile(r"(socket|rfc2217|loop|spy|alt|hwgrep)://\S+", re.IGNORECASE)
PORT_PATH = re.compile(r"/\S+|COM\d+|\\\\\.\\\S+", re.IGNORECASE)


def ask(prompt: str, choices: dict[str, str], *, read: Callable[[str], str] = input,
        tr: Translator | None = None, default: str | None = None,
        other: Callable[[str], str | None] | None = None, hint: str | None = None) -> str:
    """Ask until one of `choices` is typed (or an answer `other` accepts). With a
    `default`, Enter or the end of input takes it; without, end of input exits naming
    the serve command. `hint`: what a wrong answer is told."""
    tr = tr or Translator("en")
    while True:
        try:
            answer = read(prompt).strip()
        except EOFError:
            if default is not None:
                return default
            print("\n" + tr("menu.no_answer", hint=SERVE_HINT), file=sys.stderr)
            raise MenuExit(2) from None
        if answer in choices:
            return choices[answer]
        if not answer and default is not None:
            return default
        taken = other(answer) if other is not None and answer else None
        if taken is not None:
            return taken
        if hint is None:
            hint = tr("menu.type_one_of", choices=", ".join(choices)) if default is None \
                else tr("menu.type_one_of_or_enter", choices=", ".join(choices),
                        default=default)
        print(hint)


def typed_port(answer: str) -> str | None:
    """A port typed at the port question: sim, a URL or a device path, else None."""
    if answer.lower() == "sim":
        return "sim"
    return answer if PORT_URL.fullmatch(answer) or PORT_PATH.fullmatch(answer) else None


def ask_robot_port(read: Callable[[str], str] = input, tr: Translator | None = None) -> str:
    """The serial ports found, by number, or any port typed in full (a device path, a
    socket:// or rfc2217:// URL: a robot behind a serial device server has no port
    here to list); asked even when none is found, Enter takes the default."""
    from robot import list_ports

    tr = tr or Translator("en")
    print(tr("menu.port_title"))
    choices = {"0": "sim"}
    for n, port in enumerate(list_ports(), 1):
        print(f"  {n}) {port['device']}  {port.get('description') or ''}")
        choices[str(n)] = port["device"]
    hint = tr("menu.port_hint", choices=", ".join(choices), default=DEFAULTS.robot)
    print(hint)

    def other(answer: str) -> str | None:
        port = typed_port(answer)
        if port is None:
            print(tr("menu.port_unknown", answer=answer))
        return port

    return ask(tr("menu.port_prompt", default=DEFAULTS.robot), choices, read=read, tr=tr,
               default=DEFAULTS.robot, other=other, hint=hint)


def ask_robot_protocol(read: Callable[[str], str] = input,
                       tr: Translator | None = None) -> str:
    """Asked with the port: a lab robot's firmware rarely speaks this project's JSON."""
    tr = tr or Translator("en")
    print(tr("menu.protocol_title"))
    choices = {"1": "json", "2": "text"}
    return ask(tr("menu.protocol_prompt", default=DEFAULTS.robot_protocol), choices,
               read=read, tr=tr, default=DEFAULTS.robot_protocol)


def fill_from_menus(args: argparse.Namespace, lang: str = "en") -> None:
    tr = Translator(lang)
    interactive = args.command is None  # `serve`/`run` given: scripts, never ask
    asks = interactive or (args.command == "serve" and args.mode is None) \
        or (args.command == "run" and getattr(args, "file", None) is None)
    _fill(args, tr, interactive)
    if asks and not (sys.stdin is not None and sys.stdin.isatty()):
        # Piped answers echo no Enter: the last prompt's line ends here, not in the
        # banner's first line.
        print()


def _fill(args: argparse.Namespace, tr: Translator, interactive: bool) -> None:
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
