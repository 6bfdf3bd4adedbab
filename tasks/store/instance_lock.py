"""One server per task database file, whatever name it is given.

Two servers on one database would each believe they own the queue: the second one's
recovery marks the first one's running task failed while the robot is still doing
it. The same file can be reached by many names, so the lock belongs to the file, not
to the name the operator typed:

- A lock file next to the database's real path (``os.path.realpath``: symlinks to the
  file or to a directory, relative paths and ``..`` all end there), on every
  platform. A bind mount of the database's directory shows that same lock file under
  another path, and an OS lock belongs to the file (inode), so it meets the lock too.
- On Linux, also ``flock`` on the database file itself: whatever name reaches that
  inode (a bind mount of the file alone, which does not show our lock file) meets it.
  Linux keeps flock locks and SQLite's fcntl (POSIX) locks apart, so SQLite is not
  hindered. Not elsewhere: on macOS and the BSDs the two kinds interact (SQLite would
  find its own file locked), and Windows byte locks are mandatory (SQLite could no
  longer read the file); neither has bind mounts of single files.
- A database file with more than one hard link is refused: SQLite names its ``-wal``
  and ``-shm`` files after the name it opened, so each name has its own journal, and
  opening the other name later replays a stale one (tasks lost though integrity_check
  says ok). On Linux a missing database is created empty under the lock, so the
  file lock holds from the first start on.

The locks are OS locks (flock on POSIX, msvcrt.locking on Windows), so the kernel
releases them when the process dies however it dies: a stale lock file from a crash is
simply taken over. The lock file holds the owner's PID for the error message.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys

from i18n import CodedError, t
from i18n.stdlib import os_error_text
from tasks.errors import StoreError

# msvcrt.locking locks a byte range, and a locked range cannot be read by others:
# lock a byte far past the PID text so a second instance can still read who holds it.
_WINDOWS_LOCK_OFFSET = 4096
# Only where flock and SQLite's fcntl locks are independent (flock(2) on Linux).
_LOCK_DB_FILE = sys.platform.startswith("linux")


def _shown(db_path: str) -> str:
    """The name given and, when it differs, the file it reaches."""
    given, real = os.path.abspath(db_path), os.path.realpath(db_path)
    return given if given == real else f"{given} -> {real}"


class InstanceLockHeld(CodedError):
    """Another live process holds the database. ``other_path``: it holds the file itself
    through a path whose lock file this server cannot know (so neither its PID)."""

    def __init__(self, db_path: str, pid: int | None, *, other_path: bool = False) -> None:
        if other_path:
            super().__init__(code="db_in_use_other_name", params={"path": _shown(db_path)})
        else:
            # No PID: the holder is between taking the lock and writing it.
            super().__init__(code="db_in_use",
                             params={"path": _shown(db_path), "pid": pid or "?"})
        self.pid = pid


class DatabaseHardLinked(StoreError, CodedError):
    """The database file has several names (hard links): refused before it is opened.
    A StoreError (the database cannot be used), so it stops start-up as one line."""

    def __init__(self, db_path: str, links: int) -> None:
        CodedError.__init__(self, code="db_hard_links",
                            params={"path": _shown(db_path), "links": links})
        self.links = links


class LockFileError(CodedError, OSError):
    """The lock file cannot be made or opened (read-only file system, no permission).

    An OSError still (errno, strerror, filename kept), so callers that report OSErrors
    keep working; its text is one line naming the database, the lock file and why, in
    the reader's language (``text(lang)``; ``str()`` is English).
    """

    def __init__(self, db_path: str, lock_path: str, exc: OSError) -> None:
        if exc.errno == errno.EEXIST:  # makedirs met a file where a folder should be
            exc = NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        self.cause = exc
        directory = os.path.dirname(os.path.abspath(lock_path))
        while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
            directory = os.path.dirname(directory)  # makedirs failed: say where it stopped
        where = {"path": os.path.abspath(db_path), "lock": lock_path}
        if exc.errno == errno.EROFS:
            CodedError.__init__(self, code="db_lock_read_only",
                                params={**where, "directory": directory})
        elif exc.errno in (errno.EACCES, errno.EPERM):
            CodedError.__init__(self, code="db_lock_no_permission", params={
                **where, "where": lock_path if os.path.exists(lock_path) else directory})
        else:
            CodedError.__init__(self, code="db_lock_failed", params=where)
        self.errno, self.strerror, self.filename = exc.errno, exc.strerror, lock_path

    def text(self, lang: str) -> str:
        if self.code == "db_lock_failed":
            return t("error.db_lock_failed", lang, reason=os_error_text(self.cause, lang),
                     **self.params)
        return super().text(lang)

    def __str__(self) -> str:
        return self.message


class InstanceLock:
    """``acquire()`` before the database is read; ``release()`` after it is closed."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.real_path = os.path.realpath(db_path)
        self.path = self.real_path + ".lock"
        # (st_dev, st_ino) of the database file once acquired (None: not a file yet).
        self.identity: tuple[int, int] | None = None
        self._fd: int | None = None
        self._db_fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise InstanceLockHeld; DatabaseHardLinked for a file with
        several names; LockFileError if the lock file cannot be made (the first write a
        server does: on a read-only disk this is what says so)."""
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LockFileError(self.db_path, self.path, exc) from None
        try:
            if not _try_lock(fd):
                raise InstanceLockHeld(self.db_path, _read_pid(fd))
            self._db_fd = self._lock_database_file()
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            self._close_db_fd()
            os.close(fd)
            raise
        self._fd = fd

    def _lock_database_file(self) -> int | None:
        """Check the database file's identity and, on Linux, lock the file itself.

        The descriptor it returns must outlive SQLite's own: closing any descriptor of
        a file drops every POSIX lock this process holds on it, SQLite's included.
        """
        if not _LOCK_DB_FILE:
            try:
                st = os.stat(self.real_path)
            except OSError:
                return None  # first start (the store creates it), or the store's to report
            self._check_identity(st)
            return None
        try:
            # O_CREAT: a first start makes the file now, so it is locked from the start.
            # O_NONBLOCK: a FIFO given as --db must not hang the open.
            db_fd = os.open(self.real_path, os.O_RDONLY | os.O_CREAT | os.O_NONBLOCK, 0o644)
        except OSError:
            return None  # unreadable or not a file: the store refuses it in its own words
        try:
            if not self._check_identity(os.fstat(db_fd)):
                os.close(db_fd)
                return None
            if not _try_flock(db_fd):
                raise InstanceLockHeld(self.db_path, None, other_path=True)
        except BaseException:
            os.close(db_fd)
            raise
        return db_fd

    def _check_identity(self, st: os.stat_result) -> bool:
        """Refuse a file with several names; False for what is not a regular file
        (a directory: the store says what is wrong with it)."""
        if not stat.S_ISREG(st.st_mode):
            return False
        if st.st_nlink > 1:
            raise DatabaseHardLinked(self.db_path, st.st_nlink)
        self.identity = (st.st_dev, st.st_ino)
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # The file stays: removing it would race with a second server that opened it
        # and is waiting to lock it (it would lock an unlinked file). Closing the
        # descriptor is what frees the lock.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        self._close_db_fd()
        os.close(fd)

    def _close_db_fd(self) -> None:
        db_fd, self._db_fd = self._db_fd, None
        if db_fd is not None:
            os.close(db_fd)

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
    return _try_flock(fd)


def _try_flock(fd: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - never called there
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
