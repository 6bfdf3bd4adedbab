"""Where the simulator's bytes travel: a pseudo-terminal, or a loopback TCP socket.

The pty looks to the driver exactly like a USB serial port; the TCP channel is what
Windows (no pty) uses, reached through pyserial's ``socket://`` URL, the same code
path as a serial device server (ser2net, a Moxa NPort). Each channel has one reader
loop (``serve``), best-effort ``write`` (a port nobody reads drops output like a UART)
and ``shutdown``/``close``: the simulator wakes the loop, joins its thread, then
releases the descriptors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("robot.simulator")

TRANSPORTS = ("pty", "tcp")
_WRITE_WAIT_S = 1.0  # how long a write waits for a slow reader before dropping


def pty_available() -> bool:
    """True where the simulator can make a pseudo-terminal (POSIX)."""
    return os.name == "posix" and hasattr(os, "openpty")


def resolve_transport(choice: str | None) -> str:
    """'pty' or 'tcp' for a choice of 'pty', 'tcp' or 'auto'/None (pty where one exists)."""
    if choice in (None, "", "auto"):
        return "pty" if pty_available() else "tcp"
    if choice not in TRANSPORTS:
        raise ValueError(f"unknown simulator transport {choice!r}; use auto, pty or tcp")
    if choice == "pty" and not pty_available():
        raise ValueError("no pseudo-terminals on this system: use the tcp transport")
    return choice


class PtyChannel:
    """The master side of a raw pty; the driver opens the slave path."""

    def __init__(self) -> None:
        import tty  # POSIX only: imported here so the module loads on Windows

        master, slave = os.openpty()
        # Raw at once: no echo, no \n -> \r\n translation (see measured-pitfalls.md).
        tty.setraw(master)
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master = master
        # Kept open so the master never sees EIO while no driver has the port open.
        self.slave = slave
        self.path = os.ttyname(slave)
        self.url = self.path
        self._wake_r, self._wake_w = os.pipe()
        self.closed = threading.Event()

    def serve(self, on_data: Callable[[bytes], None], on_reset: Callable[[], None]) -> None:
        while not self.closed.is_set():
            try:
                ready, _, _ = select.select([self.master, self._wake_r], [], [])
            except (OSError, ValueError):
                return
            if self.closed.is_set():
                return
            if self.master not in ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                # EIO: no slave fd open (cannot happen while we hold ours, but a peer
                # vanishing must not kill the robot): wait a little and carry on.
                log.debug("pty read: %s", exc)
                if self.closed.wait(0.05):
                    return
                continue
            if not data:
                if self.closed.wait(0.05):
                    return
                continue
            on_data(data)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.closed.is_set():
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                # Give a slow reader a moment; if nobody reads the port at all (driver
                # gone), drop the output like a UART would rather than block forever.
                try:
                    _, writable, _ = select.select([], [self.master], [], _WRITE_WAIT_S)
                except (OSError, ValueError):
                    return
                if not writable:
                    return
                continue
            except OSError as exc:
                log.debug("pty write: %s", exc)
                return
            view = view[n:]

    def shutdown(self) -> None:
        self.closed.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        for fd in (self.master, self.slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class TcpChannel:
    """A listening socket on loopback; one client at a time, like one program on a port.

    The newest connection wins: a driver that reconnects after its old connection
    died (a killed server, a dropped network) must not find the robot still "in use".
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if os.name == "posix":
                # Rebind the same port at once after an unplug (TIME_WAIT). Not on
                # Windows, where SO_REUSEADDR would let another program take the port.
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(1)
        except OSError:
            listener.close()
            raise
        self.listener = listener
        self.host, self.port = listener.getsockname()[:2]
        self.url = f"socket://{self.host}:{self.port}"
        self.path = None
        # A socket pair, not os.pipe(): select() on Windows takes sockets only.
        self._wake_r, self._wake_w = socket.socketpair()
        self._client: socket.socket | None = None
        self._client_lock = threading.Lock()
        self.closed = threading.Event()

    def serve(self, on_data: Callable[[bytes], None], on_reset: Callable[[], None]) -> None:
        while not self.closed.is_set():
            client = self._client
            watch = [self.listener, self._wake_r] + ([client] if client else [])
            try:
                ready, _, _ = select.select(watch, [], [])
            except (OSError, ValueError):
                if self.closed.is_set():
                    return
                self._drop_client(client)  # the client was closed under us
                continue
            if self.closed.is_set():
                return
            if self.listener in ready:
                self._accept()
                on_reset()  # a new connection starts with no partial line
                continue
            if client is None or client not in ready:
                continue
            try:
                data = client.recv(65536)
            except OSError as exc:
                log.debug("tcp read: %s", exc)
                data = b""
            if not data:
                self._drop_client(client)
                continue
            on_data(data)

    def _accept(self) -> None:
        try:
            client, peer = self.listener.accept()
        except OSError as exc:
            log.debug("tcp accept: %s", exc)
            return
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.settimeout(_WRITE_WAIT_S)
        with self._client_lock:
            old, self._client = self._client, client
        if old is not None:
            log.info("simulator: %s:%s replaces the previous connection", *peer[:2])
            _close_socket(old)
        else:
            log.info("simulator: connection from %s:%s", *peer[:2])

    def _drop_client(self, client: socket.socket | None) -> None:
        with self._client_lock:
            if client is None or self._client is not client:
                return
            self._client = None
        _close_socket(client)

    def write(self, data: bytes) -> None:
        client = self._client
        if client is None:
            return  # nobody has the port open: output is lost, as on a UART
        try:
            client.sendall(data)
        except OSError as exc:  # includes socket.timeout: a reader that stopped reading
            log.debug("tcp write: %s", exc)

    def shutdown(self) -> None:
        self.closed.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            _close_socket(client)
        for sock in (self.listener, self._wake_r, self._wake_w):
            sock.close()


def _close_socket(sock: socket.socket) -> None:
    # shutdown() first: the peer sees EOF at once even if another thread is inside
    # a call on this socket.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def open_channel(kind: str, tcp_host: str = "127.0.0.1", tcp_port: int = 0
                 ) -> PtyChannel | TcpChannel:
    if kind == "pty":
        return PtyChannel()
    return TcpChannel(tcp_host, tcp_port)
