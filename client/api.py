"""A small Python client for the robot task server (standard library only).

One self-contained file: it imports nothing from this project, so copy it alone to a
client PC (as robot_client.py, say) and import it from there.

    from client.api import RobotClient     # copied alone: from robot_client import ...
    client = RobotClient("http://127.0.0.1:8090", token=None)
    task = client.submit({"cmd_type": "SCAN_QRCODE", "params": {...}}, wait=True)
    print(task["status"], task["result"])
    seq = client.submit_sequence({"steps": [...]}, wait=True)  # docs/sequences.md

Why it is more than `urllib.request.urlopen` in a loop:
- every submit carries a fresh Idempotency-Key and is retried (with backoff) on
  connection errors with the SAME key, so a reply lost on the way back never makes
  the robot run a command twice;
- waiting uses the server's `GET /task/<id>?wait=S` long-poll (the server answers
  after at most its max_wait, 55 s by default, with `timed_out: true`, and the
  client asks again) and falls back to plain polling against a server without it;
- `cancelled` is a final state (the user guide's loop only knows completed/failed).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})  # of tasks and sequences
DEFAULT_URL = "http://127.0.0.1:8090"
POLL_INTERVAL_S = 2.0  # the guide's interval, for servers without ?wait=
# One long-poll request: under the 60 s idle timeout of common proxies. The server
# clamps a longer one to its max_wait (55 s by default); servers before that refused
# it (400) and said their bound, which _wait_once learns.
LONG_POLL_S = 30.0
SequenceUpdate = Callable[[dict[str, Any], dict[str, Any] | None], None]


class RobotClientError(Exception):
    """Base class of every error this client raises."""


class RobotConnectionError(RobotClientError):
    """The server could not be reached, or the connection broke before a full reply."""


class RobotHTTPError(RobotClientError):
    """The server answered with an error status; `message` is the server's own text."""

    def __init__(self, status: int, message: str, body: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.body = body
        self.headers = headers or {}
        # The server's machine code (e.g. "task_not_found"): match on it, not on the
        # message, which is in the language the server was asked for.
        self.code = body.get("code") if isinstance(body, dict) else None


class RobotTimeoutError(RobotClientError):
    """The task (or sequence) did not end in time; `task` is its last known document."""

    def __init__(self, task_id: str, timeout: float, task: dict[str, Any] | None,
                 what: str = "task") -> None:
        status = task.get("status") if task else "unknown"
        super().__init__(f"{what} {task_id} not finished after {timeout:g} s (still {status})")
        self.task_id = task_id
        self.task = task


# Errors worth a retry: the request may or may not have reached the server.
_RETRYABLE = (ConnectionError, TimeoutError, socket.timeout, http.client.IncompleteRead,
              http.client.BadStatusLine, http.client.RemoteDisconnected)


def _reason(exc: BaseException) -> BaseException:
    return exc.reason if isinstance(exc, urllib.error.URLError) and isinstance(
        exc.reason, BaseException) else exc


class RobotClient:
    def __init__(self, url: str = DEFAULT_URL, token: str | None = None,
                 timeout: float = 10.0, *, retries: int = 4, backoff: float = 0.5,
                 poll_interval: float = POLL_INTERVAL_S) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout  # per request (plus the long-poll time when waiting)
        self.retries = retries
        self.backoff = backoff
        self.poll_interval = poll_interval
        self.long_poll: bool | None = None  # None until we know whether ?wait= works
        self.max_wait = LONG_POLL_S  # lowered by an older server's 400 (see _wait_once)
        self.sleep: Callable[[float], None] = time.sleep  # tests may replace it
        self.reason: str | None = None  # sent with each change: the audit trail's "why"

    # -- transport -------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *,
                headers: dict[str, str] | None = None,
                timeout: float | None = None) -> tuple[int, dict[str, str], Any]:
        """One HTTP exchange: (status, headers, decoded JSON). Raises RobotClientError."""
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        if self.reason and method != "GET":
            req.add_header("X-Reason", urllib.parse.quote(self.reason))
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                raw = resp.read()
                status, reply_headers = resp.status, dict(resp.headers.items())
        except urllib.error.HTTPError as exc:
            try:
                raw = exc.read()
            except (OSError, http.client.HTTPException):
                raw = b""
            payload = _decode(raw)
            message = payload.get("message") if isinstance(payload, dict) else None
            raise RobotHTTPError(exc.code, message or exc.reason or "error", payload,
                                 dict(exc.headers.items()) if exc.headers else None) from None
        except (OSError, http.client.HTTPException) as exc:
            # URLError is an OSError; its reason holds the socket error.
            reason = _reason(exc)
            err = RobotConnectionError(f"{method} {self.url}{path}: "
                                       f"{reason.__class__.__name__}: {reason}".rstrip(": "))
            err.retryable = isinstance(reason, _RETRYABLE)  # type: ignore[attr-defined]
            raise err from exc
        return status, reply_headers, _decode(raw)

    # -- tasks -------------------------------------------------------------------------------
    def submit(self, cmd: dict[str, Any], wait: bool = False, timeout: float = 600.0, *,
               on_update: Callable[[dict[str, Any]], None] | None = None,
               idempotency_key: str | None = None) -> dict[str, Any]:
        """Queue a command: the server's 202 body, or with `wait` the final task."""
        body = self._post_retrying("/", cmd, idempotency_key)
        if not wait:
            return body
        return self.wait(body["task_id"], timeout=timeout, on_update=on_update)

    def _post_retrying(self, path: str, payload: Any, key: str | None) -> dict[str, Any]:
        """POST, resent on connection errors and 503 under the same Idempotency-Key: the
        server answers a resend with what the first attempt created (Idempotent-Replayed)."""
        key = key or str(uuid.uuid4())
        attempt = 0
        while True:
            try:
                _, headers, body = self.request("POST", path, payload,
                                                headers={"Idempotency-Key": key})
                break
            except (RobotConnectionError, RobotHTTPError) as exc:
                if attempt >= self.retries or not _worth_retrying(exc):
                    raise
                delay = min(self.backoff * 2 ** attempt, 10.0)
                if isinstance(exc, RobotHTTPError):
                    delay = max(delay, _retry_after(exc))
                attempt += 1
                self.sleep(delay)
        body = dict(body or {})
        body["replayed"] = headers.get("Idempotent-Replayed") == "true"
        body["attempts"] = attempt + 1
        return body

    def task(self, task_id: str) -> dict[str, Any]:
        return self.request("GET", f"/task/{_quote(task_id)}")[2]

    def wait(self, task_id: str, timeout: float = 600.0, *,
             on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """The task once final (completed, failed or cancelled).

        Raises RobotTimeoutError after `timeout` s. With `on_update`, the task is
        reported at least every second (short long-polls) so a progress bar moves.
        """
        deadline = time.monotonic() + timeout
        slice_s = 1.0 if on_update else LONG_POLL_S
        task: dict[str, Any] | None = None
        failures = 0
        while True:
            remaining = deadline - time.monotonic()
            if task is not None and task.get("status") in FINAL_STATUSES:
                return task
            if remaining <= 0:
                raise RobotTimeoutError(task_id, timeout, task)
            try:
                task = self._wait_once(task_id, min(slice_s, remaining), remaining)
            except RobotConnectionError as exc:
                failures = self._backoff(exc, failures, remaining)
                continue
            failures = 0
            if on_update is not None:
                on_update(task)

    def _backoff(self, exc: RobotConnectionError, failures: int, remaining: float) -> int:
        """Asking is safe to repeat: a dropped network only delays the answer."""
        if failures >= self.retries or not _worth_retrying(exc):
            raise exc
        self.sleep(min(self.backoff * 2 ** failures, 10.0, max(remaining, 0.0)))
        return failures + 1

    def _wait_once(self, task_id: str, wait: float, remaining: float) -> dict[str, Any]:
        path = f"/task/{_quote(task_id)}"
        if self.long_poll is False or wait < 0.05:
            task = self.task(task_id)
            if task.get("status") not in FINAL_STATUSES:
                self.sleep(min(self.poll_interval, remaining))
            return task
        wait = min(wait, self.max_wait)
        started = time.monotonic()
        try:
            _, _, task = self.request("GET", f"{path}?wait={wait:.2f}",
                                      timeout=self.timeout + wait)
        except RobotHTTPError as exc:
            # Servers that refused a wait above their max_wait instead of clamping it.
            body = exc.body if isinstance(exc.body, dict) else {}
            if exc.status != 400 or (body.get("param") != "wait" and "wait" not in exc.message):
                raise
            high = body.get("high")  # this server's bound; older ones only said it in text
            found = re.search(r"\(0, ([0-9.]+)\]", exc.message)
            limit = float(high) if isinstance(high, (int, float)) else \
                float(found.group(1)) if found else None
            if limit and 0 < limit < wait:
                self.max_wait = limit  # a server with a lower max_wait
            else:
                self.long_poll = False  # an older server rejects the parameter
            return self._wait_once(task_id, min(wait, self.max_wait), remaining)
        elapsed = time.monotonic() - started
        # Present only where the server long-polls: then an early answer that is not
        # final is its max_wait (it clamps), not a server ignoring ?wait=.
        timed_out = task.pop("timed_out", None)
        if timed_out is not None:
            self.long_poll = True
        if task.get("status") in FINAL_STATUSES:
            return task
        if timed_out is None and elapsed < min(0.5, wait / 4):
            # Back at once and not final: the server ignored ?wait=; poll like the guide.
            self.long_poll = False
            self.sleep(min(self.poll_interval, remaining))
        else:
            self.long_poll = True
        return task

    def cancel(self, task_id: str) -> dict[str, Any]:
        """200 cancelled now, or 202 STOP sent (final once the robot confirms)."""
        return self.request("POST", f"/task/{_quote(task_id)}/cancel")[2]

    def tasks(self, status: str | None = None, limit: int = 50) -> dict[str, Any]:
        query = {"limit": str(limit)}
        if status:
            query["status"] = status
        return self.request("GET", "/tasks?" + urllib.parse.urlencode(query))[2]

    # -- sequences (docs/sequences.md) ------------------------------------------------------
    def submit_sequence(self, seq: dict[str, Any], wait: bool = False, timeout: float = 600.0,
                        *, until_held: bool = True, idempotency_key: str | None = None,
                        on_update: SequenceUpdate | None = None) -> dict[str, Any]:
        """Queue a sequence (`{"steps": [...]}`), resent as submit is: the 202 body, or
        with `wait` the sequence document as wait_sequence returns it."""
        body = self._post_retrying("/sequences", seq, idempotency_key)
        if not wait:
            return body
        return self.wait_sequence(body["sequence_id"], timeout, until_held=until_held,
                                  on_update=on_update)

    def validate_sequence(self, seq: dict[str, Any]) -> dict[str, Any]:
        """`POST /sequences?dry_run=1`: the plan, with estimated durations; queues nothing."""
        return self.request("POST", "/sequences?dry_run=1", seq)[2]

    def sequence(self, sequence_id: str) -> dict[str, Any]:
        return self.request("GET", f"/sequences/{_quote(sequence_id)}")[2]

    def sequences(self, status: str | None = None, limit: int = 50,
                  cursor: str | None = None) -> dict[str, Any]:
        query = {"limit": limit, "status": status, "cursor": cursor}
        return self.request("GET", "/sequences?" + urllib.parse.urlencode(
            {k: v for k, v in query.items() if v is not None}))[2]

    def wait_sequence(self, sequence_id: str, timeout: float = 600.0, *,
                      until_held: bool = True,
                      on_update: SequenceUpdate | None = None) -> dict[str, Any]:
        """The sequence once completed, failed, cancelled or (`until_held`) held: a held
        sequence waits for a person's recover. RobotTimeoutError after `timeout` s.
        Long-polls the current step's task; `on_update(sequence, step_task or None)`
        comes at least every second."""
        deadline = time.monotonic() + timeout
        slice_s = 1.0 if on_update else LONG_POLL_S
        task: dict[str, Any] | None = None
        failures = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                seq = self.sequence(sequence_id)
                status = seq.get("status")
                if status in FINAL_STATUSES or (until_held and status == "held"):
                    return seq
                if remaining <= 0:
                    raise RobotTimeoutError(sequence_id, timeout, seq, "sequence")
                k, steps = seq.get("current_step"), seq.get("steps") or []
                task_id = steps[k - 1].get("task_id") if isinstance(k, int) and \
                    0 < k <= len(steps) else None
                task = task if task and task.get("task_id") == task_id else None
                if task_id and status != "held" and (task or {}).get("status") \
                        not in FINAL_STATUSES:
                    task = self._wait_once(task_id, min(slice_s, remaining), remaining)
                else:  # held, or its step ended and the next has not begun yet
                    self.sleep(min(self.poll_interval if status == "held" else 0.2, remaining))
            except RobotConnectionError as exc:
                failures = self._backoff(exc, failures, remaining)
                continue
            failures = 0
            if on_update is not None:
                on_update(seq, task)

    def recover_sequence(self, sequence_id: str, action: str) -> dict[str, Any]:
        """A held sequence: `retry` its step, `skip` it, or `abort` the sequence."""
        return self._sequence_post(sequence_id, "recover", {"action": action})

    def confirm_sequence(self, sequence_id: str) -> dict[str, Any]:
        """Answer the CONFIRM step the sequence waits at."""
        return self._sequence_post(sequence_id, "confirm")

    def cancel_sequence(self, sequence_id: str) -> dict[str, Any]:
        """200 cancelled, or 202 while the robot has not yet confirmed the STOP."""
        return self._sequence_post(sequence_id, "cancel")

    def fixit_sequence(self, sequence_id: str, cmd: dict[str, Any]) -> dict[str, Any]:
        """While held: run one command (HOME, say) at once, ahead of everything."""
        return self._sequence_post(sequence_id, "fixit", cmd)

    def _sequence_post(self, sequence_id: str, action: str, body: Any = None) -> dict[str, Any]:
        # The server's reply: its code, message and the sequence document (docs/sequences.md).
        return self.request("POST", f"/sequences/{_quote(sequence_id)}/{action}", body)[2]

    # -- queue and robot ----------------------------------------------------------------------
    def queue_status(self) -> dict[str, Any]:
        return self.request("GET", "/queue/status")[2]

    def pause(self, reason: str | None = None) -> dict[str, Any]:
        return self.request("POST", "/queue/pause", {"reason": reason} if reason else None)[2]

    def resume(self) -> dict[str, Any]:
        return self.request("POST", "/queue/resume")[2]

    def stop(self) -> dict[str, Any]:
        """Emergency stop: STOP to the robot, running task cancelled, queue paused."""
        return self.request("POST", "/robot/stop")[2]

    def robot(self) -> dict[str, Any]:
        return self.request("GET", "/robot")[2]

    def health(self) -> dict[str, Any]:
        try:
            return self.request("GET", "/health")[2]
        except RobotHTTPError as exc:  # 503 still carries the health document
            if exc.status == 503 and isinstance(exc.body, dict):
                return exc.body
            raise


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {"message": raw[:200].decode("utf-8", "replace")}


def _quote(task_id: str) -> str:
    return urllib.parse.quote(task_id, safe="")


def _worth_retrying(exc: RobotClientError) -> bool:
    if isinstance(exc, RobotHTTPError):
        return exc.status == 503  # queue full / store busy: the server says "later"
    return bool(getattr(exc, "retryable", False))


def _retry_after(exc: RobotHTTPError) -> float:
    raw = exc.headers.get("Retry-After", "")
    return min(float(raw), 30.0) if raw.isdigit() else 0.0
