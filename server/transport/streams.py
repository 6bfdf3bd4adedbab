"""Live event streams (GET /events), all served by one selector thread.

A handler thread reads, admits and routes the request and writes the response head; the
stream is then handed over here (RobotHTTPServer.detach_stream) and that thread is free.
This module's one thread then, for every stream:
- writes the frames its source has (each event encoded once for all streams), as one
  HTTP chunk each on HTTP/1.1, woken once per publish (a byte on a socket pair), never
  one thread per client;
- writes a keep-alive comment after `keepalive_s` without a write: the only timer;
- sees a client leave (its socket turns readable with nothing to read) and frees its
  slot at once;
- ends a stream whose source is dropped (the client reads too slowly: the subscription
  overflowed) once what was queued is written, with the chunked body's last chunk; and
  closes one whose write has waited longer than `write_timeout`.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from tasks.queue.events import Event, Subscription

log = logging.getLogger("server")

KEEPALIVE = b": keep-alive\n\n"
# select() (the only selector on Windows) takes at most 512 sockets there: more streams
# than this get a hub (a thread) of their own. Elsewhere (epoll, kqueue) one hub for all.
CAPACITY = 500 if selectors.DefaultSelector is selectors.SelectSelector else None
_LAST_CHUNK = b"0\r\n\r\n"


class Source(Protocol):
    """What a stream sends (server/api/routes.py's events)."""

    keepalive_s: float

    def take(self) -> list[bytes]:
        """The frames ready now (each one SSE block), without waiting."""
        ...

    @property
    def ended(self) -> bool:
        """Nothing more will come (once take() has given what is left)."""
        ...

    def watch(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (from any thread) whenever frames may be ready."""
        ...

    def close(self) -> None: ...


class SubscriptionFrames:
    """A Source from an event-bus subscription (tasks/queue/events.py): ``first`` (the
    snapshot), then each event as ``encode`` makes it, once for every stream (the frame
    is cached on the event)."""

    def __init__(self, sub: Subscription, first: bytes, encode: Callable[[Event], bytes],
                 keepalive_s: float) -> None:
        self._sub, self._first, self._encode = sub, first, encode
        self.keepalive_s = keepalive_s

    def take(self) -> list[bytes]:
        frames = [self._first] if self._first else []
        self._first = b""
        encode = self._encode
        frames += [event.encoded(encode) for event in self._sub.take()]
        return frames

    @property
    def ended(self) -> bool:
        # Dropped for reading too slowly: the client reconnects with Last-Event-ID.
        return self._sub.dropped and not self._sub.pending

    def watch(self, wake: Callable[[], None]) -> None:
        self._sub.notify = wake

    def close(self) -> None:
        self._sub.close()


def _peer(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return "a client gone"


def frame(data: bytes, chunked: bool) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data) if chunked else data


class _Stream:
    __slots__ = ("sock", "source", "chunked", "out", "last_write", "blocked_since", "open")

    def __init__(self, sock: socket.socket, source: Source, chunked: bool) -> None:
        self.sock, self.source, self.chunked = sock, source, chunked
        self.out = b""  # bytes the socket did not take yet
        self.last_write = self.blocked_since = time.monotonic()
        self.open = True


class StreamHub:
    def __init__(self, on_end: Callable[[Any], None], write_timeout: float) -> None:
        self._on_end = on_end  # the listener's accounting: the connection is gone
        self._write_timeout = write_timeout
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._woken = False
        self._lock = threading.Lock()
        self._adopted: list[_Stream] = []  # handed over; registered by the hub's thread
        self._streams: dict[int, _Stream] = {}  # by file descriptor
        self.load = 0  # streams adopted and not ended (see CAPACITY)
        self._next_check = float("inf")  # the next keep-alive or write deadline
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="event-streams", daemon=True)
        self._thread.start()

    # -- any thread ------------------------------------------------------------------------
    def wake(self) -> None:
        """Frames may be ready (a publish, under the bus's lock): a flag and one byte."""
        if not self._woken:
            self._woken = True
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass  # the pair's buffer is full: a wake-up is pending anyway

    def adopt(self, sock: socket.socket, source: Source, chunked: bool) -> None:
        """Serve ``sock``'s stream from now on (its head is written)."""
        stream = _Stream(sock, source, chunked)
        with self._lock:
            taken = not self._stopping
            if taken:
                self._adopted.append(stream)
                self.load += 1
        if not taken:  # the server is closing: so is this stream
            stream.sock.close()
            source.close()
            self._on_end(sock)
            return
        source.watch(self.wake)
        self._woken = False
        self.wake()

    @property
    def full(self) -> bool:
        """No room for another stream (or the thread is gone: a new hub takes over)."""
        return (CAPACITY is not None and self.load >= CAPACITY) or not self._thread.is_alive()

    def stop(self) -> None:
        """End every stream (the last chunk, then close) and the thread."""
        with self._lock:
            self._stopping = True
        self._woken = False
        self.wake()
        self._thread.join(5)

    # -- the hub's thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping:
                now = time.monotonic()
                timeout = None if self._next_check == float("inf") else \
                    max(0.0, self._next_check - now)
                ready = self._sel.select(timeout)
                now = time.monotonic()
                woken = False
                for key, mask in ready:
                    stream = key.data
                    if stream is None:
                        woken = True
                        self._drain_wake()
                    elif not stream.open:
                        continue
                    elif mask & selectors.EVENT_READ and not self._client_there(stream):
                        self._end(stream, clean=False)
                    elif mask & selectors.EVENT_WRITE:
                        self._flush(stream, now)
                if woken:
                    self._woken = False  # before taking: a publish from now on wakes again
                    self._take_adopted(now)
                    for stream in list(self._streams.values()):
                        if stream.open and not stream.out:
                            self._pump(stream, now)
                if now >= self._next_check:
                    self._check(now)
        except Exception:
            log.exception("the event streams' thread failed; its streams are closed")
        finally:
            self._take_adopted(time.monotonic())
            for stream in list(self._streams.values()):
                self._end(stream, clean=True)
            self._sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass  # empty now

    def _take_adopted(self, now: float) -> None:
        with self._lock:
            adopted, self._adopted = self._adopted, []
        for stream in adopted:
            try:
                stream.sock.setblocking(False)
                self._sel.register(stream.sock, selectors.EVENT_READ, stream)
            except (OSError, ValueError):
                self._end(stream, clean=False)  # the socket is gone already
                continue
            self._streams[stream.sock.fileno()] = stream
            stream.last_write = now
            self._next_check = min(self._next_check, now + stream.source.keepalive_s)
            self._pump(stream, now)

    def _client_there(self, stream: _Stream) -> bool:
        """An event stream's client sends nothing: readable is its close (or noise)."""
        try:
            return bool(stream.sock.recv(4096))
        except BlockingIOError:
            return True
        except OSError:
            return False

    def _pump(self, stream: _Stream, now: float) -> None:
        try:
            frames = stream.source.take()
        except Exception:  # an event that cannot be encoded ends this stream, not all
            log.exception("event stream to %s failed", _peer(stream.sock))
            self._end(stream, clean=False)
            return
        if frames:
            chunked = stream.chunked
            self._send(stream, b"".join(frame(f, chunked) for f in frames), now)
        if stream.open and not stream.out and stream.source.ended:
            self._end(stream, clean=True)  # too slow: it reconnects with Last-Event-ID

    def _send(self, stream: _Stream, data: bytes, now: float) -> None:
        try:
            sent = stream.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._end(stream, clean=False)
            return
        stream.last_write = now
        if sent < len(data):
            stream.out = data[sent:]
            stream.blocked_since = now
            self._next_check = min(self._next_check, now + self._write_timeout)
            self._sel.modify(stream.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, stream)

    def _flush(self, stream: _Stream, now: float) -> None:
        data, stream.out = stream.out, b""
        self._send(stream, data, now)
        if stream.open and not stream.out:
            self._sel.modify(stream.sock, selectors.EVENT_READ, stream)
            self._pump(stream, now)  # what was queued meanwhile

    def _check(self, now: float) -> None:
        """Keep-alive comments due (a little early rather than one more wake-up soon), and
        writes waiting too long."""
        next_check = float("inf")
        for stream in list(self._streams.values()):
            if stream.out:
                if now - stream.blocked_since >= self._write_timeout:
                    self._end(stream, clean=False)
                else:
                    next_check = min(next_check, stream.blocked_since + self._write_timeout)
                continue
            every = stream.source.keepalive_s
            due = stream.last_write + every
            if due <= now + min(1.0, every / 4):
                self._send(stream, frame(KEEPALIVE, stream.chunked), now)
                due = now + every
            if stream.open:
                next_check = min(next_check, due if not stream.out
                                 else stream.blocked_since + self._write_timeout)
        self._next_check = next_check

    def _end(self, stream: _Stream, *, clean: bool) -> None:
        if not stream.open:
            return
        stream.open = False
        sock = stream.sock
        self._streams.pop(sock.fileno(), None)
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass  # never registered
        try:
            if clean and stream.chunked and not stream.out:
                sock.send(_LAST_CHUNK)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the client is gone already
        sock.close()
        stream.source.close()
        with self._lock:
            self.load -= 1
        self._on_end(sock)
