"""Change notification: an event log for SSE subscribers and a version for long-polls.

Publishing never blocks: each subscriber has a bounded queue, and one that falls
behind is dropped (it reconnects with Last-Event-ID) instead of slowing the
worker or other clients.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks.errors import TooManySubscribers


@dataclass(frozen=True)
class Event:
    id: int
    kind: str  # "task" (state change), "progress", "queue" (paused/resumed), "robot", "reset"
    data: dict[str, Any]


class Subscription:
    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: queue.Queue[Event] = queue.Queue(maxsize)
        self.dropped = False

    def get(self, timeout: float) -> Event | None:
        """The next event, or None after `timeout` seconds or once dropped."""
        if self.dropped and self._queue.empty():
            return None
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _offer(self, event: Event) -> bool:
        try:
            self._queue.put_nowait(event)
            return True
        except queue.Full:
            self.dropped = True
            return False

    def close(self) -> None:
        self._bus._unsubscribe(self)


class EventBus:
    def __init__(self, *, buffer_size: int = 1000, max_subscribers: int = 200,
                 subscriber_queue: int = 500) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # Ids start from the clock so that a Last-Event-ID from before a restart
        # is recognisably older than anything in the new buffer.
        self._next_id = int(time.time() * 1000)
        self._buffer: collections.deque[Event] = collections.deque(maxlen=buffer_size)
        self._subscribers: set[Subscription] = set()
        self._max_subscribers = max_subscribers
        self._subscriber_queue = subscriber_queue
        self.version = 0  # bumps on every event; /queue/status?since= waits on it
        # Called under the lock after each event: each must only set a flag (the webhook
        # sender's wake-up), never block or publish.
        self.listeners: list[Callable[[Event], None]] = []

    def publish(self, kind: str, data: dict[str, Any]) -> Event:
        with self._lock:
            self._next_id += 1
            event = Event(self._next_id, kind, data)
            self._buffer.append(event)
            self.version += 1
            dead = [s for s in self._subscribers if not s._offer(event)]
            for sub in dead:
                self._subscribers.discard(sub)
            self._changed.notify_all()
            for listener in self.listeners:
                listener(event)
        return event

    def subscribe(self, last_event_id: int | None = None) -> Subscription:
        with self._lock:
            if len(self._subscribers) >= self._max_subscribers:
                raise TooManySubscribers(self._max_subscribers)
            sub = Subscription(self, self._subscriber_queue)
            if last_event_id is not None:
                backlog = [e for e in self._buffer if e.id > last_event_id]
                oldest = self._buffer[0].id if self._buffer else self._next_id + 1
                if last_event_id < oldest - 1:
                    # Events were missed for good: tell the client to reload.
                    sub._offer(Event(self._next_id, "reset", {"reason": "events missed"}))
                for event in backlog[-self._subscriber_queue + 1:]:
                    sub._offer(event)
            self._subscribers.add(sub)
            return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def wait_for_change(self, since: int, timeout: float) -> int:
        """Block until version > since or timeout; return the current version."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.version <= since:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return self.version
