"""Background pruning of old finished tasks (never pending or running ones), guarded
against a wall clock that jumps forward."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tasks.errors import StoreWriteError
from tasks.store.taskstore import TaskStore

log = logging.getLogger("tasks.housekeeping")

# How far the wall clock may run ahead of the steady (monotonic) clock between two
# passes before it counts as a jump. NTP steps are seconds; an hour is far above that
# and still far below the day of history the guard exists to protect.
JUMP_TOLERANCE_S = 3600.0
# After a jump, how long the steady clock must run without another one before pruning
# trusts the new wall clock.
STEADY_S = 3600.0


class Pruner:
    """Prunes finished tasks older than `keep_days` once per `interval`.

    The cutoff comes from the wall clock, which can jump: a PC clock 40 days behind,
    once corrected, makes every finished task look 40 days older at once, and a prune
    would delete recent history (and the idempotency keys that stop a re-sent submit
    from scanning a rack twice). So every pass compares how far the wall clock moved
    since the previous pass (or since construction) with how far the steady clock
    moved. If the wall clock ran ahead by more than JUMP_TOLERANCE_S, that is a jump:
    the pass logs a warning and prunes nothing, and no pass prunes until the steady
    clock has run STEADY_S with no further jump. Then the new wall clock is taken as
    the truth (the correction was right) and pruning goes on; with the hourly
    interval, that is the next pass.

    Any jump beyond the tolerance counts, not only one of more than a day: what a
    jump would remove is the jump itself (history that steady time has not yet made
    old), and with `--keep-days 1` a 23-hour jump would remove tasks that ended an
    hour ago, with their keys. A false alarm costs one skipped pass: e.g. a PC
    resumed from sleep where the steady clock stood still (Linux), whose next prune
    comes an hour later.

    A backward jump needs no guard: the cutoff moves back too, so pruning removes
    less until the clock catches up. It is logged, and pruning goes on.

    Only jumps while the server runs are seen; a clock changed while it was down is
    indistinguishable from downtime. Pending and running tasks and their keys are
    never pruned whatever the clock says (TaskStore.prune); this guard is for the
    finished ones.

    `wall` and `mono` are the clocks (injectable for tests)."""

    def __init__(self, store: TaskStore, keep_days: float, *, interval: float = 3600.0,
                 wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.keep_days = keep_days
        self.interval = interval
        self._wall = wall
        self._mono = mono
        # (wall, monotonic) at the previous pass, or at construction before the first.
        self._last = (wall(), mono())
        # The monotonic time of the last forward jump seen; None: no hold.
        self._jumped_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Pruned with the tasks, by the same cutoff: the webhooks' outbox and deliveries.
        self.also: list[Callable[[float], object]] = []

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pruner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def hold_remaining(self) -> float:
        """Seconds of steady clock still needed after a jump before pruning; 0: none."""
        if self._jumped_at is None:
            return 0.0
        return max(0.0, STEADY_S - (self._mono() - self._jumped_at))

    def run_once(self) -> int:
        """One pass: the number of tasks pruned (0 when held after a clock jump)."""
        wall, mono = self._wall(), self._mono()
        last_wall, last_mono = self._last
        self._last = (wall, mono)
        ahead = (wall - last_wall) - (mono - last_mono)
        if ahead > JUMP_TOLERANCE_S:
            self._jumped_at = mono
            log.warning("the wall clock jumped %.1f h ahead of the steady clock; pruning "
                        "nothing until it has run steadily for %.0f min",
                        ahead / 3600, STEADY_S / 60)
            return 0
        if ahead < -JUMP_TOLERANCE_S:
            log.warning("the wall clock went back %.1f h; finished tasks are pruned by it, "
                        "so fewer until it catches up", -ahead / 3600)
        if self.hold_remaining() > 0:
            log.debug("pruning held after a clock jump for %.0f s more", self.hold_remaining())
            return 0
        self._jumped_at = None
        removed = self.store.prune(wall - self.keep_days * 86400, now=wall)
        for prune in self.also:
            prune(wall - self.keep_days * 86400)
        if removed:
            log.info("pruned %d finished tasks older than %g days", removed, self.keep_days)
        return removed

    def _run(self) -> None:
        delay = min(60.0, self.interval)  # first pass soon, but not during start-up
        while not self._stop.wait(delay):
            try:
                self.run_once()
            except StoreWriteError as exc:
                log.warning("pruning failed: %s", exc)
            # A timer that wakes a hair early must not cost a whole interval more.
            held = self.hold_remaining()
            delay = min(self.interval, held) if held > 0 else self.interval
