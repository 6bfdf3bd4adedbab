"""The CLI's sequences (docs/sequences.md): `python main.py sequence [ID] [--recover
retry|skip|abort | --confirm | --cancel]`, and what `submit FILE --wait` shows while a
sequence file runs. client/cli.py wires them in and owns the exit codes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, Protocol

from client.api import RobotClient, RobotHTTPError
from console.text import pad, status_text
from i18n import Translator

ACTIONS = ("retry", "skip", "abort")
STATUSES = ("pending", "running", "held", "completed", "failed", "cancelled")
# Statuses a task never has; the task ones are console.text's.
EXTRA_STATUS_KEYS = {"held": "client.status.held", "skipped": "client.status.skipped"}


class TaskView(Protocol):
    """client.cli.ProgressView, as this module uses it."""

    prefix: str

    def update(self, task: dict[str, Any]) -> None: ...

    def say(self, text: str) -> None: ...


def status_word(tr: Translator, status: Any) -> str:
    key = EXTRA_STATUS_KEYS.get(status)
    return tr(key) if key else status_text(tr, status)


def add_parser(sub: Any, tr: Translator,
               client_flags: Callable[[argparse.ArgumentParser, Translator], None]) -> None:
    p = sub.add_parser("sequence", help=tr("args.sequence"), description=tr("args.sequence"))
    p.add_argument("sequence_id", nargs="?", help="a sequence id (default: list the newest)")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--recover", choices=ACTIONS,
                        help="a held sequence: run its step again, skip it, or abort")
    action.add_argument("--confirm", action="store_true",
                        help="answer the CONFIRM step the sequence waits at")
    action.add_argument("--cancel", action="store_true", help="cancel the sequence")
    p.add_argument("--status", choices=STATUSES, dest="sequence_status",
                   help="without ID: only sequences in this state")
    p.add_argument("--limit", type=int, default=20, help="without ID: at most this many")
    p.add_argument("--json", action="store_true", help="print the server's JSON")
    client_flags(p, tr)


def wants_action(args: argparse.Namespace) -> bool:
    return bool(args.recover or args.confirm or args.cancel)


def command(client: RobotClient, args: argparse.Namespace, tr: Translator) -> None:
    """Show one sequence (after the action asked for), or list the newest."""
    if not args.sequence_id:
        page = client.sequences(status=args.sequence_status, limit=args.limit)
        if args.json:
            _print(json.dumps(page, ensure_ascii=False, indent=2))
            return
        for seq in page.get("sequences") or []:
            _print(summary_row(seq, tr))
        if not page.get("sequences"):
            _print(tr("client.seq_none"))
        return
    seq_id = args.sequence_id
    if wants_action(args):
        if args.recover:
            reply = client.recover_sequence(seq_id, args.recover)
        elif args.confirm:
            reply = client.confirm_sequence(seq_id)
        else:
            reply = client.cancel_sequence(seq_id)
        if reply.get("message"):  # e.g. a cancel waiting for the robot's STOP
            _print(tr("client.seq_reply", sequence_id=seq_id, message=reply["message"]))
        # The document, or the document under "sequence" with the reply's code and message.
        reply = reply["sequence"] if isinstance(reply.get("sequence"), dict) else reply
    else:
        reply = {}
    seq = reply if "steps" in reply else client.sequence(seq_id)
    _print(json.dumps(seq, ensure_ascii=False, indent=2) if args.json
           else "\n".join(describe(seq, tr)))


def summary_row(seq: dict[str, Any], tr: Translator) -> str:
    progress = seq.get("progress") or {}
    return (f"{seq.get('sequence_id')}  {pad(status_word(tr, seq.get('status')), 9)}  "
            + tr("client.seq_steps_done", done=progress.get("steps_done"),
                 total=progress.get("steps_total"))
            + f"  {seq.get('submit_time') or ''}  {_name(seq)}").rstrip()


def describe(seq: dict[str, Any], tr: Translator) -> list[str]:
    """A sequence for people: its state, what it waits for, a table of its steps."""
    seq_id, progress = seq.get("sequence_id"), seq.get("progress") or {}
    lines = [tr("client.seq_line", sequence_id=seq_id, status=status_word(tr, seq.get("status")),
                done=progress.get("steps_done"), total=progress.get("steps_total"),
                percent=progress.get("percent")) + (f"  {_name(seq)}" if _name(seq) else ""),
             tr("client.task_times", submitted=seq.get("submit_time"),
                started=seq.get("start_time"), ended=seq.get("end_time"))]
    lines += waiting_lines(seq, tr)
    if seq.get("failed_steps"):
        lines.append(tr("client.seq_failed_steps",
                        steps=", ".join(str(k) for k in seq["failed_steps"])))
    columns = [(tr("client.seq_col_step"), 5), (tr("client.seq_col_label"), 20),
               (tr("client.seq_col_command"), 14), (tr("client.seq_col_status"), 10),
               (tr("client.seq_col_attempts"), 0)]
    lines.append("  " + "".join(pad(title, width) + " " for title, width in columns).rstrip())
    current = seq.get("current_step")
    for step in seq.get("steps") or []:
        cells = [str(step.get("step")), step.get("label") or "-", step.get("cmd_type") or "",
                 status_word(tr, step.get("status")), str(step.get("attempts", 0))]
        row = "".join(pad(cell, width) + " " for cell, (_, width) in zip(cells, columns,
                                                                        strict=True))
        lines.append(("> " if step.get("step") == current else "  ") + row.rstrip())
    for fixit in seq.get("fixits") or []:
        lines.append(tr("client.seq_fixit", task_id=fixit.get("task_id"),
                        cmd_type=fixit.get("cmd_type"), step=fixit.get("at_step"),
                        status=status_word(tr, fixit.get("status"))))
    return lines


def waiting_lines(seq: dict[str, Any], tr: Translator) -> list[str]:
    """What the sequence waits for a person to do (a decision, a confirmation), if any."""
    seq_id, step = seq.get("sequence_id"), _step(seq, seq.get("current_step"))
    if seq.get("status") == "held":
        return [tr("client.seq_held", step=seq.get("current_step"), what=_what(step),
                   reason=seq.get("hold_reason") or "", code=seq.get("hold_code")),
                tr("client.seq_held_hint", sequence_id=seq_id)]
    confirm = seq.get("confirm")
    if confirm:
        return [tr("client.seq_confirm", step=confirm.get("step"), message=confirm.get("message"))
                + (tr("client.seq_confirm_deadline", deadline=confirm["deadline"])
                   if confirm.get("deadline") else ""),
                tr("client.seq_confirm_hint", sequence_id=seq_id)]
    return []


def final_lines(seq: dict[str, Any], tr: Translator) -> list[str]:
    """The end of `submit --wait`: the final status (or the hold), the failed steps."""
    progress = seq.get("progress") or {}
    lines = [tr("client.seq_final", sequence_id=seq.get("sequence_id"),
                status=status_word(tr, seq.get("status")),
                done=progress.get("steps_done"), total=progress.get("steps_total"))]
    for step in seq.get("steps") or []:
        if step.get("status") == "failed":
            message = (step.get("result") or {}).get("message") or ""
            lines.append(tr("client.seq_step_failed", step=step.get("step"), what=_what(step),
                            message=message).rstrip(": "))
    return lines + waiting_lines(seq, tr)


def error_lines(exc: RobotHTTPError, tr: Translator) -> list[str]:
    """A refused sequence's errors, one line a step (422 sequence_invalid)."""
    errors = exc.body.get("errors") if isinstance(exc.body, dict) else None
    return [tr("client.seq_error", step=e.get("step"), message=e.get("message"))
            if e.get("step") is not None else f"  {e.get('message')}"
            for e in errors or [] if isinstance(e, dict)]


class SequenceView:
    """`submit --wait` of a sequence: "step k of n", then the running step's progress."""

    def __init__(self, view: TaskView, tr: Translator) -> None:
        self.view = view
        self.tr = tr
        self.said: Any = None

    def update(self, seq: dict[str, Any], task: dict[str, Any] | None) -> None:
        k = seq.get("current_step")
        step = _step(seq, k)
        if step is None:
            return
        if seq.get("confirm") or seq.get("status") == "held":
            said = (k, seq.get("status"), bool(seq.get("confirm")))
            if said != self.said:  # once per wait, not every second
                self.said = said
                if seq.get("confirm"):
                    self.view.say("\n".join(waiting_lines(seq, self.tr)))
            return
        self.said = None
        self.view.prefix = self.tr("client.seq_step", step=k,
                                   total=len(seq.get("steps") or []), what=_what(step))
        if task is not None:
            self.view.update(task)


def _step(seq: dict[str, Any], k: Any) -> dict[str, Any] | None:
    steps = seq.get("steps") or []
    return steps[k - 1] if isinstance(k, int) and 0 < k <= len(steps) else None


def _what(step: dict[str, Any] | None) -> str:
    if not step:
        return "?"
    label, cmd_type = step.get("label"), step.get("cmd_type") or "?"
    return f"{label} ({cmd_type})" if label else cmd_type


def _name(seq: dict[str, Any]) -> str:
    name, external = seq.get("name"), seq.get("external_id")
    return " ".join(([json.dumps(name, ensure_ascii=False)] if name else [])
                    + ([f"[{external}]"] if external else []))


def _print(text: str) -> None:
    print(text, flush=True)
