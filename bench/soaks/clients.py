"""Crash soak's clients: threads submitting MOVE_TOs whose params are unique per logical
request, each with its own Idempotency-Key and retried with the same key until 202; and the
end-of-run reads (every task paged by cursor, waiting for the queue to drain).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import requests

from soaks.harness import SOAK_TIMEOUT, params_for


@dataclass
class Ack:
    key: str
    client: int
    k: int
    task_id: str
    attempts: int
    replayed: bool  # Idempotent-Replayed: an earlier attempt had been committed


class Client(threading.Thread):
    """Submits a stream of unique MOVE_TOs; each is retried with its key until 202."""

    name_prefix = "soak-client"

    def __init__(self, idx: int, url: str, run_id: str, stop: threading.Event,
                 rng: random.Random, think: tuple[float, float], give_up: float) -> None:
        super().__init__(name=f"{self.name_prefix}-{idx}", daemon=True)
        self.idx, self.url, self.run_id, self.stop = idx, url, run_id, stop
        self.rng, self.think, self.give_up = rng, think, give_up
        self.acks: list[Ack] = []
        self.gave_up: list[str] = []
        self.refused: Counter[str] = Counter()  # final answers other than 202
        self.retries = 0

    def run(self) -> None:
        session = requests.Session()
        k = 0
        while not self.stop.is_set():
            self.submit(session, k)
            k += 1
            self.stop.wait(self.rng.uniform(*self.think))

    def request(self, k: int) -> tuple[str, dict[str, Any]]:
        """The k-th submit's Idempotency-Key and body."""
        return (f"soak-{self.run_id}-{self.idx}-{k}",
                {"cmd_type": "MOVE_TO", "params": params_for(self.idx, k)})

    def accepted(self, key: str, k: int, body: dict[str, Any], r: requests.Response,
                 attempts: int) -> None:
        self.acks.append(Ack(key, self.idx, k, r.json()["task_id"], attempts,
                             r.headers.get("Idempotent-Replayed") == "true"))

    def submit(self, session: requests.Session, k: int) -> None:
        key, body = self.request(k)
        deadline = time.monotonic() + self.give_up
        attempts = 0
        while time.monotonic() < deadline:
            attempts += 1
            try:
                r = session.post(self.url + "/", json=body, headers={"Idempotency-Key": key},
                                 timeout=SOAK_TIMEOUT)
            except requests.RequestException:
                r = None
            if r is not None and r.status_code == 202:
                self.accepted(key, k, body, r, attempts)
                return
            if r is not None and r.status_code != 503:
                try:
                    code = r.json().get("code", "")
                except ValueError:
                    code = ""
                self.refused[f"{r.status_code} {code}"] += 1
                return
            self.retries += 1
            time.sleep(0.05)
        self.gave_up.append(key)


def list_tasks(session: requests.Session, url: str, deadline: float) -> list[dict[str, Any]]:
    """Every task, newest first, paged by cursor."""
    tasks: list[dict[str, Any]] = []
    cursor = None
    while time.monotonic() < deadline:
        q = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = session.get(url + "/tasks", params=q, timeout=SOAK_TIMEOUT).json()
        tasks += page["tasks"]
        cursor = page.get("next_cursor")
        if not cursor:
            return tasks
    raise RuntimeError("GET /tasks paging did not finish in time")


def wait_drained(session: requests.Session, url: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            status = session.get(url + "/queue/status", timeout=SOAK_TIMEOUT).json()
        except requests.RequestException:
            time.sleep(0.2)
            continue
        if status.get("pending_tasks") == 0 and not status.get("running_task"):
            status["drained"] = True
            return status
        time.sleep(0.2)
    status["drained"] = False
    return status
