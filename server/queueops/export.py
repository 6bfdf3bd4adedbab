"""GET /tasks.csv: the task history as a spreadsheet (issue 33). The filters of
GET /tasks; UTF-8 with a BOM and CRLF line ends, so Excel opens it with Chinese intact;
the header in the request's language. One row per scanned bottle (a task whose result
lists items under its command's ``items_key``: SCAN_QRCODE's ``scanned_bottles``), one
row for any other task. Newest first, read from the store a page at a time."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from server.api.routing import Request, Response, Router
from server.errors import ApiError
from tasks.commands import CommandTable
from tasks.models import ALL_STATUSES

# (the task document's key or the bottle's, the header's catalogue key), in column order.
TASK_COLUMNS: tuple[tuple[str, str], ...] = (
    ("task_id", "csv.task_id"), ("cmd_type", "csv.cmd_type"), ("status", "csv.status"),
    ("submit_time", "csv.submit_time"), ("start_time", "csv.start_time"),
    ("end_time", "csv.end_time"), ("submitted_by", "csv.submitted_by"),
    ("external_id", "csv.external_id"), ("sequence_id", "csv.sequence_id"),
    ("step", "csv.step"),
)
BOTTLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("rack", "csv.rack"), ("position", "csv.position"), ("code", "csv.code"),
)
MESSAGE_COLUMN = ("message", "csv.message")  # the result's message
COLUMNS = (*TASK_COLUMNS, *BOTTLE_COLUMNS, MESSAGE_COLUMN)

LIMIT_DEFAULT = 10_000
LIMIT_MAX = 100_000
PAGE = 500  # tasks read per store query (GET /tasks's largest page)
# The result key of a task whose command the table no longer knows (a changed file).
DEFAULT_ITEMS_KEY = "scanned_bottles"
# A cell a spreadsheet would read as a formula ("=HYPERLINK(...)" as an external_id)
# is written as text: a leading apostrophe (OWASP's CSV injection advice).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """One CSV cell: None is empty; a text a spreadsheet would run as a formula gets a
    leading apostrophe; numbers pass as they are."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def task_filters(req: Request) -> dict[str, str | None]:
    """GET /tasks's filters (status, cmd_type, sequence_id, external_id): an unknown
    status is 400 ``unknown_status``; an empty value is no filter."""
    status = req.query.get("status")
    if status is not None and status not in ALL_STATUSES:
        raise ApiError("unknown_status", 400,
                       params={"status": repr(status), "statuses": ", ".join(ALL_STATUSES)})
    return {"status": status,
            "cmd_type": req.query.get("cmd_type") or None,
            "sequence_id": req.query.get("sequence_id") or None,
            "external_id": req.query.get("external_id") or None}


def bottles(task: dict[str, Any], commands: CommandTable | None) -> list[dict[str, Any]]:
    """The items the task's result lists (SCAN_QRCODE: its scanned bottles, also those
    of a scan that ended early); [] for a task without any."""
    result = task.get("result")
    if not isinstance(result, dict):
        return []
    command = commands.get(task["cmd_type"]) if commands is not None else None
    key = command.items_key if command is not None and command.items_key else DEFAULT_ITEMS_KEY
    items = result.get(key)
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict)]


def task_rows(task: dict[str, Any], commands: CommandTable | None) -> list[list[Any]]:
    """The task's CSV rows: one per bottle, else one with the bottle cells empty."""
    head = [safe_cell(task.get(key)) for key, _ in TASK_COLUMNS]
    result = task.get("result")
    message = safe_cell(result.get("message") if isinstance(result, dict) else None)
    items = bottles(task, commands)
    if not items:
        return [[*head, "", "", "", message]]
    params = task.get("params")
    rack = params.get("rack") if isinstance(params, dict) else None  # items echo it
    return [[*head, safe_cell(item.get("rack", rack)), safe_cell(item.get("position")),
             safe_cell(item.get("code")), message] for item in items]


def tasks_csv(req: Request) -> Response:
    filters = task_filters(req)
    limit = req.query_int("limit", default=LIMIT_DEFAULT, low=1, high=LIMIT_MAX)
    commands = req.app.commands
    out = io.StringIO()
    out.write("\ufeff")  # the BOM: Excel then reads UTF-8 (as /audit.csv)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([req.t(key) for _, key in COLUMNS])
    # Encoded page by page: the documents of one page at a time, the bytes once.
    parts: list[bytes] = []
    cursor: int | None
    count, cursor = 0, None  # cursor: the seq of the last task read
    while count < limit:
        size = min(PAGE, limit - count)
        tasks, last_seq = req.app.manager.list_page(limit=size, offset=0, before_seq=cursor,
                                                    **filters)
        count += len(tasks)
        for task in tasks:
            writer.writerows(task_rows(task, commands))
        parts.append(out.getvalue().encode("utf-8"))
        out.seek(0)
        out.truncate()
        if len(tasks) < size or last_seq is None:
            break
        cursor = last_seq
    body = b"".join(parts)
    name = time.strftime("tasks-%Y%m%d-%H%M%S.csv", time.localtime())
    return Response(200, body, {"Content-Disposition": f'attachment; filename="{name}"'},
                    content_type="text/csv; charset=utf-8",
                    log_note=f"tasks.csv {count} tasks")


def add_routes(r: Router) -> None:
    r.add("GET", "/tasks.csv", tasks_csv, "read")
