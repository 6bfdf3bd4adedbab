"""What the link keeps of one command's progress lines: O(1) per line, bounded.

The reader thread adds every progress line here (under the link's lock) and wakes
the command's thread with at most one queued token, however fast the robot talks;
the command's thread takes what is new in batches, at most every
``progress_interval`` seconds. So a robot writing 1,000 lines/s costs an append
per line, not a queue that grows behind a slow consumer, and the items (a task's
partial result) stay within ``MAX_ITEMS`` and ``MAX_ITEM_BYTES``; the surplus is
counted, never silently lost.
"""

from __future__ import annotations

from typing import Any

from robot.codecs import Reply

MAX_ITEMS = 10_000
MAX_ITEM_BYTES = 4 * 1024 * 1024


def item_limit(total: int | None) -> int:
    """How many items one command may keep: a sane multiple of what the robot said it
    would send, never more than MAX_ITEMS."""
    if isinstance(total, int) and total > 0:
        return min(MAX_ITEMS, max(4 * total, 1000))
    return MAX_ITEMS


class ProgressLog:
    """The progress of the command in flight. Not locked itself: the link calls
    ``add`` and ``take`` under its own lock."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.dropped = 0  # items beyond the bounds
        self.done: int | None = None
        self.total: int | None = None
        self.message: str | None = None
        # The message as the codec composed it (i18n.message), for the operator's language.
        self.text: dict[str, Any] | None = None
        self.lines = 0  # progress lines received
        self._bytes = 0
        self._taken_items = 0
        self._taken_lines = 0

    def add(self, reply: Reply, size: int) -> None:
        """One progress line of ``size`` bytes."""
        self.lines += 1
        if reply.total is not None:
            self.total = reply.total
        if reply.message is not None:
            self.message, self.text = reply.message, reply.text
        if reply.item is not None:
            if (len(self.items) >= item_limit(self.total)
                    or self._bytes + size > MAX_ITEM_BYTES):
                self.dropped += 1
            else:
                self.items.append(reply.item)
                self._bytes += size
        if reply.done is not None:
            self.done = reply.done
        elif reply.item is not None:
            # A protocol that does not count (one line per scanned bottle) counts items.
            self.done = len(self.items) + self.dropped

    @property
    def fresh(self) -> bool:
        """True if lines arrived since the last ``take``."""
        return self.lines > self._taken_lines

    def take(self) -> dict[str, Any]:
        """The state now and the items added since the last call (``first`` is the
        index of the first of them)."""
        new = self.items[self._taken_items:]
        # "item" (the latest) keeps the shape of one event per line for older callers.
        # "message" is English (or the robot's own words); "message_i18n", when the
        # codec composed it, is the same to render in the operator's language.
        event = {"done": self.done, "total": self.total, "message": self.message,
                 "message_i18n": self.text, "item": new[-1] if new else None,
                 "items": new, "first": self._taken_items,
                 "items_dropped": self.dropped, "lines": self.lines}
        self._taken_items = len(self.items)
        self._taken_lines = self.lines
        return event
