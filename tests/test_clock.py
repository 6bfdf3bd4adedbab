"""server/clock.py: whether the OS says its clock is synchronised, as /health reports it
(the audit trail's times are this clock's: docs/security.md)."""

from __future__ import annotations

import sys
import time
import types

import pytest
import requests

from server import clock


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch) -> None:
    monkeypatch.setattr(clock, "_cached", None)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="adjtimex is Linux's")
def test_linux_answers_with_the_kernels_flag() -> None:
    answer = clock.clock_synchronized()
    assert isinstance(answer, bool)
    # What the kernel says, read again without the cache, is the same.
    assert clock._ask() is answer


def test_the_answer_is_kept_for_a_minute(monkeypatch) -> None:
    asked: list[bool] = []

    def ask() -> bool:
        asked.append(True)
        return len(asked) % 2 == 1  # True, then False: a new question shows

    monkeypatch.setattr(clock, "_ask", ask)
    assert clock.clock_synchronized() is True
    assert clock.clock_synchronized() is True
    assert len(asked) == 1
    # A minute later (the cached answer's time moved back) it asks again.
    monkeypatch.setattr(clock, "_cached", (time.monotonic() - clock.CACHE_S - 1, True))
    assert clock.clock_synchronized() is False
    assert len(asked) == 2


def test_cannot_tell_is_none_and_never_an_exception(monkeypatch) -> None:
    def broken() -> bool:
        raise OSError("no adjtimex here")

    monkeypatch.setattr(clock, "_linux", broken)
    monkeypatch.setattr(clock, "sys", types.SimpleNamespace(platform="linux"))
    assert clock._ask() is None
    for platform in ("win32", "darwin", "freebsd14"):
        monkeypatch.setattr(clock, "sys", types.SimpleNamespace(platform=platform))
        assert clock._ask() is None, platform


def test_health_reports_it(make_server) -> None:
    server = make_server()
    body = requests.get(server.url + "/health", timeout=5).json()
    assert "clock_synchronized" in body
    assert body["clock_synchronized"] is clock.clock_synchronized()
    if sys.platform.startswith("linux"):
        assert isinstance(body["clock_synchronized"], bool)
