"""What clients read about sequences (docs/sequences.md): the document with its steps,
the summary that lists and SSE carry, the hold's text. Nothing here changes a sequence.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from i18n import t
from tasks.models import format_time
from tasks.sequences.active import Active
from tasks.store.seqstore import Fixit, SequenceRow, StepRow

# The hold codes and their texts (in the server's language, like a pause reason).
HOLD_TEXTS = {"step_failed": "seq.held_step_failed", "robot_fault": "seq.held_robot_fault",
              "interrupted": "seq.held_interrupted", "emergency_stop": "seq.held_emergency_stop"}
Mean = Callable[[str], "float | None"]


def hold_reason(code: str | None, params: dict[str, Any] | None, lang: str) -> str | None:
    if code is None:
        return None
    key = HOLD_TEXTS.get(code)
    if key is None:
        return code
    return t(key, lang, step=(params or {}).get("step", "?"),
             error=(params or {}).get("error", ""))


def _step_doc(s: StepRow) -> dict[str, Any]:
    return {"step": s.step, "label": s.label, "cmd_type": s.cmd_type, "params": s.params,
            "on_error": s.on_error, "retry": s.retry, "task_id": s.task_id,
            "task_ids": [a.task_id for a in s.attempts], "status": s.status,
            "attempts": s.started, "result": s.attempts[-1].result if s.attempts else None}


def document(row: SequenceRow, steps: list[StepRow], fixits: list[Fixit],
             active: Active | None, lang: str, mean: Mean) -> dict[str, Any]:
    """GET /sequences/<id>."""
    docs = [_step_doc(s) for s in steps]
    current = row.current_step
    if row.status == "pending":
        current = next((d["step"] for d in docs if d["status"] == "pending"), 1)
    live = active if active is not None and active.sequence_id == row.sequence_id else None
    ended = row.status in ("completed", "failed", "cancelled")
    held_at = current if row.status == "held" else None
    failed = [d["step"] for d in docs if d["status"] == "failed" and d["step"] != held_at
              and (ended or (current is not None and d["step"] < current))]
    done = sum(1 for d in docs if d["status"] in ("completed", "skipped")) + len(failed)
    fixit_at = []
    for f in fixits:
        # The step reached when it was asked for: the last one started before it (every
        # step's first task exists from the submit on, so "made before" says nothing).
        before = [s.step for s in steps for a in s.attempts
                  if a.started is not None and a.started <= f.submitted]
        fixit_at.append({"task_id": f.task_id, "cmd_type": f.cmd_type, "params": f.params,
                         "status": f.status, "at_step": max(before) if before else None})
    doc = _head(row, lang, current, live)
    doc.update({
        "steps": docs, "fixits": fixit_at, "failed_steps": failed,
        "progress": _progress(done, len(docs)),
        "estimated_end_time": None if ended else _eta(docs, current, mean),
    })
    return doc


def summary(row: SequenceRow, steps: list[StepRow], fixits: list[Fixit],
            active: Active | None, lang: str) -> dict[str, Any]:
    """The document without its steps and fix-its (lists, SSE)."""
    doc = document(row, steps, fixits, active, lang, lambda _c: None)
    for key in ("steps", "fixits", "estimated_end_time"):
        doc.pop(key)
    return doc


def live_summary(active: Active, lang: str) -> dict[str, Any]:
    """The summary of the sequence holding the robot, from memory alone: the runner
    publishes it at every step without reading the store."""
    hold_code, params = active.hold if active.hold else (None, None)
    return {
        "sequence_id": active.sequence_id, "name": active.name,
        "external_id": active.external_id, "on_error": active.on_error,
        "status": active.status, "current_step": active.current,
        "hold_code": hold_code if active.status == "held" else None,
        "hold_reason": hold_reason(hold_code, params, lang) if active.status == "held" else None,
        "confirm": _confirm(active.confirm), "failed_steps": active.failed_steps(),
        "progress": _progress(active.done_count(), len(active.steps)),
        "submit_time": format_time(active.submitted), "start_time": format_time(active.started),
        "end_time": None, **active.by,
    }


def ended_summary(active: Active, status: str, ended_at: float, lang: str) -> dict[str, Any]:
    doc = live_summary(active, lang)
    doc.update({"status": status, "current_step": None, "hold_code": None,
                "hold_reason": None, "confirm": None, "end_time": format_time(ended_at)})
    done = sum(1 for s in active.steps if s.status in ("completed", "skipped", "failed"))
    doc["failed_steps"] = [s.step for s in active.steps if s.status == "failed"]
    doc["progress"] = _progress(done, len(active.steps))
    return doc


def _head(row: SequenceRow, lang: str, current: int | None,
          live: Active | None) -> dict[str, Any]:
    held = row.status == "held"
    return {
        "sequence_id": row.sequence_id, "name": row.name, "external_id": row.external_id,
        "on_error": row.on_error, "status": row.status, "current_step": current,
        "hold_code": row.hold_code if held else None,
        "hold_reason": hold_reason(row.hold_code, row.hold_params, lang) if held else None,
        "confirm": _confirm(live.confirm) if live is not None else None,
        "submit_time": format_time(row.submitted), "start_time": format_time(row.started),
        "end_time": format_time(row.ended), **row.by,
        **({} if row.not_before is None else {"not_before": format_time(row.not_before)}),
    }


def _confirm(confirm: dict[str, Any] | None) -> dict[str, Any] | None:
    if confirm is None:
        return None
    return {"step": confirm["step"], "message": confirm["message"],
            "deadline": format_time(confirm.get("deadline"))}


def _progress(done: int, total: int) -> dict[str, Any]:
    return {"steps_done": done, "steps_total": total,
            "percent": round(100.0 * done / total, 1) if total else 100.0}


def _eta(docs: list[dict[str, Any]], current: int | None, mean: Mean) -> str | None:
    if current is None:
        return None
    left = 0.0
    for d in docs[current - 1:]:
        if d["status"] in ("completed", "skipped"):
            continue
        m = mean(d["cmd_type"])
        if m is None:
            return None
        left += m
    return format_time(time.time() + left)
