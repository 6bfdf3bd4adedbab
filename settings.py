"""The one settings object: what the flags, the menus and the server share.

Every default is a constant of constants.py; `Settings()` is all defaults, and
`from_args` overrides only what the user gave. main.py's flags show these defaults
in their help, the menus offer them, and the server (server/runtime.py and the
Application in server/app.py) reads the same frozen object, never a copy of it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import constants
from i18n import DEFAULT_LANG


@dataclass(frozen=True)
class Settings:
    # Execution
    mode: str = constants.DEFAULT_MODE  # "sync" or "queue"
    # What stored failure reasons and replies without a usable Accept-Language speak.
    lang: str = DEFAULT_LANG
    auto_resume: bool = constants.AUTO_RESUME
    max_queue: int = constants.MAX_QUEUE_SIZE
    shutdown_grace: float = constants.SHUTDOWN_GRACE_S
    keep_days: float = constants.KEEP_DAYS
    db: str = constants.DB_PATH
    db_busy_timeout: float = constants.DB_BUSY_TIMEOUT_S
    commands_file: str | None = constants.COMMANDS_FILE  # None: tasks/commands/commands.json
    # HTTP
    host: str = constants.HTTP_SERVER_HOST
    port: int = constants.HTTP_SERVER_PORT
    backlog: int = constants.LISTEN_BACKLOG
    max_body: int = constants.MAX_BODY_BYTES
    max_wait: float = constants.MAX_WAIT_S
    sync_timeout: float = constants.SYNC_WAIT_TIMEOUT_S
    recent_in_status: int = constants.RECENT_TASKS_IN_STATUS
    request_timeout: float = constants.REQUEST_TIMEOUT_S
    request_deadline: float = constants.REQUEST_DEADLINE_S
    idle_timeout: float = constants.IDLE_TIMEOUT_S
    max_connections: int = constants.MAX_CONNECTIONS
    stop_reserve: int = constants.STOP_RESERVE
    max_streams: int = constants.MAX_STREAMS
    event_queue: int = constants.EVENT_QUEUE
    # Access
    api_token: str | None = constants.API_TOKEN
    allow: tuple[str, ...] = constants.ALLOW
    allowed_hosts: tuple[str, ...] = constants.ALLOWED_HOSTS
    trusted_proxies: tuple[str, ...] = constants.TRUSTED_PROXIES
    cors_origin: str | None = constants.CORS_ORIGIN
    # Robot link
    robot: str = constants.ROBOT_PORT
    robot_protocol: str = constants.ROBOT_PROTOCOL
    baudrate: int = constants.ROBOT_BAUDRATE
    robot_timeout: float = constants.ROBOT_TIMEOUT_S
    # None: each command's timeout_s from the command table; a mapping (even empty)
    # wins, which is how an explicit --robot-timeout applies to every command.
    command_timeouts: Mapping[str, float] | None = None
    write_timeout: float = constants.ROBOT_WRITE_TIMEOUT_S
    reconnect_min: float = constants.ROBOT_RECONNECT_MIN_S
    reconnect_max: float = constants.ROBOT_RECONNECT_MAX_S
    progress_interval: float = constants.PROGRESS_INTERVAL_S
    robot_settle: float = constants.ROBOT_SETTLE_S
    robot_settle_timeout: float = constants.ROBOT_SETTLE_TIMEOUT_S
    sim_speed: float = constants.SIM_SPEED
    sim_transport: str = constants.SIM_TRANSPORT
    require_robot: bool = constants.REQUIRE_ROBOT
    # Logging
    log_level: str = constants.LOG_LEVEL
    log_file: str | None = constants.LOG_FILE
    log_max_bytes: int = constants.LOG_FILE_MAX_BYTES
    log_backups: int = constants.LOG_FILE_BACKUPS

    def command_timeouts_for(self, table_timeouts: Mapping[str, float]) -> dict[str, float]:
        """Per-command silence timeouts: the command table's, unless set here."""
        chosen = table_timeouts if self.command_timeouts is None else self.command_timeouts
        return dict(chosen)


DEFAULTS = Settings()

# main.py's flags (argparse dests) and the fields they set; a flag left out is None.
FLAG_FIELDS = {
    "mode": "mode", "host": "host", "port": "port", "db": "db",
    "auto_resume": "auto_resume", "max_queue": "max_queue", "keep_days": "keep_days",
    "shutdown_grace": "shutdown_grace", "allow": "allow", "allowed_host": "allowed_hosts",
    "trusted_proxy": "trusted_proxies", "cors_origin": "cors_origin",
    "max_connections": "max_connections", "robot": "robot", "baud": "baudrate",
    "robot_protocol": "robot_protocol", "sim_speed": "sim_speed",
    "sim_transport": "sim_transport", "robot_timeout": "robot_timeout",
    "robot_settle": "robot_settle",
    "commands": "commands_file", "log_level": "log_level", "log_file": "log_file",
}


def from_args(args: Any, **resolved: Any) -> Settings:
    """The defaults with what the user gave: the flags in ``args`` that are not None,
    then ``resolved``, values the caller worked out (e.g. the database's full path)."""
    given = {name: getattr(args, flag) for flag, name in FLAG_FIELDS.items()
             if getattr(args, flag, None) is not None}
    if "robot_timeout" in given:
        given["command_timeouts"] = {}  # an operator's explicit timeout is for every command
    token = getattr(args, "api_token", None)
    if token is None:
        token = os.environ.get("ROBOT_API_TOKEN", DEFAULTS.api_token)
    # An empty --api-token "" means none, so a unit file can switch it off.
    given["api_token"] = token or None
    if getattr(args, "lang", None):
        # What the operator chose, even where this console cannot show it: the API's
        # clients and the dashboard are not limited by this console's code page.
        given["lang"] = args.lang
    return replace(DEFAULTS, **{**given, **resolved})
