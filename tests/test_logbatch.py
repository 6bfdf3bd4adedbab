"""server.logbatch: the same lines as logging.Formatter and RotatingFileHandler wrote,
written in batches by one thread. Real files; no sleeps: stop() drains the queue."""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import logging.handlers
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server import logbatch
from server.logbatch import FORMAT, AccessLog, LogBatch

REFERENCE = logging.Formatter(FORMAT)


def _restore(batch: LogBatch, handlers: list[logging.Handler], level: int) -> None:
    """Undo logbatch.setup: its writer stopped, its files closed, the root as it was."""
    batch.stop()
    atexit.unregister(batch.stop)
    for handler in batch.handlers:
        handler.close()
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger(logbatch.ACCESS_LOGGER).setLevel(logging.NOTSET)


@contextlib.contextmanager
def installed(level: str = "INFO", log_file: Path | None = None, *, max_bytes: int = 1 << 20,
              backups: int = 2, stream: Any = None, **kw: Any) -> Iterator[LogBatch]:
    """logbatch.setup on the root logger for one test; pytest's own handlers are put
    back after it (they are the phase's, so this must run inside the test)."""
    root = logging.getLogger()
    saved, saved_level = root.handlers[:], root.level
    batch = logbatch.setup(level, str(log_file) if log_file else None, max_bytes=max_bytes,
                           backups=backups, stream=stream if stream is not None else io.StringIO(),
                           **kw)
    try:
        yield batch
    finally:
        _restore(batch, saved, saved_level)


class Expect(logging.Filter):
    """On a logger: what logging.Formatter(FORMAT) makes of each record, before the
    batch handler sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.lines.append(REFERENCE.format(record))
        return True


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def access_reference(now: float, name: str, text: str) -> str:
    record = logging.LogRecord(name, logging.INFO, __file__, 1, "%s", (text,), None)
    record.created, record.msecs = now, int((now - int(now)) * 1000) + 0.0
    return REFERENCE.format(record)


@pytest.fixture
def expect() -> Iterator[Expect]:
    spy = Expect()
    logger = logging.getLogger("test.logbatch")
    logger.addFilter(spy)
    yield spy
    logger.removeFilter(spy)


def test_lines_are_logging_formatters_on_stderr_and_in_the_file(tmp_path, expect) -> None:
    console = io.StringIO()
    log = logging.getLogger("test.logbatch")
    with installed("info", tmp_path / "server.log", stream=console):
        log.info("task %s %s pending", "20240101-000000-abcdef", "SCAN_QRCODE")
        log.warning("电机 %d%% 过载", 95)
        log.debug("not at INFO")
        log.error("no args, a literal %s stays")
    assert len(expect.lines) == 3
    wanted = "".join(line + "\n" for line in expect.lines)
    assert console.getvalue() == wanted
    assert text_of(tmp_path / "server.log") == wanted


@pytest.mark.parametrize("now", [1764642672.345, 1764642672.007, 1764642672.9996, 1764642673.0])
def test_an_access_line_is_what_logging_info_would_have_written(tmp_path, now) -> None:
    access = AccessLog("server.access", clock=lambda: now)
    text = '127.0.0.1 "GET /task/x HTTP/1.1" 200 215'
    with installed("INFO", tmp_path / "server.log") as batch:
        assert logbatch._only_batch(logging.getLogger("server.access")) is batch.handler.put
        access.emit(text)
    assert text_of(tmp_path / "server.log") == \
        access_reference(now, "server.access", text) + "\n"


def test_the_arguments_are_merged_when_logged(tmp_path) -> None:
    batch = LogBatch([logging.FileHandler(tmp_path / "f.log", encoding="utf-8")])
    batch.handlers[0].setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("test.logbatch.merge")
    logger.propagate = False
    logger.addHandler(batch.handler)
    try:
        items = [1]
        logger.warning("items %s", items)  # queued: the writer has not started yet
        items.append(2)
        record = batch.queue.get_nowait()
        assert (record.msg, record.args) == ("items [1]", None)
        batch.queue.put(record)
        batch.start()
        batch.stop()
    finally:
        logger.removeHandler(batch.handler)
        logger.propagate = True
        batch.handlers[0].close()
    assert text_of(tmp_path / "f.log").endswith(" WARNING test.logbatch.merge: items [1]\n")


def test_an_exception_comes_with_its_traceback(tmp_path, expect) -> None:
    log = logging.getLogger("test.logbatch")
    with installed("INFO", tmp_path / "server.log"):
        try:
            raise ValueError("boom 中文")
        except ValueError:
            log.exception("internal error on %s", "GET /x")
        log.info("after", stack_info=True)
    text = text_of(tmp_path / "server.log")
    assert text == "".join(line + "\n" for line in expect.lines)
    assert "Traceback (most recent call last):" in text and "ValueError: boom 中文\n" in text


def records(n: int, width: int = 60, *, chinese: bool = True) -> list[logging.LogRecord]:
    out = []
    for i in range(n):
        if chinese:
            message = f"line {i:05d} " + ("中" if i % 7 == 0 else "x") * (width + i % 13)
        else:
            message = f"line {i:05d} " + "x" * width
        record = logging.makeLogRecord({"name": "test.rotate", "msg": message,
                                        "levelno": logging.INFO, "levelname": "INFO"})
        # A fractional msecs, as Python 3.10 records have: "%03d" truncates it.
        record.created, record.msecs = 1764642672.0 + i / 100, i * 10 % 1000 + 0.7
        out.append(record)
    return out


LINE = len(REFERENCE.format(records(1, chinese=False)[0])) + 1


@pytest.mark.parametrize("max_bytes, chinese", [
    (3000, True),  # lines of every length, multi-byte ones counted in characters
    (2 * LINE, False),  # exactly two lines: the second one rolls over (>=, as the stdlib)
    (12_000, True),  # most batches in one write, line by line only near the limit
])
def test_rotation_is_the_one_of_rotating_file_handler(tmp_path, max_bytes, chinese) -> None:
    (tmp_path / "batch").mkdir()
    (tmp_path / "stdlib").mkdir()
    stdlib = logging.handlers.RotatingFileHandler(
        tmp_path / "stdlib" / "server.log", maxBytes=max_bytes, backupCount=3, encoding="utf-8")
    stdlib.setFormatter(logging.Formatter(FORMAT))
    mine = logging.handlers.RotatingFileHandler(
        tmp_path / "batch" / "server.log", maxBytes=max_bytes, backupCount=3, encoding="utf-8")
    mine.setFormatter(logging.Formatter(FORMAT))
    batch = LogBatch([mine], batch_max=50)  # several batches, several rotations in each
    for record in records(400, chinese=chinese):
        stdlib.handle(logging.makeLogRecord(record.__dict__))
        batch.handler.handle(record)
    batch.start()
    batch.stop()
    stdlib.close()
    mine.close()
    names = sorted(p.name for p in (tmp_path / "stdlib").iterdir())
    assert names == ["server.log", "server.log.1", "server.log.2", "server.log.3"]  # 3 kept
    assert sorted(p.name for p in (tmp_path / "batch").iterdir()) == names
    for name in names:
        assert (tmp_path / "batch" / name).read_bytes() == \
            (tmp_path / "stdlib" / name).read_bytes(), name
        assert (tmp_path / "batch" / name).stat().st_size < max_bytes


def test_caplog_sees_access_lines_when_it_listens(caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.access")
    access = AccessLog("server.access")
    access.emit("127.0.0.1 no batch handler at all")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == \
        [("server.access", logging.INFO, "127.0.0.1 no batch handler at all")]


def test_a_second_root_handler_gets_the_line_too(tmp_path, caplog) -> None:
    with installed("INFO", tmp_path / "server.log") as batch:
        logging.getLogger().addHandler(caplog.handler)
        assert logbatch._only_batch(logging.getLogger("server.access")) is None
        AccessLog("server.access").emit("seen by both")
    assert [r.getMessage() for r in caplog.records] == ["seen by both"]
    assert text_of(tmp_path / "server.log").endswith(" INFO server.access: seen by both\n")
    assert not batch.running


def test_the_fast_path_follows_logging_s_propagation_rules(tmp_path) -> None:
    access, parent = logging.getLogger("server.access"), logging.getLogger("server")
    other = logging.NullHandler()
    with installed("INFO", tmp_path / "server.log") as batch:
        fast = batch.handler.put
        assert logbatch._only_batch(access) is fast
        parent.addHandler(other)
        assert logbatch._only_batch(access) is None
        parent.removeHandler(other)
        access.propagate = False
        assert logbatch._only_batch(access) is None
        access.propagate = True
        access.addFilter(Expect())
        assert logbatch._only_batch(access) is None
        access.filters.clear()
        parent.addFilter(Expect())  # a parent's filters never see a child's records
        assert logbatch._only_batch(access) is fast
        parent.filters.clear()
        batch.handler.setLevel(logging.WARNING)
        assert logbatch._only_batch(access) is None
        batch.handler.setLevel(logging.NOTSET)
        assert logbatch._only_batch(access) is fast


def test_below_the_level_nothing_is_written(tmp_path) -> None:
    console = io.StringIO()
    with installed("WARNING", tmp_path / "server.log", stream=console):
        AccessLog("server.access").emit("127.0.0.1 an access line")
        logging.getLogger("test.logbatch").info("an info line")
        logging.getLogger("test.logbatch").warning("a warning")
    assert text_of(tmp_path / "server.log").endswith(" WARNING test.logbatch: a warning\n")
    assert len(text_of(tmp_path / "server.log").splitlines()) == 1
    assert console.getvalue().count("\n") == 1


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


@pytest.mark.parametrize("batch_max, flushes", [(1000, 1), (100, 5)])
def test_one_flush_per_batch(batch_max, flushes) -> None:
    stream = CountingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    batch = LogBatch([handler], batch_max=batch_max)
    for record in records(500):
        batch.handler.handle(record)
    batch.start()
    batch.stop()
    assert stream.flushes == flushes
    assert stream.getvalue().count("\n") == 500


class Flaky(io.StringIO):
    def write(self, s: str) -> int:
        if "BAD" in s:
            raise OSError("the console went away for this one")
        return super().write(s)


def test_a_line_that_cannot_be_written_does_not_stop_the_others(capsys) -> None:
    flaky, gbk = Flaky(), io.TextIOWrapper(io.BytesIO(), encoding="gbk")
    handlers = [logging.StreamHandler(flaky), logging.StreamHandler(gbk)]
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT))
    batch = LogBatch(handlers)
    for message in ("first", "BAD line", "中文 and an emoji 😀", "last"):
        batch.handler.handle(logging.makeLogRecord({"msg": message, "levelname": "INFO",
                                                    "levelno": logging.INFO, "name": "t"}))
    batch.start()
    batch.stop()
    assert [line.split(": ", 1)[1] for line in flaky.getvalue().splitlines()] == \
        ["first", "中文 and an emoji 😀", "last"]
    assert "--- Logging error ---" in capsys.readouterr().err
    gbk.flush()
    written = gbk.buffer.getvalue().decode("gbk").splitlines()  # type: ignore[attr-defined]
    assert [line.split(": ", 1)[1] for line in written] == \
        ["first", "BAD line", "中文 and an emoji ?", "last"]
    assert batch._thread is None  # the writer ended on stop(), not on an error


def test_stop_writes_everything_queued_by_many_threads(tmp_path) -> None:
    access = AccessLog("server.access")
    with installed("INFO", tmp_path / "server.log") as batch:
        def client(k: int) -> None:
            for i in range(500):
                access.emit(f"client {k} request {i}")
                if i % 50 == 0:
                    logging.getLogger("test.logbatch").info("client %d at %d", k, i)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        batch.stop()
        batch.stop()  # twice: atexit calls it again
        lines = text_of(tmp_path / "server.log").splitlines()
    assert len(lines) == 8 * 510
    for k in range(8):
        mine = [line for line in lines if f"client {k} request " in line]
        assert [int(line.rsplit(" ", 1)[1]) for line in mine] == list(range(500))


def test_main_setup_logging_keeps_its_name_and_output(tmp_path) -> None:
    import constants
    import main

    root = logging.getLogger()
    saved, saved_level = root.handlers[:], root.level
    batch = main.setup_logging(None, str(tmp_path / "server.log"))
    try:
        assert root.handlers == [batch.handler]
        assert root.level == logging.getLevelName(constants.LOG_LEVEL)
        console, file = batch.handlers
        assert type(console) is logging.StreamHandler
        assert isinstance(file, logging.handlers.RotatingFileHandler)
        assert (file.maxBytes, file.backupCount, file.encoding) == \
            (constants.LOG_FILE_MAX_BYTES, constants.LOG_FILE_BACKUPS, "utf-8")
        assert all(logbatch.is_standard(h.formatter) for h in batch.handlers)
    finally:
        _restore(batch, saved, saved_level)


@contextlib.contextmanager
def on_root(batch: LogBatch) -> Iterator[LogBatch]:
    """A hand-made LogBatch as the root's only handler, at INFO, for one test."""
    root = logging.getLogger()
    saved, saved_level = root.handlers[:], root.level
    root.handlers[:] = [batch.handler]
    root.setLevel(logging.INFO)
    batch.start()
    try:
        yield batch
    finally:
        batch.stop()
        root.handlers[:] = saved
        root.setLevel(saved_level)


def test_handler_levels_apply_to_access_lines_too() -> None:
    console, file = io.StringIO(), io.StringIO()
    handlers = [logging.StreamHandler(console), logging.StreamHandler(file)]
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT))
    handlers[0].setLevel(logging.WARNING)
    with on_root(LogBatch(handlers)) as batch:
        assert logbatch._only_batch(logging.getLogger("server.access")) is batch.handler.put
        AccessLog("server.access").emit("an access line")
        logging.getLogger("test.logbatch").warning("a warning")
    assert console.getvalue().endswith(" WARNING test.logbatch: a warning\n")
    assert console.getvalue().count("\n") == 1
    assert " INFO server.access: an access line\n" in file.getvalue()
    assert file.getvalue().count("\n") == 2


def test_a_handler_with_its_own_format_gets_records_not_lines() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s|%(name)s|%(message)s"))
    with on_root(LogBatch([handler])) as batch:
        assert not batch.lines_ok
        assert logbatch._only_batch(logging.getLogger("server.access")) is None
        AccessLog("server.access").emit("an access line")
    assert out.getvalue() == "INFO|server.access|an access line\n"
    assert logbatch._only_batch(logging.getLogger("server.access")) is None  # stopped


# -- the console and the file: each its own level, access lines where asked -----------------
@pytest.mark.parametrize("access_console", [False, True])
def test_the_console_keeps_to_warnings_and_access_lines_go_where_asked(
        tmp_path, access_console) -> None:
    console = io.StringIO()
    with installed("INFO", tmp_path / "server.log", stream=console, console_level="WARNING",
                   access_console=access_console) as batch:
        assert logging.getLogger().level == logging.INFO  # the file's
        assert logbatch._only_batch(logging.getLogger("server.access")) is batch.handler.put
        AccessLog("server.access").emit('127.0.0.1 "GET /queue/status HTTP/1.1" 200 9')
        logging.getLogger("test.logbatch").info("robot link connected")
        logging.getLogger("test.logbatch").warning("queue paused")
    shown = console.getvalue().splitlines()
    assert [line.split(" ", 2)[2] for line in shown] == \
        (["INFO server.access: 127.0.0.1 \"GET /queue/status HTTP/1.1\" 200 9"]
         if access_console else []) + ["WARNING test.logbatch: queue paused"]
    logged = text_of(tmp_path / "server.log")
    assert "server.access" in logged and "robot link connected" in logged \
        and "queue paused" in logged


def test_access_records_are_sorted_too_when_logged_as_records(tmp_path) -> None:
    """With another handler listening, AccessLog logs a record: it is still an access
    line, kept off the console that does not take them."""
    console = io.StringIO()
    spy = logging.NullHandler()
    with installed("INFO", tmp_path / "server.log", stream=console, console_level="INFO",
                   access_console=False):
        logging.getLogger().addHandler(spy)
        assert logbatch._only_batch(logging.getLogger("server.access")) is None
        AccessLog("server.access").emit("an access record")
        logging.getLogger("test.logbatch").info("an info record")
        logging.getLogger().removeHandler(spy)
    assert "an access record" not in console.getvalue()
    assert "an info record" in console.getvalue()
    assert "an access record" in text_of(tmp_path / "server.log")


def test_no_access_line_is_made_where_none_is_written() -> None:
    """The console alone at WARNING: a request builds no access line at all."""
    with installed("INFO", console_level="WARNING", access_console=False):
        assert logging.getLogger().level == logging.WARNING
        assert not logging.getLogger("server.access").isEnabledFor(logging.INFO)
    with installed("INFO", console_level="WARNING", access_console=True):
        assert logging.getLogger("server.access").isEnabledFor(logging.INFO)
        assert not logging.getLogger("test.logbatch").isEnabledFor(logging.INFO)


@pytest.mark.parametrize("level, access, console_level, console_access, file_access", [
    (None, None, logging.WARNING, False, True),  # the default: requests in the file only
    ("INFO", None, logging.INFO, True, True),  # an explicit --log-level INFO shows them
    ("debug", "file", logging.DEBUG, False, True),
    (None, "console", logging.WARNING, True, True),
    ("INFO", "off", logging.INFO, False, False),
    ("WARNING", None, logging.WARNING, False, False),
])
def test_main_setup_logging_sends_access_lines_where_the_flags_say(
        tmp_path, level, access, console_level, console_access, file_access) -> None:
    import main

    root = logging.getLogger()
    saved, saved_level = root.handlers[:], root.level
    batch = main.setup_logging(level, str(tmp_path / "server.log"), access)
    try:
        console, file = batch._outputs
        assert console.handler.level == console_level
        assert file.handler.level == (logging.getLevelName(level.upper()) if level
                                      else logging.INFO)
        assert (console.takes_access, file.takes_access) == (console_access, file_access)
        assert logging.getLogger("server.access").isEnabledFor(logging.INFO) is \
            (console_access or file_access)
    finally:
        _restore(batch, saved, saved_level)
