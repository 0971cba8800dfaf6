"""The web process's stream hub: every open stream, woken when its user's media change.

Two daemon threads per web process, started with the first stream:
- the *writer* owns the sockets handed over by the gunicorn worker (worker.py), each
  one a `Held` (held.py): it reads the changes after each woken stream's cursor and
  writes them, writes the heartbeats, and drops a stream whose client left or whose
  token expired. Thousands of idle streams cost a socket and a small object each,
  never a thread or a web worker;
- the *hearer* (hearers.py) learns which users' media changed, and wakes their streams.

Streams served without the worker (the Flask test client, another worker class) wait on
a `Waiter` woken by the same hearer.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import Engine

from pipeline.live.hearers import hear_postgresql, hear_sqlite
from pipeline.live.held import Held
from pipeline.live.stream import HEARTBEAT, Stream

log = logging.getLogger(__name__)


class CatchUpFailed(Exception):
    pass


@dataclass(eq=False)
class Waiter:
    """A stream served in its own thread: `event` is set when its user's media change."""

    owner: int
    event: threading.Event = field(default_factory=threading.Event)


class Hub:
    def __init__(self, engine: Engine, heartbeat: float, max_streams: int) -> None:
        self.engine = engine
        self.heartbeat = heartbeat
        self.max_streams = max_streams
        self._lock = threading.Lock()
        self._held: dict[int, Held] = {}  # by socket fd
        self._waiters: set[Waiter] = set()
        self._owners: dict[int, set[Held]] = defaultdict(set)
        self._incoming: list[Held] = []
        self._woken: set[int] = set()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._started = False
        self._closing = False
        self._writer: threading.Thread | None = None

    # --- from request threads ---------------------------------------------------------

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._held) + len(self._incoming) + len(self._waiters)

    def full(self) -> bool:
        return self.count >= self.max_streams

    def adopt(self, sock: socket.socket, stream: Stream, chunked: bool) -> None:
        """Take over `sock`, whose response head and opening the worker has written."""
        sock.setblocking(False)
        with self._lock:
            self._incoming.append(Held(sock, stream, chunked))
        self._start()
        self._wake()

    def waiter(self, owner: int) -> Waiter:
        waiter = Waiter(owner)
        with self._lock:
            self._waiters.add(waiter)
        self._start()
        return waiter

    def forget(self, waiter: Waiter) -> None:
        with self._lock:
            self._waiters.discard(waiter)

    def close(self, wait: float = 1.0) -> None:
        """End every stream (clients reconnect elsewhere): at the worker's shutdown."""
        self._closing = True
        self._wake()
        if self._writer is not None:
            self._writer.join(wait)
        if self._writer is None or not self._writer.is_alive():
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    # --- from the hearer --------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self._closing

    def changed(self, owners: set[int] | None) -> None:
        """`owners`' media changed (None: anyone's may have)."""
        with self._lock:
            if owners is None:
                owners = set(self._owners) | {w.owner for w in self._waiters}
            self._woken |= owners
            for waiter in self._waiters:
                if waiter.owner in owners:
                    waiter.event.set()
        self._wake()

    def watched(self) -> set[int]:
        with self._lock:
            return (
                set(self._owners)
                | {h.stream.owner for h in self._incoming}
                | {w.owner for w in self._waiters}
            )

    # --- the writer thread ------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        self._writer = threading.Thread(target=self._write_forever, name="live-writer", daemon=True)
        self._writer.start()
        hearer = hear_postgresql if self.engine.dialect.name == "postgresql" else hear_sqlite
        threading.Thread(target=hearer, args=(self,), name="live-hearer", daemon=True).start()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # full: awake already; closed
            self._wake_w.send(b"x")

    def _write_forever(self) -> None:
        next_beat = time.monotonic() + self.heartbeat
        while not self._closing:
            timeout = max(0.0, next_beat - time.monotonic())
            for key, mask in self._selector.select(timeout):
                if key.fileobj is self._wake_r:
                    self._drain_wake()
                elif mask & selectors.EVENT_READ:
                    self._client_spoke(key.data)
                elif mask & selectors.EVENT_WRITE:
                    self._send(key.data, b"")
            try:
                self._serve_changes()
            except Exception as exc:  # the database blinked: they catch up next time
                log.warning("live streams' catch-up failed (%s); retrying", exc)
                time.sleep(0.5)
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.heartbeat
                self._beat()
        for held in list(self._held.values()):
            self._drop(held, goodbye=True)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _serve_changes(self) -> None:
        with self._lock:
            incoming, self._incoming = self._incoming, []
            woken, self._woken = self._woken, set()
            for held in incoming:
                self._held[held.sock.fileno()] = held
                self._owners[held.stream.owner].add(held)
                self._selector.register(held.sock, selectors.EVENT_READ, held)
            due = [h for owner in woken for h in self._owners.get(owner, ())]
        # A new stream catches up once more: a change may have committed between the
        # worker's read and its registration here.
        failed = set()
        for held in {*incoming, *due}:
            if held.stream.owner in failed or held.sock.fileno() not in self._held:
                continue
            try:
                self._send(held, held.stream.catch_up_on(self.engine))
            except Exception:  # the database blinked: this user's streams try again
                failed.add(held.stream.owner)
        if failed:
            with self._lock:
                self._woken |= failed
            raise CatchUpFailed(f"{len(failed)} users' streams could not read their changes")

    def _beat(self) -> None:
        now = time.time()
        for held in list(self._held.values()):
            if held.stream.expires_at <= now:
                self._drop(held, goodbye=True)  # the client's reconnect is refused: 401
            else:
                self._send(held, HEARTBEAT)

    def _send(self, held: Held, data: bytes) -> None:
        if not (data or held.pending):
            return
        if not held.write(data):
            self._drop(held)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if held.pending else 0)
        self._selector.modify(held.sock, events, held)

    def _client_spoke(self, held: Held) -> None:
        if held.client_left():
            self._drop(held)

    def _drop(self, held: Held, goodbye: bool = False) -> None:
        with self._lock:
            self._held.pop(held.sock.fileno(), None)
            owners = self._owners.get(held.stream.owner)
            if owners is not None:
                owners.discard(held)
                if not owners:
                    del self._owners[held.stream.owner]
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(held.sock)
        held.close(goodbye)
