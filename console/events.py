"""One console line per task event, in the operator's language:

    [12:03:05] task task_20250101_120305_a1b2c3 queued: SCAN_QRCODE rack A
    [12:03:05] 任务 task_20250101_120305_a1b2c3 已排队: SCAN_QRCODE 样品架 A

The console shows these, the banner and warnings; the rest of the log (and every
request) goes to the log file. The lines come from the server's event stream (the
one /events serves), read by one thread here: a burst of tasks never waits on the
console, and a reporter that falls behind subscribes again and says what it missed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from console.text import say
from i18n import Translator

WAIT_S = 0.2  # how soon stop() is noticed
# An event's line waits this long for the events right behind it: the console's turn
# with the GIL comes after a task's end has reached its clients, not during it.
LINGER_S = 0.005
REASON_CHARS = 160  # a failure's reason on one console line, not a transcript
FINAL = {"completed": "events.task_completed", "failed": "events.task_failed",
         "cancelled": "events.task_cancelled"}


class Event(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def kind(self) -> str: ...

    @property
    def data(self) -> dict[str, Any]: ...


class Subscription(Protocol):
    dropped: bool

    def get(self, timeout: float) -> Event | None: ...

    def close(self) -> None: ...


class EventSource(Protocol):
    """What the task layer's event bus offers (tasks/queue/events.py), named here so
    that the console needs nothing of the task layer."""

    def subscribe(self, last_event_id: int | None = None) -> Subscription: ...


def task_line(tr: Translator, doc: dict[str, Any], *, requeued: bool = False,
              now: float | None = None) -> str | None:
    """The line for one task event, or None for a state the console does not show."""
    status = doc.get("status")
    if status == "pending":
        key = "events.task_requeued" if requeued else "events.task_queued"
    elif status == "running":
        key = "events.task_started"
    elif status in FINAL:
        key = FINAL[status]
    else:
        return None
    params = doc.get("params")
    rack = params.get("rack") if isinstance(params, dict) else None
    result = doc.get("result")
    reason = " ".join(str(result.get("message") or "").split()) \
        if isinstance(result, dict) else ""
    if len(reason) > REASON_CHARS:
        reason = reason[:REASON_CHARS - 1] + "…"
    seconds = doc.get("duration_s")
    # Who, once people are named (docs/security.md): not for an open server's anonymous.
    by = doc.get("cancelled_by") if status == "cancelled" else doc.get("submitted_by")
    who = tr("events.by", name=by) if by and by != "anonymous" else ""
    return tr(key, time=time.strftime("%H:%M:%S", time.localtime(now)), who=who,
              task_id=doc.get("task_id", "?"), command=doc.get("cmd_type", "?"),
              where=tr("events.rack", rack=rack) if rack not in (None, "") else "",
              seconds=f"{seconds:.1f}" if isinstance(seconds, (int, float)) else "?",
              reason=reason or "?")


class ConsoleEvents:
    """The thread that prints `task_line` for each task event of `source`."""

    def __init__(self, source: EventSource, lang: str,
                 write: Callable[[str], None] = say) -> None:
        self.source, self.tr, self.write = source, Translator(lang), write
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running: set[str] = set()  # started and not yet final: a pending again is a requeue
        self._sequences: dict[str, tuple[Any, ...]] = {}  # what was last shown of each
        # Subscribed here, printed from start(): the banner first, and no event missed.
        self._sub = source.subscribe()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="console-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the events already received are printed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        last: int | None = None
        sub = self._sub
        try:
            while True:
                event = sub.get(WAIT_S)
                if event is None:
                    if self._stop.is_set():
                        return
                    if sub.dropped:  # fell behind: from where we were, the bus says if lost
                        sub.close()
                        sub = self._sub = self.source.subscribe(last)
                    continue
                batch = [event]
                deadline = time.monotonic() + LINGER_S
                while (more := sub.get(max(0.0, deadline - time.monotonic()))) is not None:
                    batch.append(more)
                for each in batch:
                    last = each.id
                    self._show(each)
        finally:
            sub.close()

    def _show(self, event: Event) -> None:
        if event.kind == "reset":
            self.write(self.tr("events.missed"))
            return
        if event.kind == "sequence":
            self._show_sequence(event.data)
            return
        if event.kind != "task":
            return
        doc = event.data
        task_id = str(doc.get("task_id"))
        status = doc.get("status")
        requeued = status == "pending" and task_id in self._running
        if status == "running":
            self._running.add(task_id)
        elif status != "pending" or requeued:
            self._running.discard(task_id)
        line = task_line(self.tr, doc, requeued=requeued)
        if line is not None:
            self.write(line)

    def _show_sequence(self, doc: dict[str, Any]) -> None:
        """A sequence's line when what an operator must know changed: queued, held (and
        why), waiting for a confirmation, ended."""
        sequence_id = str(doc.get("sequence_id"))
        status, confirm = doc.get("status"), doc.get("confirm")
        shown = (status, doc.get("hold_code"), bool(confirm))
        if self._sequences.get(sequence_id) == shown:
            return
        self._sequences[sequence_id] = shown
        line = sequence_line(self.tr, doc)
        if status in SEQUENCE_FINAL:
            self._sequences.pop(sequence_id, None)
        if line is not None:
            self.write(line)


SEQUENCE_FINAL = {"completed": "events.sequence_completed", "failed": "events.sequence_failed",
                  "cancelled": "events.sequence_cancelled"}


def sequence_line(tr: Translator, doc: dict[str, Any], now: float | None = None) -> str | None:
    """The line for a sequence's event, or None for a change the console does not show
    (its steps' own lines say the rest)."""
    status, confirm = doc.get("status"), doc.get("confirm")
    progress = doc.get("progress")
    if not isinstance(progress, dict):
        progress = {}
    params = {"time": time.strftime("%H:%M:%S", time.localtime(now)),
              "sequence_id": doc.get("sequence_id", "?"), "name": doc.get("name") or "",
              "step": doc.get("current_step") or "?", "total": progress.get("steps_total", "?"),
              "reason": " ".join(str(doc.get("hold_reason") or "?").split())[:REASON_CHARS]}
    if status == "pending":
        return tr("events.sequence_queued", **params)
    if status == "held":
        return tr("events.sequence_held", **params)
    if status == "running" and isinstance(confirm, dict):
        message = " ".join(str(confirm.get("message") or "").split())[:REASON_CHARS]
        return tr("events.sequence_confirm", **params, message=message)
    if status in SEQUENCE_FINAL:
        return tr(SEQUENCE_FINAL[status], **params)
    return None
