"""Change notification: an event log for SSE subscribers and a version for long-polls.

Publishing never blocks: each subscriber has a bounded queue, and one that falls
behind is dropped (it reconnects with Last-Event-ID) instead of slowing the
worker or other clients. One publish wakes each subscriber once (an SSE stream: the
event streams' one thread, once for all of them).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.errors import TooManySubscribers


@dataclass(frozen=True)
class Event:
    id: int
    kind: str  # "task" (state change), "progress", "queue" (paused/resumed), "robot", "reset"
    data: dict[str, Any]
    _frame: bytes | None = field(default=None, init=False, compare=False, repr=False)

    def encoded(self, encode: Callable[[Event], bytes]) -> bytes:
        """The event as sent (an SSE frame): made by ``encode`` for the first subscriber
        that sends it and kept for every other one, so one event is encoded once however
        many clients listen. (Two first ones at once may both encode: the same bytes.)"""
        frame = self._frame
        if frame is None:
            frame = encode(self)
            object.__setattr__(self, "_frame", frame)  # a cache on a frozen dataclass
        return frame


class Subscription:
    """One subscriber's events, in order, at most ``maxsize`` waiting. A thread reads them
    with get(); the event streams' one thread (server/transport/streams.py) with take(),
    woken through ``notify``."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._events: collections.deque[Event] = collections.deque()
        self._maxsize = maxsize
        self._ready = threading.Condition(threading.Lock())
        self._waiting = False  # a thread is in get()
        self.dropped = False
        # Called under the bus's lock once an event is queued: it must only set a flag.
        self.notify: Callable[[], None] | None = None

    def get(self, timeout: float) -> Event | None:
        """The next event, or None after `timeout` seconds or once dropped."""
        with self._ready:
            # Waiting is said before the queue is looked at: an event offered meanwhile
            # is either seen here or notified (_offer reads the flag after appending).
            self._waiting = True
            try:
                if not self._events:
                    if self.dropped:
                        return None
                    self._ready.wait(timeout)
            finally:
                self._waiting = False
            return self._events.popleft() if self._events else None

    def take(self) -> list[Event]:
        """Every event queued now, without waiting."""
        popleft = self._events.popleft
        return [popleft() for _ in range(len(self._events))]

    @property
    def pending(self) -> int:
        return len(self._events)

    def _offer(self, event: Event) -> bool:
        if len(self._events) >= self._maxsize:
            self.dropped = True
            return False
        self._events.append(event)
        if self._waiting:  # only a thread in get(): a stream's subscription takes no lock
            with self._ready:
                self._ready.notify()
        if self.notify is not None:
            self.notify()
        return True

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
