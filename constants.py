"""Defaults for the robot task server: every one is written here, and only here.

Only values live here. settings.py makes them the defaults of `Settings`, the one
settings object that the flags, the menus and the server share; code reads that,
not this module.
"""

# --- HTTP -------------------------------------------------------------------
HTTP_SERVER_HOST = "0.0.0.0"
HTTP_SERVER_PORT = 8090  # the guide: change it here and it applies everywhere
LISTEN_BACKLOG = 128  # the stdlib default of 5 drops SYNs under bursts (1-1.5 s p99)
MAX_BODY_BYTES = 64 * 1024
MAX_QUEUE_SIZE = 1000  # unfinished tasks (pending + running) accepted at once
RECENT_TASKS_IN_STATUS = 10  # /queue/status lists this many newest tasks
MAX_WAIT_S = 55.0  # ?wait= long-polls are clamped to this: under a proxy's 60 s read timeout
TRUSTED_PROXIES = ("127.0.0.0/8", "::1")  # peers whose X-Forwarded-* headers count
SYNC_WAIT_TIMEOUT_S = 3600.0  # a sync request never waits longer than this
MAX_CONNECTIONS = 200  # ordinary connections served at once; beyond: 503 at accept
# Connections beyond MAX_CONNECTIONS kept for POST /robot/stop: a full server can still stop.
STOP_RESERVE = 8
MAX_STREAMS = 1000  # long-polls (?wait=) and /events, counted apart from MAX_CONNECTIONS
REQUEST_TIMEOUT_S = 10.0  # per read or write while a request is in progress
REQUEST_DEADLINE_S = 15.0  # the whole head and body, from the first byte (slowloris)
IDLE_TIMEOUT_S = 30.0  # a keep-alive connection with no new request is closed
EVENT_QUEUE = 500  # events buffered per /events subscriber before it is dropped

# --- Access -------------------------------------------------------------------------
API_TOKEN = None  # --api-token and env ROBOT_API_TOKEN win; None: no token is asked for
ALLOW = ()  # client networks (CIDR) that may connect; empty: everyone
ALLOWED_HOSTS = ()  # DNS names accepted in the Host header besides IPs, localhost, hostname
CORS_ORIGIN = None  # the one other web origin allowed to call the API from a browser

# --- Identity (a lab with several robot PCs tells them apart: /health, /robot, /metrics,
# the banner, the dashboard's title) -------------------------------------------------
ROBOT_NAME = None  # --name, ROBOT_NAME: 1-64 printable characters; None: this PC's host name
ROBOT_LABELS = ()  # --labels room=B204,model=XYZ: (key, value) pairs; keys as Prometheus's

# --- Language -----------------------------------------------------------------
# The console's and the server's language when no --lang is given: "zh" or "en".
LANG = None  # "zh" or "en"; --lang and ROBOT_LANG win; None: the system's language (LANG, LC_*)

# --- Execution ----------------------------------------------------------------
DEFAULT_MODE = "queue"  # "sync" or "queue"
AUTO_RESUME = False  # after a fault or an interrupted task the queue holds until resumed
REQUIRE_REASON = False  # True: resume, cancelling another's work and recover need a reason
# Webhooks (docs/webhooks.md): where deliveries may go (the private and loopback networks a
# lab uses; link-local, the clouds' metadata, never), the waits between attempts (about
# 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 24 h), how long a receiver has to answer, and the
# base of the `url` in events (None: this PC's LAN address and port).
WEBHOOK_ALLOW = ("127.0.0.0/8", "::1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                 "fc00::/7")
WEBHOOK_RETRY_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 86400.0)
WEBHOOK_TIMEOUT_S = 15.0
PUBLIC_URL = None
SHUTDOWN_GRACE_S = 10.0  # on SIGTERM the running task gets this long, then STOP
KEEP_DAYS = 30  # finished tasks older than this are pruned
DB_PATH = "data/tasks.db"  # relative: under the project folder, whatever the working dir
DB_BUSY_TIMEOUT_S = 5.0  # how long the store waits for SQLite's lock before it gives up
# The database's WAL is checkpointed by a thread of its own (tasks/store/housekeeping.py),
# never inside a COMMIT: PASSIVE once this many pages wait to be copied (SQLite's own
# automatic threshold), RESTART after this long with no commit, and the WAL file kept
# under this bound (journal_size_limit; TRUNCATE when idle above it).
CHECKPOINT_PAGES = 1000
CHECKPOINT_IDLE_S = 1.0
WAL_LIMIT_BYTES = 64 * 1024 * 1024
# The command table, with per-command silence timeouts (timeout_s) and wire forms.
COMMANDS_FILE = None  # None: tasks/commands/commands.json

# --- Robot link -------------------------------------------------------------------
ROBOT_PORT = "sim"  # "sim" starts the built-in simulator (see SIM_TRANSPORT)
ROBOT_BAUDRATE = 115200
# What the firmware speaks: "json" (docs/robot-protocol.md), "text" (plain lines, see
# docs/robot-adapters.md) or a lab's own codec, "package.module:ClassName".
ROBOT_PROTOCOL = "json"
ROBOT_TIMEOUT_S = 30.0  # silence (no ack/progress/heartbeat/result) that fails a command
# Robots whose replies carry no id (text, G-code): before a handshake, after a STOP and
# after a start that found an interrupted task, the robot must send nothing for this long
# (it sends BUSY about every second while working), and may keep working this long
# before the handshake fails and is retried (robot/link/handshake.py).
ROBOT_SETTLE_S = 2.5
ROBOT_SETTLE_TIMEOUT_S = 60.0
CHECK_PING_TIMEOUT_S = 5.0  # `check` waits this long for the robot's PING reply
ROBOT_WRITE_TIMEOUT_S = 2.0
ROBOT_RECONNECT_MIN_S = 1.0
# Progress reaches the task (store, events) at most this often, however fast the robot
# sends it; the last progress is always recorded before the result.
PROGRESS_INTERVAL_S = 0.2
ROBOT_RECONNECT_MAX_S = 30.0
SIM_SPEED = 1.0  # 1 = realistic durations; 50 = fifty times faster
# How the driver reaches the simulator: "pty" (a pseudo-terminal, like a USB serial
# port), "tcp" (socket://127.0.0.1:PORT, like a serial device server), or "auto":
# pty where the system has them, tcp elsewhere (Windows).
SIM_TRANSPORT = "auto"
REQUIRE_ROBOT = False  # True: start-up fails if the robot does not answer; False: it retries

# --- Logging --------------------------------------------------------------------
LOG_LEVEL = "INFO"  # the log file's; and the console's when --log-level is given
# The console without --log-level: warnings only, so the banner and the task lines
# (console/events.py) stay on screen; everything else goes to the log file.
CONSOLE_LOG_LEVEL = "WARNING"
LOG_FILE = None  # None: stderr only; a path: also this file, rotated
# Access lines: "file", "console" (and the file) or "off"; None: the file, and the
# console too when --log-level INFO (or DEBUG) is given.
ACCESS_LOG = None
LOG_FILE_MAX_BYTES = 5 * 1024 * 1024
LOG_FILE_BACKUPS = 5
