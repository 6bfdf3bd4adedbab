"""Sequences from the client side (docs/sequences.md): client/api.py's sequence calls, and
`main.py submit FILE --wait` / `main.py sequence ...` run in process through main.main(),
against a real server with the simulator robot."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import main
from client import cli
from client.api import RobotClient, RobotHTTPError, RobotTimeoutError
from tests.conftest import ROOT, wait_until

EXAMPLE = os.path.join(ROOT, "SCAN_RACKS_sequence.json")
TWO_STEPS = {"name": "home then scan", "external_id": "LIMS-1",
             "steps": [{"cmd_type": "HOME"},
                       {"cmd_type": "SCAN_QRCODE", "params": {"rack": "A", "positions": [1, 2]},
                        "label": "scan A"}]}
GATE = {"steps": [{"cmd_type": "CONFIRM", "params": {"message": "Load rack B, then confirm"}},
                  {"cmd_type": "HOME"}]}


def fast_client(server: Any) -> RobotClient:
    return RobotClient(server.url, poll_interval=0.1)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@contextlib.contextmanager
def confirm_when_waiting(client: RobotClient,
                         prompted: threading.Event) -> Iterator[threading.Thread]:
    """A person at the bench: once the CLI has asked, confirms the sequence that waits
    at a CONFIRM."""
    def waiting() -> str | None:
        if not prompted.is_set():
            return None
        for seq in client.sequences(status="running")["sequences"]:
            if seq.get("confirm"):
                return seq["sequence_id"]
        return None

    def confirm() -> None:
        client.confirm_sequence(wait_until(waiting, 20, 0.02, "a CONFIRM step waiting"))

    thread = threading.Thread(target=confirm, daemon=True)
    thread.start()
    yield thread
    thread.join(20)


@pytest.fixture
def write(tmp_path: Any) -> Any:
    def make(body: Any, name: str = "seq.json") -> str:
        path = tmp_path / name
        path.write_text(json.dumps(body), encoding="utf-8")
        return str(path)
    return make


# -- the Python client ------------------------------------------------------------------------
def test_submit_sequence_wait_completed_with_updates(server) -> None:
    client = fast_client(server)
    updates: list[tuple[int, str | None]] = []
    seq = client.submit_sequence(TWO_STEPS, wait=True, timeout=30, on_update=lambda s, t: (
        updates.append((s["current_step"], t["task_id"] if t else None))))
    assert seq["status"] == "completed" and seq["current_step"] is None
    assert [s["status"] for s in seq["steps"]] == ["completed", "completed"]
    assert seq["steps"][1]["label"] == "scan A" and seq["steps"][1]["attempts"] == 1
    assert seq["progress"]["steps_done"] == 2 and seq["external_id"] == "LIMS-1"
    step_tasks = {s["task_id"] for s in seq["steps"]}
    assert {t for _, t in updates if t} <= step_tasks  # only the steps' own tasks
    assert client.task(seq["steps"][1]["task_id"])["result"]["scanned_count"] == 2

    assert client.sequence(seq["sequence_id"])["status"] == "completed"
    page = client.sequences(status="completed", limit=5)
    assert [s["sequence_id"] for s in page["sequences"]] == [seq["sequence_id"]]
    assert "steps" not in page["sequences"][0]  # a summary


def test_submit_sequence_is_idempotent_and_validation_is_all_or_nothing(server) -> None:
    client = fast_client(server)
    first = client.submit_sequence(TWO_STEPS, idempotency_key="batch-7")
    again = client.submit_sequence(TWO_STEPS, idempotency_key="batch-7")
    assert first["code"] == "queued" and first["replayed"] is False
    assert len(first["task_ids"]) == 2 and first["sequence_id"].startswith("seq_")
    assert again["sequence_id"] == first["sequence_id"] and again["replayed"] is True
    with pytest.raises(RobotHTTPError) as info:
        client.submit_sequence({**TWO_STEPS, "name": "other"}, idempotency_key="batch-7")
    with pytest.raises(RobotHTTPError) as on_post:  # "as on POST /"
        client.submit({"cmd_type": "HOME"}, idempotency_key="batch-7")
    assert info.value.status == on_post.value.status and info.value.status in (409, 422)
    assert info.value.code == on_post.value.code

    bad = {"steps": [{"cmd_type": "HOME"}, {"cmd_type": "DANCE"}]}
    with pytest.raises(RobotHTTPError) as info:
        client.submit_sequence(bad)
    assert info.value.status == 422 and info.value.code == "sequence_invalid"
    assert [e["step"] for e in info.value.body["errors"]] == [2]
    plan = client.validate_sequence(TWO_STEPS)["plan"]
    assert [s["cmd_type"] for s in plan["steps"]] == ["HOME", "SCAN_QRCODE"]
    assert client.wait_sequence(first["sequence_id"], 30)["status"] == "completed"
    assert client.queue_status()["total_tasks"] == 2  # one sequence, no more


def test_held_sequence_returns_then_recover_retry_completes(server) -> None:
    client = fast_client(server)
    server.simulator.set_fault("fail")
    seq_id = client.submit_sequence(TWO_STEPS)["sequence_id"]
    held = client.wait_sequence(seq_id, timeout=30)  # until_held: returns on held
    assert held["status"] == "held" and held["hold_code"] == "step_failed"
    assert held["current_step"] == 1 and held["steps"][0]["status"] == "failed"
    with pytest.raises(RobotTimeoutError) as info:
        client.wait_sequence(seq_id, timeout=0.3, until_held=False)
    assert info.value.task is not None and info.value.task["status"] == "held"
    with pytest.raises(RobotHTTPError) as bad:
        client.recover_sequence(seq_id, "again")
    assert bad.value.status == 400 and bad.value.code == "recover_action_invalid"
    with pytest.raises(RobotHTTPError) as bad:
        client.confirm_sequence(seq_id)
    assert bad.value.status == 409 and bad.value.code == "not_waiting_confirm"

    server.simulator.set_fault(None)
    reply = client.recover_sequence(seq_id, "retry")
    assert reply.get("sequence", reply)["sequence_id"] == seq_id  # the document
    done = client.wait_sequence(seq_id, timeout=30, until_held=False)
    assert done["status"] == "completed" and done["steps"][0]["attempts"] == 2
    assert len(done["steps"][0]["task_ids"]) == 2
    with pytest.raises(RobotHTTPError) as late:
        client.recover_sequence(seq_id, "skip")
    assert late.value.status == 409  # the server says sequence_ended


def test_confirm_and_cancel(server) -> None:
    client = fast_client(server)
    seq_id = client.submit_sequence(GATE)["sequence_id"]
    waiting = wait_until(lambda: client.sequence(seq_id)["confirm"], 20, message="CONFIRM")
    assert waiting["message"] == "Load rack B, then confirm" and waiting["step"] == 1
    with pytest.raises(RobotHTTPError) as info:
        client.recover_sequence(seq_id, "skip")
    assert info.value.status == 409 and info.value.code == "sequence_not_held"
    with pytest.raises(RobotTimeoutError):  # a CONFIRM waits for a person, not the script
        client.wait_sequence(seq_id, timeout=0.3)
    client.confirm_sequence(seq_id)
    assert client.wait_sequence(seq_id, timeout=30)["status"] == "completed"
    with pytest.raises(RobotHTTPError) as info:
        client.confirm_sequence(seq_id)
    assert info.value.status == 409

    other = client.submit_sequence(GATE)["sequence_id"]
    wait_until(lambda: client.sequence(other)["confirm"], 20, message="the second CONFIRM")
    client.cancel_sequence(other)
    cancelled = client.wait_sequence(other, timeout=30)
    assert cancelled["status"] == "cancelled"
    assert [s["status"] for s in cancelled["steps"]] == ["cancelled", "cancelled"]
    with pytest.raises(RobotHTTPError) as info:
        client.cancel_sequence(other)
    assert info.value.status == 409


# -- main.py submit FILE --wait / main.py sequence ----------------------------------------------
def test_cli_submit_the_example_file_wait_shows_steps_and_the_confirm(make_server, capsys,
                                                                       monkeypatch) -> None:
    server = make_server(sim_speed=50.0)  # 0.4 s a bottle: each scan is seen running
    prompted, say = threading.Event(), cli.ProgressView.say

    def say_and_tell(view: cli.ProgressView, text: str) -> None:
        say(view, text)
        if "waits for confirmation" in text:
            prompted.set()

    monkeypatch.setattr(cli.ProgressView, "say", say_and_tell)
    with open(EXAMPLE, encoding="utf-8") as fh:
        example = json.load(fh)
    assert [s["cmd_type"] for s in example["steps"]] == ["HOME", "SCAN_QRCODE", "CONFIRM",
                                                         "SCAN_QRCODE"]
    assert example["steps"][1]["retry"] == 1 and example["steps"][2]["params"]["timeout_s"] == 600
    with confirm_when_waiting(fast_client(server), prompted):
        code, out, err = run_cli(capsys, "submit", EXAMPLE, "--url", server.url, "--wait",
                                 "--timeout", "30")
    assert code == 0, err
    seq = json.loads(out)
    assert seq["status"] == "completed" and len(seq["steps"]) == 4
    assert f"queued: sequence {seq['sequence_id']}, 4 steps" in err
    assert "step 3 waits for confirmation: Load rack B, then confirm" in err
    assert f"python main.py sequence {seq['sequence_id']} --confirm" in err
    assert "step 2 of 4: scan rack A (SCAN_QRCODE)" in err and "3/3" in err
    assert "step 4 of 4: scan rack B (SCAN_QRCODE)" in err and "2/2" in err
    assert f"sequence {seq['sequence_id']} completed: 4 of 4 steps done" in err


def test_cli_held_sequence_exit_7_then_recover_and_show(server, capsys, write) -> None:
    server.simulator.set_fault("fail")
    code, out, err = run_cli(capsys, "submit", write(TWO_STEPS), "--url", server.url,
                             "--wait", "--timeout", "30")
    assert code == 7, err
    seq_id = json.loads(out)["sequence_id"]
    assert f"sequence {seq_id} held: 0 of 2 steps done" in err
    assert "held at step 1, HOME:" in err and "[step_failed]" in err
    assert f"python main.py sequence {seq_id} --recover retry|skip|abort" in err
    assert "step 1, HOME failed" in err

    code, out, err = run_cli(capsys, "sequence", seq_id, "--url", server.url)
    assert code == 0, err
    assert f"sequence {seq_id}: held" in out and '"home then scan" [LIMS-1]' in out
    table = out.splitlines()
    header = next(i for i, line in enumerate(table) if "attempts" in line)
    assert table[header].split() == ["step", "label", "command", "status", "attempts"]
    assert table[header + 1].split() == [">", "1", "-", "HOME", "failed", "1"]
    assert table[header + 2].split()[:5] == ["2", "scan", "A", "SCAN_QRCODE", "pending"]

    server.simulator.set_fault(None)
    code, out, err = run_cli(capsys, "sequence", seq_id, "--recover", "retry", "--url",
                             server.url)
    assert code == 0, err
    assert f"sequence {seq_id}: " in out and "attempts" in out  # the document after it
    assert fast_client(server).wait_sequence(seq_id, 30)["status"] == "completed"
    code, out, err = run_cli(capsys, "sequence", seq_id, "--url", server.url, "--lang", "zh")
    assert code == 0 and "已完成 2/2 步" in out and "尝试次数" in out
    assert any(line.split()[:2] == ["1", "-"] and line.split()[-1] == "2"
               for line in out.splitlines())  # step 1 ran twice
    code, out, err = run_cli(capsys, "sequence", seq_id, "--recover", "skip", "--url",
                             server.url)
    assert code == 6 and "HTTP 409" in err and "has ended" in err


def test_cli_sequence_confirm_list_and_usage(server, capsys, write) -> None:
    code, out, err = run_cli(capsys, "submit", write(GATE), "--url", server.url)
    assert code == 0, err
    seq_id = out.strip()
    assert seq_id.startswith("seq_") and "2 steps" in err
    client = fast_client(server)
    wait_until(lambda: client.sequence(seq_id)["confirm"], 20, message="CONFIRM")
    code, out, err = run_cli(capsys, "sequence", seq_id, "--url", server.url)
    assert "step 1 waits for confirmation: Load rack B, then confirm" in out
    code, out, err = run_cli(capsys, "sequence", seq_id, "--confirm", "--url", server.url)
    assert code == 0, err
    assert client.wait_sequence(seq_id, 30)["status"] == "completed"
    code, out, err = run_cli(capsys, "sequence", seq_id, "--confirm", "--url", server.url)
    assert code == 6 and "HTTP 409" in err

    code, out, err = run_cli(capsys, "sequence", "--url", server.url)
    assert code == 0 and seq_id in out and "2/2 steps" in out
    code, out, err = run_cli(capsys, "sequence", "--json", "--url", server.url)
    assert json.loads(out)["sequences"][0]["sequence_id"] == seq_id
    code, out, err = run_cli(capsys, "sequence", "--cancel", "--url", server.url)
    assert code == 2 and "need a sequence ID" in err


def test_cli_wait_timeout_exit_4_then_cancel(server, capsys, write) -> None:
    code, out, err = run_cli(capsys, "submit", write(GATE), "--url", server.url, "--wait",
                             "--timeout", "0.5")
    assert code == 4, err
    seq_id = fast_client(server).sequences()["sequences"][0]["sequence_id"]
    assert f"sequence {seq_id} is still running" in err
    assert f"python main.py sequence {seq_id} --cancel" in err
    code, out, err = run_cli(capsys, "sequence", seq_id, "--cancel", "--url", server.url)
    assert code == 0, err
    assert fast_client(server).wait_sequence(seq_id, 30)["status"] == "cancelled"


def test_cli_refused_sequence_file_exit_2_with_each_steps_error(server, capsys, write) -> None:
    bad = {"steps": [{"cmd_type": "HOME"}, {"cmd_type": "DANCE"},
                     {"cmd_type": "CONFIRM", "params": {"message": "ok"}, "retry": 2}]}
    code, out, err = run_cli(capsys, "submit", write(bad), "--url", server.url, "--wait")
    assert code == 2 and "HTTP 422, sequence_invalid" in err
    assert "  step 2: " in err and "DANCE" in err and "  step 3: " in err
    assert fast_client(server).queue_status()["total_tasks"] == 0
