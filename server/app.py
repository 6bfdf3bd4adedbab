"""The application objects a request handler may reach, held by the HTTP server."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from server.clock import clock_synchronized
from server.guard.identity import Identity
from server.metrics import Metrics
from server.webhooks.sender import WebhookSender
from settings import Settings
from tasks.commands import CommandTable
from tasks.queue.events import EventBus
from tasks.queue.manager import TaskManager
from tasks.sequences.service import SequenceService
from tasks.store.principals import PrincipalStore
from tasks.worker import Worker

log = logging.getLogger("server.app")
# A probe is one small committed write (an fsync): often enough that a disk that filled
# up or was remounted read-only shows within seconds, rare enough that a monitor
# polling /health many times a second does not turn into a stream of writes.
STORE_PROBE_INTERVAL_S = 5.0


class StoreHealth:
    """Whether the task database takes writes, as /health and /metrics report it.

    The answer is the outcome of the store's most recent write: every write (a submit,
    a transition, this probe) sets or clears ``store.write_error``. When no probe ran for
    ``interval`` seconds, the caller that notices writes one now, so a store that went
    read-only while idle, or one that recovered after a failure, is seen within that
    time. One probe at a time: concurrent callers do not wait, they use what is known.
    """

    def __init__(self, store: Any, interval: float = STORE_PROBE_INTERVAL_S) -> None:
        self.store = store
        self.interval = interval
        self._probe_lock = threading.Lock()
        self._probed_at: float | None = None  # time.monotonic() of the last probe
        self._crash: str | None = None  # a probe that raised instead of answering

    def state(self) -> tuple[bool, str | None]:
        """(writable, why not); runs a probe first if one is due."""
        if self._due() and self._probe_lock.acquire(blocking=False):
            try:
                if self._due():  # another caller may have probed while we got here
                    self._probe()
            finally:
                self._probe_lock.release()
        error = getattr(self.store, "write_error", None) or self._crash
        return error is None, error

    def _due(self) -> bool:
        return self._probed_at is None or time.monotonic() - self._probed_at >= self.interval

    def _probe(self) -> None:
        try:
            self.store.probe_write()  # its outcome lands in store.write_error
            self._crash = None
        except Exception as exc:  # a bug must not turn /health into a 500
            log.exception("task database write probe failed")
            self._crash = f"write probe failed: {exc}"
        finally:
            self._probed_at = time.monotonic()


@dataclass
class Application:
    manager: TaskManager
    worker: Worker
    link: Any  # robot.RobotLink (typed loosely so tests may pass a double)
    events: EventBus
    settings: Settings  # the server's, read as they are (limits, access, mode, language)
    metrics: Metrics = field(default_factory=Metrics)
    # What this server accepts and documents; None: the manager's (they must agree).
    commands: CommandTable | None = None
    store_health: StoreHealth | None = None
    static_dir: str | None = None  # the dashboard's files; None: GET / is always JSON
    sequences: SequenceService | None = None  # None: the sequence routes answer 503
    identity: Identity = None  # type: ignore[assignment]  # made from the store if None
    webhooks: WebhookSender | None = None  # None: the webhook routes answer 503

    def __post_init__(self) -> None:
        if self.commands is None:
            self.commands = self.manager.commands
        if self.store_health is None:
            self.store_health = StoreHealth(self.manager.store)
        if self.identity is None:
            self.identity = Identity(PrincipalStore(self.manager.store), self.settings)
        self.metrics.watch_store(self.store_state)
        self.metrics.identify(self.settings.device_name, dict(self.settings.labels))

    def store_state(self) -> tuple[bool, str | None]:
        assert self.store_health is not None
        return self.store_health.state()

    def health(self) -> tuple[int, dict[str, Any]]:
        robot = self.robot_info()
        alive = self.worker.alive
        writable, store_error = self.store_state()
        status = "ok" if alive and robot.get("connected") else "degraded"
        # "down" when no submit can be accepted or run: a dead worker, or a database that
        # cannot be written (every submit would get 503). "degraded" keeps its meaning:
        # the robot is not connected, tasks still queue.
        if not alive or not writable:
            status = "down"
        body = {"status": status, "mode": self.settings.mode, "worker_alive": alive,
                "robot": {k: robot.get(k) for k in ("connected", "port", "last_seen",
                                                     "firmware", "error")},
                "store": {"writable": writable, "error": store_error},
                # The audit trail's times are this clock's (docs/security.md).
                "clock_synchronized": clock_synchronized(),
                **self.manager.queue_state(), **self.device()}
        return (200 if status != "down" else 503), body

    def robot_info(self) -> dict[str, Any]:
        return dict(self.link.info())

    def device(self) -> dict[str, Any]:
        """Which robot PC this is (--name, --labels): /health's and /robot's name, labels."""
        return {"name": self.settings.device_name, "labels": dict(self.settings.labels)}
