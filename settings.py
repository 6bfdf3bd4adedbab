"""The one settings object: what the flags, the menus and the server share.

Every default is a constant of constants.py; `Settings()` is all defaults, and
`from_args` overrides only what the user gave: a flag, else its ROBOT_* environment
variable (`FLAGS`: one per flag, parsed as the flag is), so a service's settings live in
one place (its environment) for serve, check and run alike. main.py's flags show these
defaults in their help, the menus offer them, and the server (server/runtime.py and the
Application in server/app.py) reads the same frozen object, never a copy of it.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import constants
from i18n import DEFAULT_LANG, CodedError, t


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
    # Identity: what /health, /robot, /metrics, the banner and the dashboard's title show
    name: str | None = constants.ROBOT_NAME  # None: this PC's host name (device_name)
    labels: tuple[tuple[str, str], ...] = constants.ROBOT_LABELS  # (key, value), as given
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
    require_reason: bool = constants.REQUIRE_REASON
    webhook_allow: tuple[str, ...] = constants.WEBHOOK_ALLOW
    webhook_retry: tuple[float, ...] = constants.WEBHOOK_RETRY_S
    webhook_timeout: float = constants.WEBHOOK_TIMEOUT_S
    public_url: str | None = constants.PUBLIC_URL
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
    access_log: str | None = constants.ACCESS_LOG
    log_max_bytes: int = constants.LOG_FILE_MAX_BYTES
    log_backups: int = constants.LOG_FILE_BACKUPS

    def command_timeouts_for(self, table_timeouts: Mapping[str, float]) -> dict[str, float]:
        """Per-command silence timeouts: the command table's, unless set here."""
        chosen = table_timeouts if self.command_timeouts is None else self.command_timeouts
        return dict(chosen)

    @property
    def device_name(self) -> str:
        """The name this server goes by: --name, else the host name."""
        return self.name or host_name()


DEFAULTS = Settings()


# -- one setting, three sources: flag > environment > default -----------------------------
# A lab's settings live in one place (a unit's EnvironmentFile=, a Windows service's
# environment), read by serve, check and run alike, so a service cannot check one robot
# and serve another. Each value is parsed as its flag's would be.

def networks(text: str) -> tuple[str, ...]:
    """Comma-separated addresses or CIDR networks (--allow, --trusted-proxy); '' is none."""
    items = names(text)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"not an address or CIDR network: {item}") from None
    return items


def seconds_list(text: str) -> tuple[float, ...]:
    """Comma-separated waits in seconds (--webhook-retry), at least one, none negative."""
    values = tuple(float(part) for part in names(text))
    if not values or any(not 0 <= v < 10**7 for v in values):
        raise ValueError(text)
    return values


def public_url(text: str) -> str:
    """An http(s) URL without a trailing slash (--public-url)."""
    text = text.strip().rstrip("/")
    if not text.startswith(("http://", "https://")) or len(text) <= len("https://"):
        raise ValueError(text)
    return text


def names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


# -- identity: --name and --labels (docs/deploy.md, "Device identity") ----------------------
NAME_MAX, LABEL_VALUE_MAX = 64, 100
# Prometheus's label names; "__" starts its own, and `name` is the info metric's.
LABEL_KEY = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
RESERVED_LABEL = "name"


class Refused(ValueError):
    """A value refused with the reason an operator reads: a catalogue key and its params."""

    def __init__(self, message_key: str, /, **params: str) -> None:
        super().__init__(message_key)
        self.key, self.params = message_key, params

    def text(self, lang: str) -> str:
        return t(self.key, lang, **self.params)


def host_name() -> str:
    """This PC's host name, the name of a server started without --name."""
    name = "".join(c for c in socket.gethostname() if c.isprintable()).strip()
    return name[:NAME_MAX] or "localhost"


def device_name(text: str) -> str:
    """--name: 1 to 64 printable characters (spaces around it dropped)."""
    name = text.strip()
    if not 1 <= len(name) <= NAME_MAX or not name.isprintable():
        raise Refused("identity.name_bad", max=str(NAME_MAX))
    return name


def labels(text: str) -> tuple[tuple[str, str], ...]:
    """--labels room=B204,model=XYZ: the (key, value) pairs in their order; '' is none."""
    pairs: dict[str, str] = {}
    for item in names(text):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep:
            raise Refused("identity.label_not_pair", item=item)
        if not LABEL_KEY.match(key) or key.startswith("__") or key == RESERVED_LABEL:
            raise Refused("identity.label_key_bad", key=key, reserved=RESERVED_LABEL)
        if not 1 <= len(value) <= LABEL_VALUE_MAX or not value.isprintable():
            raise Refused("identity.label_value_bad", key=key, max=str(LABEL_VALUE_MAX))
        if key in pairs:
            raise Refused("identity.label_twice", key=key)
        pairs[key] = value
    return tuple(pairs.items())


_YES, _NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _yes_no(text: str) -> bool:
    word = text.strip().lower()
    if word not in _YES + _NO:
        raise ValueError(text)
    return word in _YES


@dataclass(frozen=True)
class Kind:
    """How a variable's text becomes a value, and what a good one looks like (a key)."""
    parse: Callable[[str], Any] = str
    expected: str = ""
    params: tuple[tuple[str, str], ...] = ()
    # Lists: an empty value is an empty list, as the flag's '' (--trusted-proxy '' trusts
    # none); for everything else an empty value (KEY= in a unit's file) is unset.
    empty_is_value: bool = False
    # The flag takes the text as given and this parses it (fill_from_environ, from_args):
    # a refusal is then one line with its reason, not argparse's usage.
    flag_text: bool = False


def _choice(*options: str) -> Kind:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(text)
        return text
    return Kind(parse, "env.expect_choice", (("choices", ", ".join(options)),))


TEXT = Kind()
INT = Kind(lambda text: int(text.strip()), "env.expect_int")
NUMBER = Kind(lambda text: float(text.strip()), "env.expect_number")
YES_NO = Kind(_yes_no, "env.expect_yes_no", (("values", "/".join(_YES + _NO)),))
NETWORKS = Kind(networks, "env.expect_networks", empty_is_value=True)
NAMES = Kind(names, empty_is_value=True)
SECONDS = Kind(seconds_list, "env.expect_seconds")
URL = Kind(public_url, "env.expect_url")
NAME = Kind(device_name, "env.expect_name", (("max", str(NAME_MAX)),), flag_text=True)
LABELS = Kind(labels, "env.expect_labels", empty_is_value=True, flag_text=True)


@dataclass(frozen=True)
class Flag:
    """A flag (its argparse dest is the key of FLAGS), its Settings field and its variable."""
    field: str
    env: str
    kind: Kind = TEXT


# Every setting of `serve`, in --help's order; ROBOT_API_TOKEN is from_args' and ROBOT_LANG
# i18n.choose_language's. The names follow the flags, without a second "robot": --robot is
# ROBOT_PORT (the robot's port) and --port, the server's own, ROBOT_HTTP_PORT.
FLAGS: dict[str, Flag] = {
    "mode": Flag("mode", "ROBOT_MODE", _choice("sync", "queue")),
    "host": Flag("host", "ROBOT_HOST"),
    "port": Flag("port", "ROBOT_HTTP_PORT", INT),
    "db": Flag("db", "ROBOT_DB"),
    "auto_resume": Flag("auto_resume", "ROBOT_AUTO_RESUME", YES_NO),
    "require_reason": Flag("require_reason", "ROBOT_REQUIRE_REASON", YES_NO),
    "max_queue": Flag("max_queue", "ROBOT_MAX_QUEUE", INT),
    "keep_days": Flag("keep_days", "ROBOT_KEEP_DAYS", NUMBER),
    "shutdown_grace": Flag("shutdown_grace", "ROBOT_SHUTDOWN_GRACE", NUMBER),
    "allow": Flag("allow", "ROBOT_ALLOW", NETWORKS),
    "allowed_host": Flag("allowed_hosts", "ROBOT_ALLOWED_HOST", NAMES),
    "webhook_allow": Flag("webhook_allow", "ROBOT_WEBHOOK_ALLOW", NAMES),
    "webhook_retry": Flag("webhook_retry", "ROBOT_WEBHOOK_RETRY", SECONDS),
    "public_url": Flag("public_url", "ROBOT_PUBLIC_URL", URL),
    "trusted_proxy": Flag("trusted_proxies", "ROBOT_TRUSTED_PROXY", NETWORKS),
    "cors_origin": Flag("cors_origin", "ROBOT_CORS_ORIGIN"),
    "max_connections": Flag("max_connections", "ROBOT_MAX_CONNECTIONS", INT),
    "name": Flag("name", "ROBOT_NAME", NAME),
    "labels": Flag("labels", "ROBOT_LABELS", LABELS),
    "robot": Flag("robot", "ROBOT_PORT"),
    "baud": Flag("baudrate", "ROBOT_BAUD", INT),
    "robot_protocol": Flag("robot_protocol", "ROBOT_PROTOCOL"),
    "sim_speed": Flag("sim_speed", "ROBOT_SIM_SPEED", NUMBER),
    "sim_transport": Flag("sim_transport", "ROBOT_SIM_TRANSPORT", _choice("auto", "pty", "tcp")),
    "robot_timeout": Flag("robot_timeout", "ROBOT_TIMEOUT", NUMBER),
    "robot_settle": Flag("robot_settle", "ROBOT_SETTLE", NUMBER),
    "commands": Flag("commands_file", "ROBOT_COMMANDS"),
    "log_level": Flag("log_level", "ROBOT_LOG_LEVEL"),
    "log_file": Flag("log_file", "ROBOT_LOG_FILE"),
    "access_log": Flag("access_log", "ROBOT_ACCESS_LOG", _choice("file", "console", "off")),
}
# main.py's flags (argparse dests) and the fields they set; a flag left out is None.
FLAG_FIELDS = {dest: flag.field for dest, flag in FLAGS.items()}


class EnvSettingError(CodedError):
    """A variable whose value its flag would refuse: one line naming both, exit code 2."""

    def __init__(self, dest: str, value: str, reason: ValueError | None = None) -> None:
        self.flag = FLAGS[dest]
        self.reason = reason if isinstance(reason, Refused) else None
        super().__init__("env_invalid", {"name": self.flag.env, "value": value,
                                         "flag": "--" + dest.replace("_", "-")})

    def text(self, lang: str) -> str:
        if self.reason is not None:  # the value's own fault, said precisely
            return t("error.env_refused", lang, **self.params, reason=self.reason.text(lang))
        kind = self.flag.kind
        return t("error.env_invalid", lang, **self.params,
                 expected=t(kind.expected, lang, **dict(kind.params)))


class FlagSettingError(CodedError):
    """A flag's value refused (a Kind with flag_text): one line with why, exit code 2."""

    def __init__(self, dest: str, value: str, reason: Refused) -> None:
        self.reason = reason
        super().__init__("flag_invalid", {"flag": "--" + dest.replace("_", "-"),
                                          "value": value})

    def text(self, lang: str) -> str:
        return t("error.flag_invalid", lang, **self.params, reason=self.reason.text(lang))


def flag_value(dest: str, value: Any) -> Any:
    """A flag's value as its setting takes it: the text of a flag_text Kind parsed.
    Raises FlagSettingError for one it refuses."""
    flag = FLAGS.get(dest)
    if flag is None or not flag.kind.flag_text or not isinstance(value, str):
        return value
    try:
        return flag.kind.parse(value)
    except Refused as exc:
        raise FlagSettingError(dest, value, exc) from None


def environ_values(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The flags (argparse dests) that the environment sets, parsed as the flags are."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for dest, flag in FLAGS.items():
        text = environ.get(flag.env)
        if text is None or (not text.strip() and not flag.kind.empty_is_value):
            continue
        try:
            values[dest] = flag.kind.parse(text)
        except ValueError as exc:
            raise EnvSettingError(dest, text, exc) from None
    return values


def fill_from_environ(args: Any, environ: Mapping[str, str] | None = None) -> None:
    """Set each flag not given on the command line from the environment, so the menus
    ask only what neither gave. Raises EnvSettingError for a value its flag would refuse,
    FlagSettingError for a flag's (--labels) refused value."""
    for dest in FLAGS:
        if getattr(args, dest, None) is not None:
            setattr(args, dest, flag_value(dest, getattr(args, dest)))
    for dest, value in environ_values(environ).items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, value)


def mention_environ(parser: argparse.ArgumentParser) -> None:
    """Each flag's --help names its variable."""
    for action in parser._actions:
        flag = FLAGS.get(action.dest)
        if flag is not None and action.help and action.help != argparse.SUPPRESS:
            action.help += f" (env {flag.env})"


def from_args(args: Any, **resolved: Any) -> Settings:
    """The defaults with what the user gave: the environment's ROBOT_* variables, the
    flags in ``args`` that are not None over them, then ``resolved``, values the caller
    worked out (e.g. the database's full path)."""
    flags = {dest: flag_value(dest, getattr(args, dest)) for dest in FLAGS
             if getattr(args, dest, None) is not None}
    given = {FLAGS[dest].field: value for dest, value in {**environ_values(), **flags}.items()}
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
