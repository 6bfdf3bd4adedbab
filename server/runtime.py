"""Start-up and shutdown of one server: store, queue, robot link, worker, HTTP.

Start-up order is explicit: the command table and the robot's protocol (checked
before anything is touched), the instance lock, the listen address (probed), the
store (and its WAL checkpointer), the queue state, the robot (the simulator, the
link), the worker, HTTP.
Shutdown runs in reverse: HTTP stops accepting (httpd.shutdown() from a thread other
than serve_forever's), then the worker (the running task gets a grace period, then
STOP), then the robot link and the simulator, then the store, the lock last.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

import constants
from robot import RobotLink, RobotSetup, RobotSimulator, build_robot, make_codec
from server.api.routes import build_router
from server.app import Application
from server.check import listen_refused, probe_port
from server.http import RobotHTTPServer, make_server
from server.webhooks.allow import AllowList
from server.webhooks.sender import WebhookSender
from settings import Settings
from tasks.commands import CommandTable, load_commands
from tasks.queue.events import EventBus
from tasks.queue.manager import TaskManager
from tasks.sequences.runner import SequenceRunner
from tasks.sequences.service import SequenceService
from tasks.store import TaskStore
from tasks.store.housekeeping import Checkpointer, Pruner
from tasks.store.instance_lock import InstanceLock
from tasks.store.webhooks import WebhookStore
from tasks.worker import Worker

log = logging.getLogger("server.runtime")


def lan_address() -> str:
    """This PC's address toward the LAN (no packet is sent: a UDP socket's route only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never answered, never sent to
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


# The dashboard's files, shipped with this package.
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


class RobotServer:
    """One running server; `start()` and `stop()` are the whole life cycle."""

    def __init__(self, settings: Settings, *, static_dir: str | None = STATIC_DIR) -> None:
        self.settings = settings
        self.static_dir = static_dir  # None: no dashboard, GET / is always JSON
        self.lock: InstanceLock | None = None
        self.store: TaskStore | None = None
        self.commands: CommandTable | None = None
        self.robot: RobotSetup | None = None
        self.simulator: RobotSimulator | None = None
        self.link: RobotLink | None = None
        self.manager: TaskManager | None = None
        self.sequences: SequenceService | None = None
        self.worker: Worker | None = None
        self.events: EventBus | None = None
        self.httpd: RobotHTTPServer | None = None
        self.pruner: Pruner | None = None
        self.checkpointer: Checkpointer | None = None
        self.webhooks: WebhookSender | None = None
        self.app: Application | None = None
        self.interrupted: list[str] = []
        self._serve_thread: threading.Thread | None = None

    @property
    def robot_port(self) -> str:
        return self.link.info()["port"] if self.link else self.settings.robot

    @property
    def address(self) -> tuple[str, int]:
        assert self.httpd is not None
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"  # an IPv6 literal in a URL
        return f"http://{host}:{port}"

    def public_url(self) -> str:
        """The base of the `url` in webhook events: --public-url, else this PC's LAN
        address (the one a route to the LAN leaves from) and the listening port."""
        if self.settings.public_url:
            return self.settings.public_url
        if self.httpd is None:
            return ""
        host, port = self.address
        if host in ("0.0.0.0", "::", ""):
            host = lan_address()
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()  # whatever had started, in reverse; the lock last
            raise
        assert self.httpd is not None
        self._serve_thread = threading.Thread(target=self.httpd.serve_forever,
                                              kwargs={"poll_interval": 0.2},
                                              name="http-accept", daemon=True)
        self._serve_thread.start()
        host, port = self.address
        log.info("serving on %s:%d (%s mode), robot on %s",
                 f"[{host}]" if ":" in host else host, port, self.settings.mode, self.robot_port)

    def _start(self) -> None:
        s = self.settings
        # The command table first: a mistake in it is the operator's to fix, and
        # nothing (lock, database, robot) should have been touched when it is reported.
        self.commands = load_commands(s.commands_file)
        # So is the robot's protocol: a lab codec that does not load is reported first.
        # (open_robot would also start the simulator, which waits for the lock: step 3.)
        codec = make_codec(s.robot_protocol, self.commands.wire_forms(),
                           self.commands.with_params())
        # 0. One server per database, decided before anything reads or writes it:
        # a second server's recovery would fail the first one's running task.
        lock = InstanceLock(s.db)
        lock.acquire()
        self.lock = lock
        # The listen address, before the database is recovered or the robot (or the
        # simulator) is touched: a busy port is the commonest mistake of a second start.
        # Port 0 takes any free one. The bind itself comes last (step 5): it needs the app.
        if s.port:
            probe_port(s.host, s.port)
        # 1. The store: a bad database stops start-up before anything else runs.
        self.store = TaskStore(s.db, busy_timeout=s.db_busy_timeout)
        self.store.open()
        # The WAL's checkpoints in a thread of their own, never inside a COMMIT.
        self.checkpointer = Checkpointer(self.store, pages=constants.CHECKPOINT_PAGES,
                                         idle_s=constants.CHECKPOINT_IDLE_S,
                                         wal_limit=constants.WAL_LIMIT_BYTES)
        self.checkpointer.start()
        # 2. Queue state from the store (interrupted tasks failed, queue held).
        # One subscription per /events stream (their count is max_streams's to bound), and
        # one for the console's reporter (main.py).
        self.events = EventBus(max_subscribers=s.max_streams + 1, subscriber_queue=s.event_queue)
        self.manager = TaskManager(self.store, self.events, max_queue=s.max_queue,
                                   auto_resume=s.auto_resume, commands=self.commands,
                                   lang=s.lang)
        self.interrupted = self.manager.recover()
        # Sequences after the tasks: the one that was running is held at its step.
        self.sequences = SequenceService(self.manager)
        self.sequences.recover()
        self.pruner = Pruner(self.store, s.keep_days)
        # The webhook sender: it only reads what the queue committed (the outbox), so it
        # starts before the robot; the deliveries pending at the last stop resume now.
        self.webhooks = WebhookSender(WebhookStore(self.store), self.events,
                                      allow=AllowList(s.webhook_allow), schedule=s.webhook_retry,
                                      timeout=s.webhook_timeout, base_url=self.public_url)
        self.webhooks.start()
        self.pruner.also.append(self.webhooks.store.prune)
        self.pruner.start()
        # 3. The robot: its protocol, the simulator (pty or loopback TCP) or the real port.
        self.robot = build_robot(s.robot, codec, protocol=s.robot_protocol, baudrate=s.baudrate,
                                 sim_speed=s.sim_speed, sim_transport=s.sim_transport,
                                 robot_timeout=s.robot_timeout,
                                 command_timeouts=s.command_timeouts_for(self.commands.timeouts()),
                                 write_timeout=s.write_timeout, reconnect_min=s.reconnect_min,
                                 reconnect_max=s.reconnect_max,
                                 progress_interval=s.progress_interval,
                                 settle_time=s.robot_settle,
                                 settle_timeout=s.robot_settle_timeout,
                                 reply_rules=self.commands.reply_rules(),
                                 on_link_event=self._on_link_event, lang=s.lang)
        self.link, self.simulator = self.robot.link, self.robot.simulator
        # A task interrupted on the robot: the robot may still be running it, so it is
        # stopped, and must settle, before anything else is sent.
        self.link.start(require_connection=s.require_robot, stop_first=bool(self.interrupted))
        link = self.link
        self.manager.views.link_ready = lambda: link.ready  # a task's waiting_for
        # 4. The worker, then 5. HTTP.
        self.worker = Worker(self.manager, self.link, shutdown_grace=s.shutdown_grace,
                             commands=self.commands)
        self.worker.sequences = SequenceRunner(self.sequences, self.worker)
        self.sequences.abort_robot = self.link.abort
        self.worker.start()
        self.app = Application(self.manager, self.worker, self.link, self.events, s,
                               commands=self.commands, static_dir=self.static_dir,
                               sequences=self.sequences, webhooks=self.webhooks)
        self.manager.on_finish = self.app.metrics.observe_task
        self.app.metrics.watch_wal(self.store.wal_bytes)
        try:
            self.httpd = make_server(s.host, s.port, self.app, build_router(),
                                     backlog=s.backlog)
        except OSError as exc:  # taken since the probe, or a name that does not resolve
            raise listen_refused(s.host, s.port, exc) from None

    def _on_link_event(self, kind: str, info: dict[str, Any]) -> None:
        if kind == "alarm" and self.manager is not None and not self.manager.auto_resume:
            # An alarm while idle: the robot stopped itself and its state is unknown,
            # so the next task must not drive it blindly.
            error = info.get("error")
            if error:
                self.manager.pause(code="hold_alarm_idle", params={"error": str(error)})
            else:
                self.manager.pause(code="hold_alarm_idle_no_message")
        if self.events is not None:
            self.events.publish("robot", {"event": kind, **info})
        if self.webhooks is not None:
            self.webhooks.robot_event(kind, info)

    def stop(self) -> None:
        """Reverse order of start; safe to call more than once or after a failed start."""
        if self.httpd is not None:
            if self._serve_thread is not None:
                self.httpd.shutdown()  # we are never the serve_forever thread
                self._serve_thread.join()
                self._serve_thread = None
            self.httpd.server_close()
            self.httpd = None
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        if self.robot is not None:
            self.robot.stop()  # the link, then the simulator
            self.robot = self.link = self.simulator = None
        if self.webhooks is not None:
            self.webhooks.stop()
            self.webhooks = None
        if self.pruner is not None:
            self.pruner.stop()
            self.pruner = None
        checkpointer, self.checkpointer = self.checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        if self.store is not None:
            self.store.close()
            self.store = None
        if checkpointer is not None:
            checkpointer.release()  # only now: see tasks/store/housekeeping.py WalIndex
        if self.lock is not None:
            self.lock.release()
            self.lock = None
