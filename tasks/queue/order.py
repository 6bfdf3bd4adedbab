"""An operator's move of a waiting item, computed: the queue as units (a task, or a
queued sequence's steps as one block), the unit placed, and the new keys. No I/O, no
lock: tasks/queue/shaping.py takes a snapshot, calls this and commits the result.

The new keys are the old keys of the same tasks, dealt out again in the new order: a
move changes nothing but the order, and a task submitted meanwhile (a larger seq) still
comes after all of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Unit:
    id: str  # a task id, or a sequence id
    tasks: list[str] = field(default_factory=list)
    movable: bool = True  # False: the steps of the sequence holding the robot


def units(order: Iterable[str], sequence_of: dict[str, str], queued: set[str]) -> list[Unit]:
    """The pending tasks in ``order`` as units: a queued sequence's steps are one (its
    first step's place); the sequence holding the robot is one that does not move."""
    out: list[Unit] = []
    by_id: dict[str, Unit] = {}
    for task_id in order:
        sequence_id = sequence_of.get(task_id)
        unit_id = task_id if sequence_id is None else sequence_id
        unit = by_id.get(unit_id)
        if unit is None:
            unit = Unit(unit_id, movable=sequence_id is None or sequence_id in queued)
            by_id[unit_id] = unit
            out.append(unit)
        unit.tasks.append(task_id)
    return out


def place(line: list[Unit], item: str, *, position: int | None = None,
          before: str | None = None, after: str | None = None) -> list[Unit]:
    """``line`` with unit ``item`` moved: to queue position ``position`` (counted in
    tasks, from 1; inside a block it lands before the block, past the end at the end),
    or before or after the unit ``before``/``after``. The anchors are checked by the
    caller (they are units of ``line`` other than ``item``)."""
    moved = next(u for u in line if u.id == item)
    rest = [u for u in line if u.id != item]
    if before is not None:
        at = next(i for i, u in enumerate(rest) if u.id == before)
    elif after is not None:
        at = next(i for i, u in enumerate(rest) if u.id == after) + 1
    else:
        assert position is not None and position >= 1
        at, ahead = len(rest), 0
        for i, unit in enumerate(rest):
            ahead += len(unit.tasks)
            if ahead > position - 1:  # this unit holds position: before it
                at = i
                break
    return [*rest[:at], moved, *rest[at:]]


def new_keys(line: list[Unit], keys: dict[str, int]) -> dict[str, int]:
    """The tasks' old keys dealt out in the order of ``line``: {task id: key} for the
    tasks whose key changes."""
    order = [task_id for unit in line for task_id in unit.tasks]
    dealt = sorted(keys[task_id] for task_id in order)
    return {task_id: key for task_id, key in zip(order, dealt, strict=True)
            if keys[task_id] != key}


def position_of(line: list[Unit], item: str) -> int:
    """The queue position (from 1, in tasks) of unit ``item``'s first task."""
    ahead = 0
    for unit in line:
        if unit.id == item:
            return ahead + 1
        ahead += len(unit.tasks)
    raise KeyError(item)
