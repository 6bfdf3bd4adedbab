"""Logging that costs the request threads almost nothing.

Logging was ~35 % of a GET in profiles: a LogRecord per access line, QueueHandler's
format and copy in the request thread, then a format, write and flush per record in
the listener thread. Here the root handler (BatchHandler) only merges the message and
enqueues the record; AccessLog.emit enqueues a finished line (a str) when the batch
handler is the only place its record would go anyway; one writer thread drains the
queue in batches, formats each record once and flushes each handler once per batch.
What is written is what logging.Formatter(FORMAT) and RotatingFileHandler write.

Access lines have their own say per handler (the console shows them only when asked):
the writer decides per batch.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

# asctime to the second, as logging.Formatter's default (strftime once a second)
from tasks.models import local_second

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
BATCH_MAX = 1000
# After a batch of several lines the writer waits this long for more: under load, one
# wake-up, write and flush per handler per pause instead of per line or two (those
# cost a GET ~20 % of its req/s at INFO against WARNING).
PAUSE_S = 0.01
# A batch's first line waits this long for company: the writer's turn with the GIL comes
# after the hot path that logged it (a task's end reaches its clients first), not during.
LINGER_S = 0.005
_INFO = logging.INFO
_STOP = object()
_FORMATTER = logging.Formatter()  # exceptions only: formatException ignores the format
_MSECS = [f",{ms:03d}" for ms in range(1000)]  # "%03d" of msecs, a float, truncates

Item = Any  # a LogRecord, or a finished INFO line (str) from AccessLog
ACCESS_LOGGER = "server.access"
_access_names = {ACCESS_LOGGER}  # loggers whose records are access lines


def _is_access(item: Item) -> bool:
    return type(item) is str or item.name in _access_names


def is_standard(formatter: logging.Formatter | None) -> bool:
    """True if this formatter writes exactly what _standard_line does."""
    return (type(formatter) is logging.Formatter
            and formatter._fmt == FORMAT and formatter.datefmt is None
            and type(formatter._style) is logging.PercentStyle
            and formatter.converter is time.localtime
            and formatter.default_time_format == "%Y-%m-%d %H:%M:%S"
            and formatter.default_msec_format == "%s,%03d")


def _standard_line(record: logging.LogRecord) -> str | None:
    """logging.Formatter.format, step for step, minus the per-record strftime; None
    if it fails (the handler's own format then reports it)."""
    try:
        record.message = record.getMessage()
        record.asctime = local_second(record.created) + _MSECS[int(record.msecs)]
        s = f"{record.asctime} {record.levelname!s} {record.name!s}: {record.message}"
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        for extra in (record.exc_text, record.stack_info):
            if extra:
                s = (s if s[-1:] == "\n" else s + "\n") + extra
        return s
    except Exception:
        return None


class BatchHandler(logging.Handler):
    """The root handler: merge the message now, enqueue, nothing else."""

    def __init__(self, batch: LogBatch) -> None:
        super().__init__()
        self.batch = batch
        self.put: Callable[[Item], None] = batch.queue.put

    def handle(self, record: logging.LogRecord) -> bool:
        # Without Handler.handle's lock: SimpleQueue.put is thread-safe on its own, and
        # that lock made 16 request threads queue up (~30 % of a GET in profiles).
        if self.filters and not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # Merged here, as QueueHandler.prepare does, so that the caller changing its
            # arguments afterwards cannot change the line; no copy, no full format.
            record.msg = record.message = record.getMessage()
            record.args = None
            if record.exc_info:
                if not record.exc_text:
                    record.exc_text = _FORMATTER.formatException(record.exc_info)
                record.exc_info = None  # the traceback's frames are not kept alive
            self.put(record)
        except Exception:
            self.handleError(record)


class _Output:
    """One handler as the writer thread writes to it: in batches."""

    def __init__(self, handler: logging.Handler, access: bool | None = None) -> None:
        self.handler: Any = handler
        # Access lines: None by the handler's level like any INFO record, else always/never.
        self.access = access
        self.takes_access = access if access is not None else handler.level <= _INFO
        self.stream_handler = isinstance(handler, logging.StreamHandler)
        self.standard = is_standard(handler.formatter)
        self.rotating = (isinstance(handler, logging.handlers.RotatingFileHandler)
                         and handler.maxBytes > 0
                         and os.path.isfile(handler.baseFilename))  # never /dev/null (bpo-45401)
        self.size = self._tell() if self.rotating else 0
        self.crlf = len(os.linesep) - 1  # a text file on Windows writes "\n" as 2 bytes

    def write(self, items: Sequence[Item], lines: Sequence[str | None], text: str | None,
              lowest: int, highest: int = logging.CRITICAL, has_access: bool = True) -> None:
        """`lines`: each item in the standard format (or None); `text`: all of them, a
        newline after each; `lowest`, `highest`: the items' levels; `has_access`: some
        item is an access line."""
        h = self.handler
        if h.level > highest and not (self.access and has_access):
            return  # e.g. the console at WARNING under a stream of access lines
        if not self.stream_handler:
            for item in items:
                if type(item) is not str and self._wants(item):
                    h.handle(item)
            return
        chunks: list[str] | None = None
        sources: Sequence[Item] = items
        if not (text is not None and self.standard and h.level <= lowest and not h.filters
                and h.terminator == "\n" and (self.takes_access or not has_access)):
            chunks, sources = self._select(items, lines)
            if not chunks:
                return
            text = "".join(chunks)
        h.acquire()
        try:
            if not self._write_all(text):
                self._write_lines(chunks or [f"{line}\n" for line in lines], sources)
            h.flush()  # once per batch: per record, it was most of the writer's time
        except Exception:
            self._error("(writing a batch)")
        finally:
            h.release()

    def _select(self, items: Sequence[Item], lines: Sequence[str | None]
                ) -> tuple[list[str], list[Item]]:
        """What this handler writes of the batch: its level, filters and format."""
        h = self.handler
        chunks, sources = [], []
        for item, line in zip(items, lines, strict=True):
            if type(item) is str:
                if not self.takes_access:
                    continue
            elif not self._wants(item) or (h.filters and not h.filter(item)):
                continue
            elif line is None or not self.standard:
                try:
                    line = h.format(item)
                except Exception:
                    h.handleError(item)
                    continue
            chunks.append(line + h.terminator)
            sources.append(item)
        return chunks, sources

    def _wants(self, record: logging.LogRecord) -> bool:
        if self.access is not None and record.name in _access_names:
            return self.access
        return record.levelno >= self.handler.level

    def _write_all(self, text: str) -> bool:
        """The batch in one write, unless a line of it would make the file rotate."""
        stream = self.handler.stream
        n = self._bytes(text) if self.rotating else 0
        if self.rotating and (stream is None or self.size + n >= self.handler.maxBytes):
            return False
        try:
            stream.write(text)
        except Exception:
            return False  # one line may be the cause: line by line, the others are kept
        self.size += n
        return True

    def _write_lines(self, chunks: Sequence[str], sources: Sequence[Item]) -> None:
        h = self.handler
        for chunk, item in zip(chunks, sources, strict=True):
            # RotatingFileHandler.shouldRollover's test: bytes so far + the line's length
            # in characters (the bytes are counted, not asked: tell() flushes).
            if self.rotating and (h.stream is None or self.size + len(chunk) >= h.maxBytes):
                try:
                    if h.stream is not None:
                        h.doRollover()
                except Exception:
                    self._error(item)  # e.g. Windows: another process holds the file open
                if h.stream is None:  # a failed rollover closed it: reopen, keep logging
                    h.stream = h._open()
                self.size = self._tell()
            try:
                h.stream.write(chunk)
            except UnicodeEncodeError:
                # A console that cannot show a character (GBK on the lab PCs): the line
                # with "?" beats no line.
                encoding = getattr(h.stream, "encoding", None) or "ascii"
                try:
                    h.stream.write(chunk.encode(encoding, "replace").decode(encoding))
                except Exception:
                    self._error(item)
            except Exception:
                self._error(item)
            if self.rotating:
                self.size += self._bytes(chunk)

    def _bytes(self, text: str) -> int:
        n = len(text) if text.isascii() else len(
            text.encode(self.handler.encoding or "utf-8", "replace"))
        return n + text.count("\n") if self.crlf else n

    def _tell(self) -> int:
        try:
            self.handler.stream.seek(0, 2)  # as shouldRollover: Windows' append mode
            return self.handler.stream.tell()
        except (OSError, ValueError):
            return 0

    def _error(self, item: Item) -> None:
        if type(item) is str:  # handleError reports a record's message
            item = logging.makeLogRecord({"msg": item, "levelno": _INFO, "levelname": "INFO"})
        self.handler.handleError(item)


class LogBatch:
    """A queue, its root handler and the writer thread that empties it into `handlers`
    (configured, formatter, level and filters, before start()). `access`: per handler,
    whether it writes access lines (None: by its level, as any INFO record)."""

    def __init__(self, handlers: Sequence[logging.Handler], batch_max: int = BATCH_MAX,
                 pause: float = PAUSE_S, *,
                 access: Sequence[bool | None] | None = None,
                 linger: float = LINGER_S) -> None:
        self.handlers = tuple(handlers)
        self.batch_max, self.pause, self.linger = batch_max, pause, linger
        self.queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self.handler = BatchHandler(self)
        access = [None] * len(self.handlers) if access is None else list(access)
        self._outputs = [_Output(h, a) for h, a in zip(self.handlers, access, strict=True)]
        # Whether a batch's access lines must be told apart: only if some handler
        # writes them where its level alone would not say so.
        self._sorts_access = any(o.access is not None for o in self._outputs)
        # AccessLog may enqueue a finished line only if every handler would write
        # exactly that line (a stream, the standard format, no filters).
        self.lines_ok = all(o.stream_handler and o.standard and not o.handler.filters
                            for o in self._outputs)
        self.running = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
            self.running = True
            self._thread.start()

    def stop(self) -> None:
        """Write everything queued so far, flush, and end the writer thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self.running = False
            self.queue.put(_STOP)
            thread.join()

    def _run(self) -> None:
        get, get_nowait, limit = self.queue.get, self.queue.get_nowait, self.batch_max
        while True:
            items = [get()]
            deadline = time.monotonic() + self.linger
            try:
                while len(items) < limit and items[-1] is not _STOP:
                    remaining = deadline - time.monotonic()
                    items.append(get(timeout=remaining) if remaining > 0 else get_nowait())
            except queue.Empty:
                pass
            kept = [item for item in items if item is not _STOP]
            try:
                self.write(kept)
            except Exception:  # never let the writer die: the next lines still matter
                self.handler.handleError(logging.makeLogRecord({"msg": "(log writer)"}))
            if len(kept) != len(items):
                return
            # Not after a lone line, nor after a full batch (a backlog drains at full speed).
            if self.pause and 1 < len(items) < limit:
                time.sleep(self.pause)

    def write(self, items: Sequence[Item]) -> None:
        """One batch to every handler (the writer thread's work)."""
        if not items:
            return
        # Formatted once for all the handlers in the standard format; None: each its own.
        lines: list[Any] = [None] * len(items)
        if any(o.standard for o in self._outputs):
            lines = [item if type(item) is str else _standard_line(item) for item in items]
        text = None if None in lines else "\n".join(lines) + "\n"
        lowest, highest = 0, logging.CRITICAL
        if any(o.handler.level for o in self._outputs):
            levels = [_INFO if type(item) is str else item.levelno for item in items]
            lowest, highest = min(levels), max(levels)
        has_access = any(map(_is_access, items)) if self._sorts_access else True
        for output in self._outputs:
            try:
                output.write(items, lines, text, lowest, highest, has_access)
            except Exception:  # one handler's failure is not the others'
                output.handler.handleError(logging.makeLogRecord({"msg": "(log writer)"}))


class AccessLog:
    """One finished INFO line per call, e.g. the HTTP access line.

    When the root's batch handler is the only place a record of logger `name` would
    go, the line is built here and enqueued as a str: no LogRecord, no findCaller.
    Otherwise (pytest's caplog, a lab's own logging config) it is logged as usual."""

    def __init__(self, name: str, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        _access_names.add(name)
        self._logger = logging.getLogger(name)
        self._suffix = f" INFO {name}: "
        self._clock = clock

    def emit(self, text: str) -> None:
        logger = self._logger
        if not logger.isEnabledFor(_INFO):
            return
        put = _only_batch(logger)
        if put is None:
            logger.info("%s", text)
            return
        now = self._clock()
        put(local_second(now) + _MSECS[int((now - int(now)) * 1000)] + self._suffix + text)


def _only_batch(logger: logging.Logger) -> Callable[[Item], None] | None:
    """The batch handler's put if a record of `logger` would reach that handler and
    nothing else (Logger.handle/callHandlers' rules), else None. Checked per call (a
    few attribute reads), so a handler added anywhere (caplog's on root) is noticed."""
    if logger.filters:
        return None  # the logger that logs filters; its parents do not
    c = logger
    while not c.handlers:
        if not c.propagate or c.parent is None:
            return None
        c = c.parent
    if c is not logging.root or len(c.handlers) != 1:
        return None
    h = c.handlers[0]
    if type(h) is not BatchHandler or h.filters or h.level > _INFO:
        return None
    batch = h.batch
    return h.put if batch.lines_ok and batch.running else None


def setup(level: str | int, log_file: str | None, *, max_bytes: int, backups: int,
          stream: TextIO | None = None, console_level: str | int | None = None,
          access_console: bool | None = None, access_file: bool | None = None) -> LogBatch:
    """Root logging as main.py serve has it: stderr (or `stream`) plus, with
    `log_file`, a rotating UTF-8 file, through one LogBatch started here and stopped
    at exit. Returns the LogBatch (tests stop it to wait for the writes). `level` is
    the file's, and the console's unless `console_level` is given; `access_console`,
    `access_file`: whether access lines go there (None: by the level)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    levels, access = [level if console_level is None else console_level], [access_console]
    if log_file:
        handlers.append(logging.handlers.RotatingFileHandler(
            log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"))
        levels.append(level)
        access.append(access_file)
    formatter = logging.Formatter(FORMAT)
    for handler, each in zip(handlers, levels, strict=True):
        handler.setFormatter(formatter)
        handler.setLevel(each.upper() if isinstance(each, str) else each)
    batch = LogBatch(handlers, access=access)
    root = logging.getLogger()
    root.handlers[:] = [batch.handler]
    # Below every handler's level no record is made; access lines only if one writes them
    root.setLevel(min(h.level for h in handlers))
    wanted = any(o.takes_access for o in batch._outputs)
    logging.getLogger(ACCESS_LOGGER).setLevel(_INFO if wanted else logging.WARNING)
    batch.start()
    atexit.register(batch.stop)  # write what is queued before the process exits
    return batch
