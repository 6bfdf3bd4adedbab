"""GET /tasks.csv (issue 33 part 5): the task history as a spreadsheet, on a real server
with the simulator robot on a real pty. Real scans, a failed scan, a cancelled task and a
sequence; the file read back with the `csv` module as Excel would (UTF-8 with BOM, CRLF),
checked row by row against the tasks' own JSON documents."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
import requests

from server.queueops import export
from tests.conftest import SCAN, Client, wait_until

EN_HEADER = ["task_id", "cmd_type", "status", "submit_time", "start_time", "end_time",
             "submitted_by", "external_id", "sequence_id", "step", "rack", "position", "code",
             "message"]
ZH_HEADER = ["任务编号", "命令", "状态", "提交时间", "开始时间", "结束时间", "提交者", "外部编号",
             "序列编号", "步骤", "样品架", "架位", "二维码", "结果消息"]
ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}
CHINESE_ID = "样品批次-甲-001"
FORMULA_ID = "=HYPERLINK(\"http://x\",\"y\")"


def read_csv(r: requests.Response) -> list[list[str]]:
    """The reply as Excel reads it: the checks of its framing, then its rows."""
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="tasks-\d{8}-\d{6}\.csv"',
                        r.headers["Content-Disposition"]), r.headers["Content-Disposition"]
    raw = r.content
    assert raw.startswith(b"\xef\xbb\xbf"), raw[:20]  # the BOM
    assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b""), raw[:300]
    return list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))


def cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def expected_rows(task: dict[str, Any]) -> list[list[str]]:
    """What the file must hold for one task, from its JSON document."""
    head = [cell(task.get(k)) for k in EN_HEADER[:10]]
    result = task.get("result") or {}
    message = cell(result.get("message"))
    bottles = result.get("scanned_bottles") or []
    if not bottles:
        return [head + ["", "", "", message]]
    return [head + [cell(b["rack"]), cell(b["position"]), cell(b["code"]), message]
            for b in bottles]


def all_tasks(client: Client, **query: str) -> list[dict[str, Any]]:
    r = client.get("/tasks", params={"limit": "500", **query})
    assert r.status_code == 200, r.text
    return r.json()["tasks"]


@pytest.fixture
def history(server, client: Client) -> dict[str, Any]:
    """Two scans (one with a Chinese external_id, one whose external_id is a formula), a
    failed scan, a task cancelled before it started and a two-step sequence."""
    ids: dict[str, Any] = {}
    ids["scan"] = client.submit({**SCAN, "external_id": CHINESE_ID})
    ids["scan_b"] = client.submit({"cmd_type": "SCAN_QRCODE", "external_id": FORMULA_ID,
                                   "params": {"rack": "B", "positions": [5, 7]}})
    for key in ("scan", "scan_b"):
        assert client.wait_final(ids[key])["status"] == "completed"
    server.simulator.fault_next("SCAN_QRCODE")
    ids["failed"] = client.submit()
    assert client.wait_final(ids["failed"])["status"] == "failed"
    assert client.post("/queue/pause").status_code == 200
    ids["cancelled"] = client.submit({"cmd_type": "HOME"})
    assert client.session.delete(f"{client.url}/task/{ids['cancelled']}",
                                 timeout=10).status_code == 200
    assert client.post("/queue/resume").status_code == 200
    r = client.post("/sequences", {"name": "csv", "steps": [
        {"cmd_type": "HOME"}, {"cmd_type": "PICK", "params": {"position": 3}}]})
    assert r.status_code == 202, r.text
    ids["sequence"] = sid = r.json()["sequence_id"]
    wait_until(lambda: client.get(f"/sequences/{sid}").json()["status"] == "completed",
               message="the sequence to complete")
    return ids


def test_one_row_per_bottle_matching_the_tasks_json(client: Client,
                                                    history: dict[str, Any]) -> None:
    rows = read_csv(client.get("/tasks.csv"))
    assert rows[0] == EN_HEADER
    tasks = all_tasks(client)
    assert len(tasks) == 6  # 2 scans, the failed scan, the cancelled task, 2 steps
    # Newest first, as GET /tasks; each task's rows from its own document.
    assert rows[1:] == [row for task in tasks for row in expected_rows(task)]

    by_task: dict[str, list[list[str]]] = {}
    for row in rows[1:]:
        by_task.setdefault(row[0], []).append(row)
    scan = client.task(history["scan"])
    bottles = scan["result"]["scanned_bottles"]
    assert [(r[10], r[11], r[12]) for r in by_task[history["scan"]]] == [
        ("A", str(b["position"]), b["code"]) for b in bottles] and len(bottles) == 3
    assert [r[7] for r in by_task[history["scan"]]] == [CHINESE_ID] * 3  # Chinese intact
    assert by_task[history["scan"]][0][13] == scan["result"]["message"]
    b_rows = by_task[history["scan_b"]]
    assert [(r[10], r[11]) for r in b_rows] == [("B", "5"), ("B", "7")]
    assert b_rows[0][7] == "'" + FORMULA_ID  # a formula is text, not run by Excel
    # A task without bottles: one row, bottle cells empty, the result's message.
    for key, status in (("failed", "failed"), ("cancelled", "cancelled")):
        (row,) = by_task[history[key]]
        doc = client.task(history[key])
        assert (row[2], row[10:13]) == (status, ["", "", ""])
        assert row[13] == doc["result"]["message"] and row[13]
    steps = [row for row in rows[1:] if row[8] == history["sequence"]]
    assert sorted((row[1], row[9]) for row in steps) == [("HOME", "1"), ("PICK", "2")]


def test_header_in_the_requests_language_and_chinese_cells_intact(
        client: Client, history: dict[str, Any]) -> None:
    rows = read_csv(client.get("/tasks.csv", headers=ZH, params={"external_id": CHINESE_ID}))
    assert rows[0] == ZH_HEADER
    assert [row[0] for row in rows[1:]] == [history["scan"]] * 3
    assert {row[7] for row in rows[1:]} == {CHINESE_ID}
    assert "accept-language" in client.get("/tasks.csv").headers.get("Vary", "").lower()


def test_filters_and_limit_are_those_of_tasks(client: Client,
                                              history: dict[str, Any],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def ids(**query: str) -> list[str]:
        rows = read_csv(client.get("/tasks.csv", params=query))
        return list(dict.fromkeys(row[0] for row in rows[1:]))  # in order, once each

    for query in ({"status": "completed"}, {"status": "cancelled"}, {"cmd_type": "HOME"},
                  {"cmd_type": "SCAN_QRCODE", "status": "completed"},
                  {"sequence_id": history["sequence"]}, {"external_id": FORMULA_ID}):
        assert ids(**query) == [t["task_id"] for t in all_tasks(client, **query)], query
    assert ids(status="completed") and history["failed"] not in ids(status="completed")
    assert ids(external_id="nothing-has-this") == []
    # limit counts tasks, not rows; the store is read a page after another, each task
    # once, in order (pages of 2 here: 6 tasks, and a page cut in the middle by limit).
    monkeypatch.setattr(export, "PAGE", 2)
    tasks = all_tasks(client)
    for limit in (None, "6", "5", "2", "1"):
        query = {} if limit is None else {"limit": limit}
        rows = read_csv(client.get("/tasks.csv", params=query))
        wanted = tasks if limit is None else tasks[:int(limit)]
        assert rows[1:] == [row for task in wanted for row in expected_rows(task)], limit


def test_a_bad_filter_is_refused_as_by_tasks(client: Client) -> None:
    for query in ({"status": "done"}, {"limit": "x"}):
        r = client.get("/tasks.csv", params=query)
        same = client.get("/tasks", params=query)
        assert r.status_code == same.status_code == 400, r.text
        assert r.headers["Content-Type"].startswith("application/json")
        if "status" in query:
            assert r.json() == same.json() and r.json()["code"] == "unknown_status"
        else:
            assert r.json()["code"] == same.json()["code"] == "query_not_integer"
    for limit in ("0", "100001"):
        r = client.get("/tasks.csv", params={"limit": limit})
        assert r.status_code == 400 and r.json()["code"] == "query_out_of_range", r.text
    assert read_csv(client.get("/tasks.csv", params={"limit": "100000"})) == [EN_HEADER]
