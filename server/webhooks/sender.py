"""The webhook sender: one dispatcher thread fans new outbox rows out into deliveries,
and one lane thread per enabled subscription sends its deliveries in order, retrying
on the schedule. Nothing here is on the worker's path: the worker only commits its
change (with the outbox row, by trigger) and publishes its event, which wakes the
dispatcher; a slow or dead receiver holds up only its own lane.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from server.webhooks.allow import AllowList
from server.webhooks.deliver import Outcome, post
from tasks.errors import StoreWriteError
from tasks.queue.events import Event, EventBus
from tasks.store.audit import AuditEntry
from tasks.store.outbox import PING, event_statement, payload
from tasks.store.webhooks import (
    Attempt,
    Delivery,
    WebhookError,
    WebhookRow,
    WebhookStore,
    new_msg_id,
)

log = logging.getLogger("server.webhooks")

JITTER = 0.1  # each wait is the schedule's +-10 %, so receivers that failed together
# are not all retried in the same second
_LANE_IDLE_S = 5.0  # a lane with nothing due looks again this often (and when woken)
_ROBOT_EVENTS = {"disconnected": "robot.disconnected", "fault": "robot.fault",
                 "alarm": "robot.fault"}


class WebhookSender:
    def __init__(self, store: WebhookStore, events: EventBus, *, allow: AllowList,
                 schedule: tuple[float, ...], timeout: float,
                 base_url: Callable[[], str]) -> None:
        self.store = store
        self.events = events
        self.allow = allow
        self.schedule = schedule
        self.timeout = timeout
        self.base_url = base_url
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by every task, queue or robot event, and stop
        self._lanes: dict[str, _Lane] = {}
        self._lanes_lock = threading.Lock()  # the dispatcher's and requests' reconciles
        self._robot: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue(maxsize=100)
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        self.events.listeners.append(self._heard)
        self._thread = threading.Thread(target=self._dispatch, name="webhook-dispatch",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the dispatcher and the lanes. An attempt in flight is cut off (its
        delivery is sent again after a restart: at least once)."""
        self._stop.set()
        self._wake.set()
        if self._heard in self.events.listeners:
            self.events.listeners.remove(self._heard)
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        for lane in list(self._lanes.values()):
            lane.wake.set()
        for lane in list(self._lanes.values()):
            lane.join(timeout=1.0)
        self._lanes.clear()

    def robot_event(self, kind: str, info: dict[str, Any]) -> None:
        """A link event, from the link's thread: queued, written by the dispatcher."""
        event = _ROBOT_EVENTS.get(kind)
        if event is None:
            return
        data = {"event": kind, "error": info.get("error")}
        if info.get("cmd"):
            data["cmd"] = info["cmd"]
        try:
            self._robot.put_nowait((event, data))
            self._wake.set()
        except queue.Full:
            log.warning("webhook event %s dropped: too many robot events at once", event)

    # -- the dispatcher -----------------------------------------------------------------
    def _heard(self, event: Event) -> None:
        # Progress lines come by the hundred and never end anything: no wake-up for them.
        # Nor without a subscription enabled (no lane): the dispatcher's thread must not
        # compete with the clients of a task's end for nothing; its twice-a-second look
        # finds a subscription made meanwhile.
        if event.kind != "progress" and self._lanes:
            self._wake.set()

    def _dispatch(self) -> None:
        reconciled = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._write_robot_events()
                fanned, base = 0, self.base_url()
                while base and not self._stop.is_set():  # "": not listening yet
                    n = self.store.fan_out(base)
                    fanned += n
                    if n == 0:
                        break  # else a burst: the next 200
                if fanned or time.monotonic() - reconciled >= 0.5:
                    self._reconcile(wake=fanned > 0)
                    reconciled = time.monotonic()
            except StoreWriteError:
                pass  # logged by the store; the rows wait in the outbox
            except Exception:
                log.exception("webhook dispatcher: unexpected error; retrying")
            # Woken by any task, queue or robot event, else twice a second: a
            # subscription made by `webhooks add` on this PC starts its lane.
            self._wake.wait(0.5)

    def _write_robot_events(self) -> None:
        while True:
            try:
                event, data = self._robot.get_nowait()
            except queue.Empty:
                return
            self.store.store.commit([event_statement(event, data)])

    def _reconcile(self, *, wake: bool) -> None:
        """One lane per enabled subscription; with ``wake``, each looks for work now."""
        wanted = {hook.id for hook in self.store.all() if hook.enabled}
        with self._lanes_lock:
            self._start_lanes(wanted, wake)

    def _start_lanes(self, wanted: set[str], wake: bool) -> None:
        for hook_id, lane in list(self._lanes.items()):
            if not lane.is_alive() or hook_id not in wanted:
                lane.wake.set()  # it sees its subscription gone or disabled and ends
                if not lane.is_alive():
                    del self._lanes[hook_id]
        for hook_id in wanted:
            running = self._lanes.get(hook_id)
            if running is None:
                self._lanes[hook_id] = _Lane(self, hook_id)
                self._lanes[hook_id].start()
            elif wake:
                running.wake.set()

    def changed(self) -> None:
        """A subscription was changed by a request: its lane starts or ends now."""
        if self._thread is not None:
            self._reconcile(wake=True)

    # -- one attempt and what follows ----------------------------------------------------
    def send(self, hook: WebhookRow, delivery: Delivery) -> Outcome:
        outcome = post(self.allow, hook.url, hook.secret, delivery.msg_id, delivery.body,
                       timeout=self.timeout)
        self.settle(hook, delivery, outcome)
        return outcome

    def ping(self, hook: WebhookRow, audit: AuditEntry | None) -> tuple[Delivery, Outcome]:
        """A `ping` to ``hook`` now (enabled or not), one attempt, in its delivery log."""
        body = payload(PING, self.store.wall(), {"webhook_id": hook.id, "message": "ping"})
        delivery = self.store.new_delivery(hook.id, PING, body, msg_id=new_msg_id(),
                                           audit=audit)
        return delivery, self.send(hook, delivery)

    def settle(self, hook: WebhookRow, delivery: Delivery, outcome: Outcome) -> None:
        """Record the attempt: delivered, retried on the schedule, or failed (and the
        subscription disabled: 410, or the schedule exhausted)."""
        n = delivery.attempts + 1
        once = delivery.event_seq is None  # a ping or a replay: one attempt, no retries
        if outcome.ok:
            self.store.record(delivery, _attempt(outcome), "delivered", None)
            return
        if outcome.status_code == 410:
            self.store.record(delivery, _attempt(outcome), "failed", None)
            self._disable(hook, "gone")
            return
        if once or n > len(self.schedule):
            self.store.record(delivery, _attempt(outcome), "failed", None)
            if not once:
                self._disable(hook, "retries_exhausted")
            return
        wait = self.schedule[n - 1] * random.uniform(1 - JITTER, 1 + JITTER)
        if outcome.retry_after is not None:
            wait = max(wait, outcome.retry_after)
        log.info("webhook %s: delivery %d attempt %d failed (%s); next in %.1f s",
                 hook.id, delivery.id, n, outcome.error, wait)
        self.store.record(delivery, _attempt(outcome), "pending", time.time() + wait)

    def _disable(self, hook: WebhookRow, reason: str) -> None:
        audit = AuditEntry("server", "admin", "local", "webhook.disable", reason=reason)
        try:
            self.store.change(hook.id, audit=audit, enabled=False, disabled_reason=reason)
        except WebhookError:
            return  # removed meanwhile
        log.warning("webhook %s to %s disabled: %s", hook.id, hook.url, reason)
        self.events.publish("webhook", {"webhook_id": hook.id, "url": hook.url,
                                        "enabled": False, "disabled_reason": reason})


def _attempt(outcome: Outcome) -> Attempt:
    return Attempt(outcome.time, outcome.status_code, outcome.error, outcome.duration_ms)


class _Lane(threading.Thread):
    """One subscription's deliveries, oldest first, one at a time."""

    def __init__(self, sender: WebhookSender, hook_id: str) -> None:
        super().__init__(name=f"webhook-{hook_id}", daemon=True)
        self.sender = sender
        self.hook_id = hook_id
        self.wake = threading.Event()

    def run(self) -> None:
        stop = self.sender._stop
        while not stop.is_set():
            self.wake.clear()
            try:
                wait = self._once()
            except WebhookError:
                return  # the subscription was removed
            except StoreWriteError:
                wait = 1.0
            except Exception:
                log.exception("webhook %s: unexpected error; retrying", self.hook_id)
                wait = 1.0
            if wait is None:
                return
            if wait > 0:
                self.wake.wait(wait)

    def _once(self) -> float | None:
        """Send what is due; the seconds to wait next, or None to end (disabled)."""
        hook = self.sender.store.get(self.hook_id)
        if not hook.enabled:
            return None
        delivery = self.sender.store.next_due(self.hook_id)
        if delivery is None:
            return _LANE_IDLE_S
        due = (delivery.next_try or 0.0) - time.time()
        if due > 0:
            return min(due, _LANE_IDLE_S)
        self.sender.send(hook, delivery)
        return 0.0
