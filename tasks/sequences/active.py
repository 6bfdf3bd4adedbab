"""The sequence that holds the robot, as its runner keeps it in memory, and the
operator's requests to it (recover, confirm, cancel) waiting for the runner.

The store has the history (tasks/store/seqstore.py); this has what the runner needs
between two steps without a read, and what a summary shows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from tasks.sequences.plan import CONFIRM


@dataclass
class StepState:
    step: int
    cmd_type: str
    params: dict[str, Any]
    rule: str  # hold, abort or continue: its own, else the sequence's
    retry: int
    task_id: str  # the latest attempt's
    label: str | None = None
    attempts: int = 0  # attempts started
    status: str = "pending"  # the latest attempt's, or "skipped"

    @property
    def is_confirm(self) -> bool:
        return self.cmd_type == CONFIRM


@dataclass
class Request:
    """An operator's request, answered by the runner (``done`` set)."""

    kind: str  # "recover", "confirm", "cancel"
    action: str | None = None  # recover's retry/skip/abort
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None
    # Who asked, on the sequence's row, and the audit row: committed with the first
    # change the runner makes for it (a refusal drops them).
    audit: list[Any] = field(default_factory=list)
    by: dict[str, str] = field(default_factory=dict)  # e.g. {"recovered_by": name}


@dataclass
class Active:
    sequence_id: str
    steps: list[StepState]
    status: str  # running or held (pending until its first step starts)
    current: int  # the step running, held at, or next (from 1)
    name: str | None = None
    external_id: str | None = None
    on_error: str = "hold"
    submitted: float = 0.0
    started: float | None = None
    hold: tuple[str, dict[str, Any]] | None = None  # (hold code, its params)
    confirm: dict[str, Any] | None = None  # {step, message, deadline} while it waits
    requests: list[Request] = field(default_factory=list)
    fixits: list[str] = field(default_factory=list)  # fix-it task ids not yet run
    cancel_requested: bool = False
    running_task: str | None = None  # the step or fix-it task on the robot now
    failed: list[int] = field(default_factory=list)  # steps passed over failed (continue)
    by: dict[str, str] = field(default_factory=dict)  # submitted_by... (the row's `by`)
    audit: list[Any] = field(default_factory=list)  # a request's rows, for the next commit
    cancel_audit: list[Any] = field(default_factory=list)  # a cancel's, for the end

    @property
    def step(self) -> StepState:
        return self.steps[self.current - 1]

    def pending_ids(self) -> list[str]:
        """Task ids of steps not yet started (from the current step on)."""
        return [s.task_id for s in self.steps[self.current - 1:] if s.status == "pending"]

    def failed_steps(self) -> list[int]:
        return list(self.failed)

    def done_count(self) -> int:
        # Every step before the current one is settled, none after it has run: O(1) on
        # the path between two steps, whatever the sequence's length.
        current = self.steps[self.current - 1].status in ("completed", "skipped")
        return self.current - 1 + (1 if current else 0)
