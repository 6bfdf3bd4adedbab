"""The application objects a request handler may reach, held by the HTTP server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.metrics import Metrics
from tasks.commands import CommandTable
from tasks.events import EventBus
from tasks.manager import TaskManager
from tasks.worker import Worker


@dataclass
class ServerConfig:
    mode: str = "queue"  # "sync" or "queue"
    lang: str = "en"  # replies to requests without a usable Accept-Language
    max_body: int = 64 * 1024
    max_wait: float = 55.0  # long-polls are clamped to it: under a proxy's 60 s timeout
    sync_timeout: float = 3600.0
    recent_in_status: int = 10
    request_timeout: float = 10.0  # per read or write while a request is in progress
    request_deadline: float = 15.0  # whole head and body, from the first byte (slowloris)
    idle_timeout: float = 30.0  # a keep-alive connection with no new request is closed
    max_connections: int = 200  # ordinary connections; beyond: 503 at accept
    max_streams: int = 1000  # long-polls (?wait=) and /events, counted apart
    stop_reserve: int = 8  # connections beyond the cap, for POST /robot/stop only
    api_token: str | None = None
    allow: tuple[str, ...] = ()  # client networks (CIDR); empty: everyone
    allowed_hosts: tuple[str, ...] = ()  # extra names accepted in the Host header
    # Peers whose X-Forwarded-For/-Host/-Proto count (server/forwarded.py): this machine.
    trusted_proxies: tuple[str, ...] = ("127.0.0.0/8", "::1")
    cors_origin: str | None = None  # the one cross-origin site allowed to call the API
    static_dir: str | None = None


@dataclass
class Application:
    manager: TaskManager
    worker: Worker
    link: Any  # robot.RobotLink (typed loosely so tests may pass a double)
    events: EventBus
    config: ServerConfig
    metrics: Metrics = field(default_factory=Metrics)
    # What this server accepts and documents; None: the manager's (they must agree).
    commands: CommandTable | None = None

    def __post_init__(self) -> None:
        if self.commands is None:
            self.commands = self.manager.commands

    def health(self) -> tuple[int, dict[str, Any]]:
        robot = self.robot_info()
        alive = self.worker.alive
        status = "ok" if alive and robot.get("connected") else "degraded"
        if not alive:
            status = "down"
        body = {"status": status, "mode": self.config.mode, "worker_alive": alive,
                "robot": {k: robot.get(k) for k in ("connected", "port", "last_seen",
                                                     "firmware", "error")},
                **self.manager.queue_state()}
        return (200 if alive else 503), body

    def robot_info(self) -> dict[str, Any]:
        return dict(self.link.info())
