"""Background housekeeping of the task database: pruning old finished tasks (never
pending or running ones), guarded against a wall clock that jumps forward; and the
WAL's checkpoints, in a thread of their own so that no COMMIT ever copies WAL frames."""

from __future__ import annotations

import collections
import logging
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable

from tasks.errors import StoreWriteError
from tasks.store.db import connect
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


# The WAL-index header at the start of the -shm file (https://www.sqlite.org/walformat.html
# "The WAL-Index Header"): two copies of 48 bytes, then the checkpoint information.
_SHM_VERSION = 3007000
# The store's write lock is taken for the last frames (waited for at most _SETTLE_WAIT_S)
# once the WAL is past this share of its bound: under continuous writes it seldom starts
# again by itself, and each time it is taken, writers wait for a checkpoint's fsyncs.
SETTLE_SHARE = 0.25
_SETTLE_WAIT_S = 0.25


def _frames(head: bytes) -> tuple[int, int] | None:
    if len(head) < 100 or head[:48] != head[48:96] or not head[12]:
        return None  # not there yet, or caught while it changed
    version, frames, copied = (struct.unpack_from("=I", head, at)[0] for at in (0, 16, 96))
    return (frames, copied) if version == _SHM_VERSION else None


def wal_frames(path: str) -> tuple[int, int] | None:
    """(frames in the WAL, how many of them are copied into the database) of the database
    at ``path``, read from its WAL-index (no lock, no checkpoint); None when it cannot be
    read. For tests and tools only, never inside a process that has the database open
    while others may open it too: closing the file drops that process's POSIX locks on
    it (WalIndex says why that matters)."""
    try:
        with open(path + "-shm", "rb") as f:
            return _frames(f.read(100))
    except OSError:
        return None


class WalIndex:
    """The WAL-index header read through one descriptor kept open until the store's
    connections are closed (close()). Opening and closing the -shm file for each read
    would drop every POSIX lock this process holds on it, SQLite's own included: another
    process opening the database (the users or webhooks CLI, a backup, a test) then
    finds it unused, truncates it, and this server dies of SIGBUS in its mapping."""

    def __init__(self, path: str) -> None:
        try:
            self._fd: int | None = os.open(path + "-shm", os.O_RDONLY)
        except OSError:
            self._fd = None

    def frames(self) -> tuple[int, int] | None:
        if self._fd is None:
            return None
        try:
            if hasattr(os, "pread"):
                return _frames(os.pread(self._fd, 100, 0))
            os.lseek(self._fd, 0, os.SEEK_SET)  # Windows (no POSIX locks there)
            return _frames(os.read(self._fd, 100))
        except OSError:
            return None

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class Checkpointer:
    """The WAL's checkpoints in a thread of its own, on a connection of its own.

    The store's writer never checkpoints (wal_autocheckpoint 0): SQLite's automatic
    checkpoint runs inside the COMMIT that passes 1,000 pages, which then copies ~4 MB
    and syncs the database file before it returns (30-320 ms on a slow disk). Here the
    store sets an Event after each COMMIT (its only cost on the commit path); this
    thread wakes on it, at most every ``look_s``, reads from the WAL-index how many
    frames wait to be copied, and with ``pages`` or more runs a PASSIVE checkpoint,
    which takes no lock a writer waits for.

    Under continuous writes that is not enough: SQLite starts the WAL again from its
    beginning only when a writer begins with every frame copied, and frames keep coming
    while a checkpoint copies, so the WAL would grow without end. Once it holds
    SETTLE_SHARE of ``wal_limit``, the store's write lock is taken between two writes
    (waited for like a writer would, at most _SETTLE_WAIT_S) for a RESTART checkpoint of
    the few frames since the last PASSIVE; the next writer starts the WAL again.
    Writers wait for that one (two fsyncs of a few pages) once per SETTLE_SHARE of the
    bound written (``settle`` False: never).

    After ``idle_s`` with no commit, whatever is left is copied and a RESTART checkpoint
    makes the next write start the WAL from its beginning (overwriting a WAL is a cheaper
    fsync than growing it); TRUNCATE instead if the file is over ``wal_limit`` bytes, the
    bound that journal_size_limit also puts on each restart. Failures are logged once
    per kind and never reach a writer."""

    def __init__(self, store: TaskStore, *, pages: int, idle_s: float, wal_limit: int,
                 busy_timeout: float = 0.005, look_s: float = 0.05,
                 settle: bool = True) -> None:
        self.store = store
        self.pages = pages
        self.idle_s = idle_s
        self.wal_limit = wal_limit
        self.busy_timeout = busy_timeout
        self.look_s = look_s
        self.settle = settle
        # Checkpoints run, by kind ("passive", "settle", "restart", "truncate"; "busy":
        # those SQLite could not finish), for tests and benches.
        self.done: collections.Counter[str] = collections.Counter()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._conn: sqlite3.Connection | None = None
        self._page = 4096
        self._thread: threading.Thread | None = None
        self._logged: set[str] = set()
        self._index: WalIndex | None = None

    def start(self) -> None:
        self._conn = connect(self.store.path, self.busy_timeout)
        self._index = WalIndex(self.store.path)
        self._page = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
        self.store.checkpoints_by(self._wake, self.wal_limit)
        self._thread = threading.Thread(target=self._run, name="checkpointer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.store.checkpoints_by(None)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def release(self) -> None:
        """Close the WAL-index's descriptor: only once the store is closed (WalIndex)."""
        if self._index is not None:
            self._index.close()
            self._index = None

    def _wal(self) -> tuple[int, int] | None:
        return self._index.frames() if self._index is not None else None

    def _run(self) -> None:
        dirty = True  # frames since the last restart (start-up wrote some)
        while True:
            woke = self._wake.wait(self.idle_s if dirty else None)
            if self._stop.is_set():
                return
            if woke:
                # Look a moment after the commit, not at once: its thread's turn with the
                # GIL must not come while a task's end is on its way to the clients.
                if self._stop.wait(self.look_s):
                    return
                self._wake.clear()
                dirty = True
                self._guarded("after commits", self._after_commits)
            else:
                dirty = self._guarded("idle", self._when_idle) is not False

    def _guarded(self, where: str, step: Callable[[], bool | None]) -> bool | None:
        try:
            return step()
        except (sqlite3.Error, OSError) as exc:
            kind = f"{where}: {type(exc).__name__} {getattr(exc, 'sqlite_errorname', '')}"
            if kind not in self._logged:
                self._logged.add(kind)
                log.warning("WAL checkpoint failed (%s): %s; later ones like it are logged "
                            "at DEBUG", where, exc)
            else:
                log.debug("WAL checkpoint failed (%s): %s", where, exc)
            return None

    def _checkpoint(self, mode: str, kind: str) -> bool:
        """One checkpoint; True if SQLite finished it (PASSIVE: copied every frame)."""
        assert self._conn is not None
        busy, frames, copied = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()[0]
        self.done[kind] += 1
        if busy or copied < frames:
            self.done["busy"] += 1
            return False
        return True

    def _after_commits(self) -> None:
        wal = self._wal()
        if wal is None:  # no WAL-index to read: by the WAL file's size
            if self.store.wal_bytes() >= self.pages * self._page:
                self._checkpoint("PASSIVE", "passive")
            return
        if wal[0] - wal[1] < self.pages:
            return
        self._checkpoint("PASSIVE", "passive")
        if not self.settle:
            return
        for _ in range(3):  # what came meanwhile, while too much to copy under the lock
            wal = self._wal()
            if wal is None or wal[0] - wal[1] <= self.pages // 4:
                break
            self._checkpoint("PASSIVE", "passive")
        if wal is not None and wal[0] * (self._page + 24) < SETTLE_SHARE * self.wal_limit:
            return
        # RESTART, between two writes: copies the rest and waits (busy_timeout at most)
        # for readers still in the WAL; the next writer then starts it again (a reader
        # that begins meanwhile reads the database file and is not in the way).
        copy = lambda: self._checkpoint("RESTART", "settle")  # noqa: E731
        if not self.store.between_writes(copy, wait=_SETTLE_WAIT_S):
            self.done["unsettled"] += 1

    def _when_idle(self) -> bool:
        """Copy what is left and restart the WAL; False once done (True: try again)."""
        wal = self._wal()
        if wal is not None and wal[0] == 0:
            return False
        if wal is None or wal[1] < wal[0]:
            self._checkpoint("PASSIVE", "passive")
        over = self.store.wal_bytes() > self.wal_limit
        return not self._checkpoint("TRUNCATE" if over else "RESTART",
                                    "truncate" if over else "restart")
