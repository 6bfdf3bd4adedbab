"""One server per task database: an OS file lock next to the database file.

Two servers on one database would each believe they own the queue: the second one's
recovery marks the first one's running task failed while the robot is still doing
it. The lock is an OS lock (flock on POSIX, msvcrt.locking on Windows), so it is
released by the kernel when the process dies however it dies: a stale lock file from
a crash is simply taken over. The file holds the owner's PID for the error message.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys

# msvcrt.locking locks a byte range, and a locked range cannot be read by others:
# lock a byte far past the PID text so a second instance can still read who holds it.
_WINDOWS_LOCK_OFFSET = 4096


class InstanceLockHeld(Exception):
    """Another live process holds the database."""

    def __init__(self, db_path: str, pid: int | None) -> None:
        who = f" (process {pid})" if pid else ""
        super().__init__(f"the task database {os.path.abspath(db_path)} is in use by another "
                         f"server{who}; stop that one first, or give this one its own --db")
        self.pid = pid


class LockFileError(OSError):
    """The lock file cannot be made or opened (read-only file system, no permission).

    An OSError still (errno, strerror, filename kept), so callers that report OSErrors
    keep working; its text is one line naming the database, the lock file and why.
    """

    def __init__(self, db_path: str, lock_path: str, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror, lock_path)
        directory = os.path.dirname(os.path.abspath(lock_path))
        while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
            directory = os.path.dirname(directory)  # makedirs failed: say where it stopped
        if exc.errno == errno.EROFS:
            why = f"{directory} is on a read-only file system"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            where = lock_path if os.path.exists(lock_path) else directory
            why = f"no write permission on {where}"
        else:
            why = exc.strerror or str(exc)
        self.message = (f"{os.path.abspath(db_path)}: the task database cannot be written "
                        f"(cannot open its lock file {lock_path}: {why})")

    def __str__(self) -> str:
        return self.message


class InstanceLock:
    """``acquire()`` before the database is read; ``release()`` after it is closed."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.path = db_path + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise InstanceLockHeld; LockFileError if the file cannot be
        made (the first write a server does: on a read-only disk this is what says so)."""
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LockFileError(self.db_path, self.path, exc) from None
        try:
            if not _try_lock(fd):
                raise InstanceLockHeld(self.db_path, _read_pid(fd))
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # The file stays: removing it would race with a second server that opened it
        # and is waiting to lock it (it would lock an unlinked file). Closing the
        # descriptor is what frees the lock.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


def _try_lock(fd: int) -> bool:
    # sys.platform, not os.name: the same test, and mypy narrows on it (msvcrt is Windows-only).
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            os.lseek(fd, 0, os.SEEK_SET)
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
