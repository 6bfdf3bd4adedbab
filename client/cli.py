"""main.py's client commands: they talk HTTP to a running server (standard library only).

    python main.py submit FILE.json [--wait] [--timeout S]   # queue a command or sequence file
    python main.py status [TASK_ID]                          # one task, or the queue
    python main.py cancel TASK_ID
    python main.py tasks [--status S]
    python main.py sequence [ID] [--recover retry|skip|abort | --confirm | --cancel]

(`python main.py check`, run on the lab PC before a first start, is server/check.py.)

Server address: --url, else $ROBOT_SERVER_URL, else http://127.0.0.1:8090.
API token: --token, else $ROBOT_API_TOKEN.

Exit codes (stable: scripts may rely on them):
    0  success; with --wait: the task (or sequence) completed
    1  the task or sequence failed (with --wait); `check`: the configuration is not usable
    2  usage error or unusable command file
    3  the task or sequence was cancelled (with --wait)
    4  timed out waiting (the task or sequence is still pending or running on the server)
    5  the server could not be reached (after retries)
    6  the server refused the request (HTTP error; its message is printed)
    7  the sequence is held (with --wait): it waits for an operator's recover
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

import constants
import i18n
from client import sequences
from client.api import (
    DEFAULT_URL,
    RobotClient,
    RobotClientError,
    RobotConnectionError,
    RobotHTTPError,
    RobotTimeoutError,
)
from console.text import (
    console_language,
    fit,
    lang_flag,
    pad,
    status_text,
    warn_if_not_shown,
)
from i18n import Translator

COMMANDS = ("submit", "status", "cancel", "tasks", "sequence")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_TIMEOUT = 4
EXIT_CONNECTION = 5
EXIT_HTTP = 6
EXIT_HELD = 7
EXIT_BY_STATUS = {"completed": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED,
                  "held": EXIT_HELD}
STATUSES = ("pending", "running", "completed", "failed", "cancelled")


class LocalizedClient(RobotClient):
    """Asks the server for its messages in the CLI's language (Accept-Language)."""

    def __init__(self, *args: Any, lang: str, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.lang = lang

    def request(self, method: str, path: str, body: Any = None, *,
                headers: dict[str, str] | None = None,
                timeout: float | None = None) -> tuple[int, dict[str, str], Any]:
        return super().request(method, path, body, timeout=timeout,
                               headers={"Accept-Language": self.lang, **(headers or {})})


# -- parsers -------------------------------------------------------------------------------
def _client_flags(p: argparse.ArgumentParser, tr: Translator) -> None:
    p.add_argument("--url", help=f"server URL (default $ROBOT_SERVER_URL or {DEFAULT_URL})")
    p.add_argument("--token", help="API token (default $ROBOT_API_TOKEN)")
    p.add_argument("--reason", help="why, recorded in the server's audit trail")
    p.add_argument("--request-timeout", type=float, default=10.0,
                   help="seconds per HTTP request (default 10)")
    lang_flag(p, tr)


def add_parsers(sub: Any, tr: Translator | None = None) -> None:
    """Add the client subcommands (COMMANDS) to main.py's subparsers."""
    tr = tr or Translator("en")
    submit = sub.add_parser("submit", help=tr("args.submit"),
                            description=tr("args.submit_exit_codes"))
    submit.add_argument("file", help=tr("args.command_file"))
    submit.add_argument("--wait", action="store_true",
                        help="wait for the task (or sequence), show its progress, exit by "
                             "its final status")
    submit.add_argument("--timeout", type=float, default=600.0,
                        help="with --wait: give up after this many seconds (default 600)")
    submit.add_argument("--retries", type=int, default=4,
                        help="resend on connection errors, same Idempotency-Key (default 4)")
    _client_flags(submit, tr)

    status = sub.add_parser("status", help=tr("args.status"), description=tr("args.status"))
    status.add_argument("task_id", nargs="?", help="a task id (default: the queue)")
    status.add_argument("--json", action="store_true", help="print the server's JSON")
    _client_flags(status, tr)

    cancel = sub.add_parser("cancel", help=tr("args.cancel"), description=tr("args.cancel"))
    cancel.add_argument("task_id")
    _client_flags(cancel, tr)

    tasks = sub.add_parser("tasks", help=tr("args.tasks"), description=tr("args.tasks"))
    tasks.add_argument("--status", choices=STATUSES, dest="task_status",
                       help="only tasks in this state")
    tasks.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    tasks.add_argument("--json", action="store_true", help="print the server's JSON")
    _client_flags(tasks, tr)
    sequences.add_parser(sub, tr, _client_flags)


def build_parser() -> argparse.ArgumentParser:
    """Standalone parser (`python -m client.cli ...`), the same client subcommands as
    main.py's."""
    parser = argparse.ArgumentParser(prog="python -m client.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser


def run(args: argparse.Namespace) -> int:
    """Run one of COMMANDS; returns the exit code."""
    lang = getattr(args, "console_lang", None)
    if lang is None:  # `python -m client.cli`: main.py has not chosen it
        chosen = i18n.choose_language(getattr(args, "lang", None), configured=constants.LANG)
        lang = console_language(chosen)
        warn_if_not_shown(chosen, lang)
    tr = Translator(lang)
    client = LocalizedClient(args.url or os.environ.get("ROBOT_SERVER_URL") or DEFAULT_URL,
                             token=args.token or os.environ.get("ROBOT_API_TOKEN") or None,
                             timeout=args.request_timeout,
                             retries=max(0, getattr(args, "retries", 4)), lang=lang)
    client.reason = args.reason
    handler = {"submit": submit, "status": status, "cancel": cancel, "tasks": list_tasks,
               "sequence": sequence}
    try:
        return handler[args.command](client, args, tr)
    except RobotConnectionError as exc:
        _err(tr("client.cannot_reach", url=client.url, error=exc))
        return EXIT_CONNECTION
    except RobotHTTPError as exc:
        _err(tr("client.refused", message=exc.message, detail=_http_detail(exc)))
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


def _http_detail(exc: RobotHTTPError) -> str:
    """``HTTP 409, task_finished``: the status, and the server's machine code if any."""
    code = exc.body.get("code") if isinstance(exc.body, dict) else None
    return f"HTTP {exc.status}" + (f", {code}" if isinstance(code, str) and code else "")


# -- client commands -------------------------------------------------------------------------
def submit(client: RobotClient, args: argparse.Namespace, tr: Translator) -> int:
    try:
        with open(args.file, encoding="utf-8") as fh:
            command = json.load(fh)
    except (OSError, ValueError) as exc:
        _err(tr("client.cannot_use", file=args.file, error=exc))
        return EXIT_USAGE
    if not isinstance(command, dict):
        _err(tr("client.cannot_use", file=args.file, error=tr("client.not_an_object")))
        return EXIT_USAGE
    is_sequence = "steps" in command  # a sequence file (docs/sequences.md)
    try:
        accepted = (client.submit_sequence if is_sequence else client.submit)(command)
    except RobotHTTPError as exc:
        _err(tr("client.not_queued", message=exc.message, detail=_http_detail(exc)))
        for line in sequences.error_lines(exc, tr) if is_sequence else ():
            _err(line)
        return EXIT_USAGE if exc.status in (400, 413, 415, 422) else EXIT_HTTP
    if is_sequence:
        return _submitted_sequence(client, args, tr, accepted)
    task_id = accepted["task_id"]
    note = tr("client.replayed") if accepted.get("replayed") else ""
    if not args.wait:
        _err(tr("client.queued_size", task_id=task_id, note=note, size=accepted.get("queue_size"))
             + (f"; {accepted['warning']}" if accepted.get("warning") else ""))
        print(task_id, flush=True)
        return EXIT_OK
    _err(tr("client.queued", task_id=task_id, note=note))
    if accepted.get("warning"):
        _err(tr("client.warning", warning=accepted["warning"]))
    view = ProgressView(sys.stderr, tr)
    try:
        task = client.wait(task_id, timeout=args.timeout, on_update=view.update)
    except RobotTimeoutError as exc:
        view.close()
        _err(tr("client.wait_timeout", timeout=f"{args.timeout:g}", task_id=task_id,
                status=status_text(tr, (exc.task or {}).get("status", "unknown"))))
        return EXIT_TIMEOUT
    view.close()
    _print_json(task)
    result = task.get("result") or {}
    duration = task.get("duration_s")
    _err(tr("client.final", task_id=task_id, status=status_text(tr, task["status"]))
         + (tr("client.duration", seconds=f"{duration:.2f}")
            if isinstance(duration, (int, float)) else "")
         + (f": {result.get('message')}" if result.get("message") else ""))
    return EXIT_BY_STATUS.get(task["status"], EXIT_FAILED)


def _submitted_sequence(client: RobotClient, args: argparse.Namespace, tr: Translator,
                        accepted: dict[str, Any]) -> int:
    seq_id, steps = accepted["sequence_id"], len(accepted.get("task_ids") or [])
    note = tr("client.seq_replayed") if accepted.get("replayed") else ""
    _err(tr("client.seq_queued", sequence_id=seq_id, note=note, steps=steps,
            size=accepted.get("queue_size"))
         + (f"; {accepted['warning']}" if accepted.get("warning") else ""))
    if not args.wait:
        print(seq_id, flush=True)
        return EXIT_OK
    view = ProgressView(sys.stderr, tr)
    try:
        seq = client.wait_sequence(seq_id, timeout=args.timeout,
                                   on_update=sequences.SequenceView(view, tr).update)
    except RobotTimeoutError as exc:
        view.close()
        _err(tr("client.seq_wait_timeout", timeout=f"{args.timeout:g}", sequence_id=seq_id,
                status=sequences.status_word(tr, (exc.task or {}).get("status", "unknown"))))
        return EXIT_TIMEOUT
    view.close()
    _print_json(seq)
    _err("\n".join(sequences.final_lines(seq, tr)))
    return EXIT_BY_STATUS.get(seq["status"], EXIT_FAILED)


def sequence(client: RobotClient, args: argparse.Namespace, tr: Translator) -> int:
    if not args.sequence_id and sequences.wants_action(args):
        _err(tr("client.seq_needs_id"))
        return EXIT_USAGE
    sequences.command(client, args, tr)
    return EXIT_OK


def status(client: RobotClient, args: argparse.Namespace, tr: Translator) -> int:
    if args.task_id:
        task = client.task(args.task_id)
        if args.json:
            _print_json(task)
            return EXIT_OK
        progress = task.get("progress") or {}
        lines = [tr("client.task_line", task_id=task["task_id"],
                    status=status_text(tr, task["status"]), cmd_type=task.get("cmd_type")),
                 tr("client.task_times", submitted=task.get("submit_time"),
                    started=task.get("start_time"), ended=task.get("end_time"))]
        if progress.get("total"):
            lines.append(tr("client.task_progress", done=progress.get("done"),
                            total=progress.get("total"),
                            message=progress.get("message") or "").rstrip())
        if task.get("queue_position"):
            lines.append(tr("client.task_position", position=task["queue_position"])
                         + (tr("client.task_expected", time=task["estimated_start_time"])
                            if task.get("estimated_start_time") else ""))
        if task.get("result") is not None:
            lines.append(tr("client.task_result",
                            result=json.dumps(task["result"], ensure_ascii=False)))
        print("\n".join(lines), flush=True)
        return EXIT_OK
    queue = client.queue_status()
    if args.json:
        _print_json(queue)
        return EXIT_OK
    paused = tr("client.queue_paused", reason=queue.get("pause_reason")) if queue.get("paused") \
        else tr("client.queue_running")
    print(tr("client.queue_summary", state=paused, pending=queue.get("pending_tasks", 0),
             running=queue.get("running_task") or tr("client.queue_nothing"),
             total=queue.get("total_tasks"), completed=queue.get("completed_tasks"),
             failed=queue.get("failed_tasks"), cancelled=queue.get("cancelled_tasks", 0)),
          flush=True)
    for task in queue.get("recent_tasks") or []:
        print(f"  {task['task_id']}  {pad(status_text(tr, task['status']), 9)}  "
              f"{task['cmd_type']:<12}  {task.get('submit_time') or ''}", flush=True)
    return EXIT_OK


def cancel(client: RobotClient, args: argparse.Namespace, tr: Translator) -> int:
    reply = client.cancel(args.task_id)
    print(tr("client.cancel_reply", task_id=args.task_id,
             status=status_text(tr, reply.get("status")), message=reply.get("message")),
          flush=True)
    return EXIT_OK


def list_tasks(client: RobotClient, args: argparse.Namespace, tr: Translator) -> int:
    page = client.tasks(status=args.task_status, limit=args.limit)
    if args.json:
        _print_json(page)
        return EXIT_OK
    for task in page.get("tasks") or []:
        duration = task.get("duration_s")
        print(f"{task['task_id']}  {pad(status_text(tr, task['status']), 9)}  "
              f"{task['cmd_type']:<12}  {task.get('submit_time') or ''}"
              + ("  " + tr("client.seconds", seconds=f"{duration:.2f}")
                 if isinstance(duration, (int, float)) else ""),
              flush=True)
    print(tr("client.page", count=page.get("count"), total=page.get("total")), flush=True)
    return EXIT_OK


class ProgressView:
    """A progress bar on a terminal; one line per change when the output is a log/pipe."""

    WIDTH = 30

    def __init__(self, stream: TextIO, tr: Translator | None = None) -> None:
        self.stream = stream
        self.tr = tr or Translator("en")
        self.tty = stream.isatty()
        self.last: tuple[Any, ...] | None = None
        self.drawn = False
        self.prefix = ""  # a sequence's "step k of n: "

    def update(self, task: dict[str, Any]) -> None:
        progress = task.get("progress") or {}
        done, total = progress.get("done"), progress.get("total")
        state = (self.prefix, task.get("status"), done, total, progress.get("message"))
        if state == self.last:
            return
        self.last = state
        status = status_text(self.tr, task.get("status"))
        if isinstance(done, int) and isinstance(total, int) and total > 0:
            fraction = min(max(done / total, 0.0), 1.0)
            filled = int(fraction * self.WIDTH)
            text = (f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {fraction * 100:5.1f}% "
                    f"{done}/{total} {status} {progress.get('message') or ''}")
        else:
            position = task.get("queue_position")
            text = status + (self.tr("client.progress_position", position=position)
                             if position else "")
        text = self.prefix + text
        if self.tty:
            self.stream.write("\r" + fit(text, 79))
            self.drawn = True
        else:
            self.stream.write(text.rstrip() + "\n")
        self.stream.flush()

    def say(self, text: str) -> None:
        """A line of its own, between progress lines."""
        self.close()
        self.stream.write(text + "\n")
        self.stream.flush()
        self.last = None

    def close(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


if __name__ == "__main__":
    sys.exit(main())
