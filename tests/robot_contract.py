"""A contract every robot codec and its simulator must pass, through the real link.

Reusable: subclass ``RobotContract`` in a test module named ``test_*.py``, give the
codec spec (``protocol``, as ``--robot-protocol`` takes it) and ``make_simulator(tmp_path)``
returning a started-able simulator with this surface:

* ``start()``, ``stop()``, and ``path``: the URL or device path to open, which stays
  the same across ``unplug()`` / ``replug()`` (the cable pulled and put back);
* ``set_fault(mode)`` for at least ``"hang_after_ack"`` (takes a command, then says
  nothing more until STOP, and nothing to that STOP either) and ``"garbage"`` (junk
  lines between the real ones), ``None`` to clear; a command keeps the mode it
  started with;
* ``commands() -> list[dict]`` what it received, each with the canonical ``"cmd"``
  (``"STOP"``, ``"SCAN_QRCODE"``, ...);
* ``set_fault`` also takes ``"foreign_item"`` (an extra progress item, after the first,
  for a position the scan did not ask for), ``"repeat_item"`` (the first item twice)
  and ``"short_count"`` (the last position neither reported nor counted): replies out
  of step with their command, which the link must catch whatever the codec;
* ``SCAN_QRCODE`` with ``rack``/``positions``, one progress item per position with
  ``position``, ``code`` and ``rack``, slow enough at its speed (about 20 ms a bottle)
  that a STOP lands in the middle of a 10-position scan.

The built-in ``json`` and ``text`` protocols run it in tests/test_robot_contract.py,
the G-code-like example in examples/gcode_robot/.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from robot import CommandOutcome, RobotLink, load_codec
from tasks.commands import load_commands
from tests.conftest import wait_until

SCAN3 = {"rack": "A", "positions": [1, 2, 3]}
SCAN10 = {"rack": "B", "positions": list(range(1, 11))}


class RobotContract:
    protocol = "json"
    timeout = 2.0
    # No-id protocols: longer than the simulator's BUSY interval (robot/link/handshake.py).
    settle_time = 0.2

    def make_simulator(self, tmp_path: Path) -> Any:
        """A simulator (not started); ``tmp_path`` is the test's own folder."""
        raise NotImplementedError

    # -- fixtures ------------------------------------------------------------------------
    @pytest.fixture
    def sim(self, tmp_path: Path) -> Iterator[Any]:
        simulator = self.make_simulator(tmp_path)
        simulator.start()
        yield simulator
        simulator.stop()

    @pytest.fixture
    def link(self, sim: Any) -> Iterator[RobotLink]:
        codec = load_codec(self.protocol)
        codec.set_wire_forms(load_commands(None).wire_forms())
        table = load_commands(None)
        lk = RobotLink(str(sim.path), codec=codec,
                       robot_timeout=self.timeout, reconnect_min=0.05, reconnect_max=0.2,
                       handshake_timeout=1.0, settle_time=self.settle_time,
                       reply_rules=table.reply_rules())
        lk.start()
        yield lk
        lk.stop()

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def _in_background(link: RobotLink, cmd: str, params: dict[str, Any],
                       **kw: Any) -> tuple[threading.Thread, list[CommandOutcome],
                                           threading.Event]:
        first_item = threading.Event()
        out: list[CommandOutcome] = []

        def on_progress(event: dict[str, Any]) -> None:
            if event.get("item") is not None:
                first_item.set()

        thread = threading.Thread(target=lambda: out.append(
            link.execute(cmd, params, on_progress=on_progress, **kw)), daemon=True)
        thread.start()
        return thread, out, first_item

    @staticmethod
    def _in_step(link: RobotLink) -> None:
        """The next command gets its own replies: a late reply to an earlier one (a
        STOP's bare "ok") taken as its result would end it at once with no bottles."""
        assert link.wait_ready(10), link.info()  # no ids: a STOP is followed by a settle
        outcome = link.execute("SCAN_QRCODE", dict(SCAN3))
        assert outcome.success, outcome
        assert [i["position"] for i in outcome.items] == [1, 2, 3], outcome

    @staticmethod
    def _stops(sim: Any) -> int:
        return sum(1 for c in sim.commands() if c.get("cmd") == "STOP")

    # -- the contract ----------------------------------------------------------------------
    def test_handshake_names_the_firmware(self, link: RobotLink) -> None:
        info = link.info()
        assert info["ready"] and info["connected"], info
        assert info["firmware"], info
        assert info["protocol"] == link.codec.name

    def test_scan_maps_to_bottles(self, link: RobotLink) -> None:
        outcome = link.execute("SCAN_QRCODE", dict(SCAN3))
        assert outcome.success, outcome
        assert outcome.message == "SCAN_QRCODE完成", outcome.message
        assert [i["position"] for i in outcome.items] == [1, 2, 3]
        assert all(i["rack"] == "A" and i["code"] for i in outcome.items), outcome.items
        assert outcome.fault is None and not outcome.aborted

    def test_stop_while_running_keeps_the_items(self, link: RobotLink, sim: Any) -> None:
        thread, out, first_item = self._in_background(link, "SCAN_QRCODE", dict(SCAN10))
        assert first_item.wait(5), "no progress item"
        assert link.abort()
        thread.join(5)
        outcome = out[0]
        assert not outcome.success and outcome.aborted, outcome
        assert 1 <= len(outcome.items) < 10, outcome.items
        wait_until(lambda: self._stops(sim) >= 1, 5, message="STOP received")
        self._in_step(link)
        self._in_step(link)

    def test_silence_times_out_sends_stop_and_resynchronises(self, link: RobotLink,
                                                             sim: Any) -> None:
        sim.set_fault("hang_after_ack")
        thread, out, _ = self._in_background(link, "SCAN_QRCODE", dict(SCAN3), timeout=0.3)
        wait_until(lambda: any(c.get("cmd") == "SCAN_QRCODE" for c in sim.commands()), 5,
                   message="SCAN received")
        sim.set_fault(None)  # the hung command keeps its mode; the resync PING is answered
        thread.join(5)
        outcome = out[0]
        assert outcome.fault == "timeout" and "STOP sent" in outcome.message, outcome
        wait_until(lambda: self._stops(sim) >= 1, 5, message="STOP received")
        assert link.wait_ready(5), link.info()
        self._in_step(link)

    def test_unplug_fails_the_command_then_reconnects(self, link: RobotLink,
                                                      sim: Any) -> None:
        thread, out, first_item = self._in_background(link, "SCAN_QRCODE", dict(SCAN10))
        assert first_item.wait(5), "no progress item"
        sim.unplug()
        thread.join(5)
        outcome = out[0]
        assert outcome.fault == "disconnected" and not outcome.success, outcome
        assert outcome.items, "items scanned before the unplug are kept"
        sim.replug()
        wait_until(lambda: link.info()["ready"], 10, message="reconnected")
        assert link.info()["reconnects"] >= 1
        self._in_step(link)

    def test_noise_is_skipped_not_taken_as_a_reply(self, link: RobotLink, sim: Any) -> None:
        sim.set_fault("garbage")
        outcome = link.execute("SCAN_QRCODE", dict(SCAN3))
        assert outcome.success, outcome
        assert [i["position"] for i in outcome.items] == [1, 2, 3]
        assert link.info()["skipped_lines"] > 0
        rx = [e["line"] for e in outcome.transcript if e["dir"] == "rx"]
        assert len(rx) > 4, "the skipped lines are shown in the transcript"

    @pytest.mark.parametrize("mode", ["foreign_item", "repeat_item", "short_count"])
    def test_a_reply_that_does_not_fit_its_command_fails_out_of_step(
            self, link: RobotLink, sim: Any, mode: str) -> None:
        """robot/link/fit.py: a bottle not asked for, one reported twice, or a count short of
        the positions asked fails the command; nothing of it is kept as its bottles."""
        sim.set_fault(mode)
        outcome = link.execute("SCAN_QRCODE", dict(SCAN3))
        assert not outcome.success and outcome.fault == "out_of_step", outcome
        assert outcome.code == "robot_out_of_step" and outcome.params["line"], outcome
        assert outcome.items == [] and not outcome.data, "no partial result is kept"
        marked = [e for e in outcome.transcript if e.get("out_of_step")]
        assert len(marked) == 1 and marked[0]["dir"] == "rx", outcome.transcript
        wait_until(lambda: self._stops(sim) >= 1, 5, message="STOP after the out-of-step line")
        sim.set_fault(None)
        self._in_step(link)
        assert link.info()["out_of_step"] == 1
