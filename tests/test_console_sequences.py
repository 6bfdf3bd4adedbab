"""The console's lines for sequences (console/events.py): queued, held with its reason,
waiting for a confirmation, ended; from the real server's event stream."""

from __future__ import annotations

import re

from console.events import ConsoleEvents
from tests.conftest import Client, wait_until

CJK = re.compile(r"[\u4e00-\u9fff]")


def _lines(server, lang: str) -> tuple[ConsoleEvents, list[str]]:
    lines: list[str] = []
    reporter = ConsoleEvents(server.events, lang, write=lines.append)
    reporter.start()
    return reporter, lines


def test_held_confirm_and_end_each_get_one_line(make_server) -> None:
    server = make_server()
    client = Client(server)
    reporter, lines = _lines(server, "en")
    try:
        server.simulator.set_fault("fail")
        r = client.post("/sequences", {"name": "rack A", "steps": [
            {"cmd_type": "HOME"}, {"cmd_type": "CONFIRM", "params": {"message": "load B"}}]})
        sid = r.json()["sequence_id"]
        held = wait_until(lambda: [x for x in lines if "HELD" in x], message="held line")
        assert sid in held[0] and "step 1 of 2" in held[0] and "simulated failure" in held[0]
        server.simulator.set_fault(None)
        assert client.post(f"/sequences/{sid}/recover", {"action": "retry"}).status_code == 200
        confirm = wait_until(lambda: [x for x in lines if "confirmation" in x])
        assert "load B" in confirm[0] and "step 2" in confirm[0]
        assert client.post(f"/sequences/{sid}/confirm").status_code == 200
        done = wait_until(lambda: [x for x in lines if f"sequence {sid} rack A completed" in x])
        assert len(done) == 1
        # One line per change an operator must know of, not one per event.
        assert len([x for x in lines if x.startswith("[") and "sequence" in x]) == 4
    finally:
        reporter.stop()


def test_the_lines_speak_chinese(make_server) -> None:
    server = make_server(lang="zh")
    client = Client(server)
    reporter, lines = _lines(server, "zh")
    try:
        server.simulator.set_fault("fail")
        sid = client.post("/sequences", {"steps": [{"cmd_type": "HOME"}]}).json()["sequence_id"]
        held = wait_until(lambda: [x for x in lines if sid in x and "停在第 1 步" in x])
        assert CJK.search(held[0].split(":", 1)[-1])
        assert client.post(f"/sequences/{sid}/recover", {"action": "abort"}).status_code == 200
        wait_until(lambda: [x for x in lines if sid in x and "失败" in x])
    finally:
        reporter.stop()
