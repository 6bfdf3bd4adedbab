"""The user guide's client (examples/guide_client.py), made safe for real use.

What changed, and why:
- every request has a timeout: a hung server or network cannot hang the script;
- the submit carries an Idempotency-Key and is retried (same key, growing pauses) when
  the connection fails: if only the reply was lost, the retry returns the task the first
  attempt made instead of running the robot twice;
- it waits with `GET /task/<id>?wait=30` (one request that returns as soon as the task
  ends) instead of a request every 2 s; it still works against a server without `wait`;
- `cancelled` ends the wait (the guide's loop only knows completed and failed);
- errors from the server are printed with the server's message.

Usage: python examples/better_client.py [COMMAND.json] [--url URL]
(env ROBOT_SERVER_URL and ROBOT_API_TOKEN are honoured)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any

import requests

FINAL = ("completed", "failed", "cancelled")
TIMEOUT = (5, 30)  # (connect, read) seconds for ordinary requests
LONG_POLL = 30  # seconds the server may hold GET /task/<id>?wait=


def headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def send_command(session: requests.Session, url: str, command: dict[str, Any],
                 retries: int = 5) -> str:
    """Queue the command; returns its task_id. Safe to retry: the key is the same."""
    key = str(uuid.uuid4())
    for attempt in range(retries + 1):
        try:
            r = session.post(url + "/", json=command, timeout=TIMEOUT,
                             headers={"Idempotency-Key": key})
        except (requests.ConnectionError, requests.Timeout) as exc:
            if attempt == retries:
                raise
            pause = min(0.5 * 2 ** attempt, 10)
            print(f"connection problem ({exc.__class__.__name__}); retry in {pause:g} s")
            time.sleep(pause)
            continue
        body = r.json()
        if r.status_code == 503 and attempt < retries:  # queue full: the server says later
            time.sleep(float(r.headers.get("Retry-After", "5")))
            continue
        if r.status_code not in (200, 202) or not body.get("success"):
            raise RuntimeError(f"not queued (HTTP {r.status_code}): {body.get('message')}")
        if r.headers.get("Idempotent-Replayed") == "true":
            print("(the first attempt had reached the server; no second task was made)")
        if body.get("warning"):
            print(f"warning: {body['warning']}")
        print(f"✓ task queued: {body['task_id']}")
        return body["task_id"]
    raise AssertionError("unreachable")


def wait_for_task(session: requests.Session, url: str, task_id: str,
                  timeout: float = 600) -> dict[str, Any] | None:
    """The final task document, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        wait = max(1, min(LONG_POLL, int(deadline - time.monotonic())))
        started = time.monotonic()
        try:
            r = session.get(f"{url}/task/{task_id}", params={"wait": wait},
                            timeout=(TIMEOUT[0], wait + TIMEOUT[1]))
        except (requests.ConnectionError, requests.Timeout) as exc:
            print(f"connection problem ({exc.__class__.__name__}); asking again")
            time.sleep(2)
            continue
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.json().get('message')}")
        task = r.json()
        progress = task.get("progress") or {}
        state = (task["status"], progress.get("done"))
        if state != last:
            done = f" {progress['done']}/{progress['total']}" if progress.get("total") else ""
            print(f"task status: {task['status']}{done}")
            last = state
        if task["status"] in FINAL:
            return task
        if time.monotonic() - started < 0.5:
            time.sleep(2)  # an older server answered at once (no ?wait=): poll gently
    print("✗ gave up waiting (the task keeps running on the server)")
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", default="SCAN_QR_CODE_command.json")
    parser.add_argument("--url", default=os.environ.get("ROBOT_SERVER_URL",
                                                        "http://127.0.0.1:8090"))
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    with open(args.file, encoding="utf-8") as fh:
        command = json.load(fh)
    session = requests.Session()
    session.headers.update(headers(os.environ.get("ROBOT_API_TOKEN")))
    url = args.url.rstrip("/")
    try:
        task_id = send_command(session, url, command)
        task = wait_for_task(session, url, task_id, args.timeout)
    except (requests.RequestException, RuntimeError) as exc:
        print(f"✗ {exc}")
        return 2
    if task is None:
        return 4
    result = task.get("result") or {}
    if task["status"] == "completed":
        print(f"✓ completed; scanned: {result.get('scanned_count')}")
        return 0
    print(f"✗ {task['status']}: {result.get('message')}")
    return 3 if task["status"] == "cancelled" else 1


if __name__ == "__main__":
    sys.exit(main())
