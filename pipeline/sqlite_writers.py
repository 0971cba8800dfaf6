"""SQLite's writers queued on a lock file before BEGIN IMMEDIATE (see WriterQueue); the
engines of pipeline/db.py install it for every SQLite file."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from pipeline.db import READ_ONLY

log = logging.getLogger(__name__)


@functools.cache
def _say_once(message: str) -> None:
    log.warning("%s", message)


_QUEUES: weakref.WeakKeyDictionary[Engine, WriterQueue] = weakref.WeakKeyDictionary()


def writer_queue(engine: Engine) -> WriterQueue | None:
    """The queue of `engine`'s SQLite file; None for any other database (or :memory:)."""
    return _QUEUES.get(engine)


class WriterQueue:
    """SQLite's writers wait for a lock file (flock) before BEGIN IMMEDIATE, instead of in
    SQLite's busy handler: that one sleeps 1, 2, 5, 10 ... 100 ms between tries, so under
    contention the write lock sits free while its waiters sleep. Here a waiter tries
    again at most a millisecond after the lock's release. Past `timeout` the waiter goes
    on to BEGIN IMMEDIATE without waiting more: SQLite's own "database is locked". The
    kernel drops a dead process's lock with its files. The lock file only orders our
    writers; SQLite's lock still decides (another program writing waits as before)."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        # (process, DBAPI connection) -> its lock file: a forked child opens its own, as a
        # lock belongs to the open file, which a fork shares
        self._held: dict[tuple[int, int], int] = {}

    def install(self, engine: Engine) -> None:
        _QUEUES[engine] = self
        event.listen(engine, "begin", self._begin)
        dialect = engine.dialect
        commit, rollback = dialect.do_commit, dialect.do_rollback

        def do_commit(dbapi_connection: Any) -> None:
            try:
                commit(dbapi_connection)
            finally:
                self._release(dbapi_connection)

        def do_rollback(dbapi_connection: Any) -> None:
            try:
                rollback(dbapi_connection)
            finally:
                self._release(dbapi_connection)

        dialect.do_commit = do_commit  # type: ignore[method-assign]
        dialect.do_rollback = do_rollback  # type: ignore[method-assign]
        event.listen(engine, "close", lambda dbapi, _record: self._release(dbapi, close=True))

    @contextlib.contextmanager
    def turn(self, dbapi_connection: Any) -> Iterator[None]:
        """The queue's turn around a transaction made on the driver's own connection (the
        webhook's write, inbox.py), which SQLAlchemy's begin and commit never see: a writer
        left to SQLite's busy handler would sleep up to 100 ms between tries and lose
        every freed lock to the queued ones. Past `timeout`, as in `_begin`."""
        if self._acquire(dbapi_connection):
            try:
                yield
            finally:
                self._release(dbapi_connection)
            return
        with self._no_busy_wait(dbapi_connection.execute):
            yield

    def _begin(self, connection: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
            return
        if self._acquire(connection.connection.dbapi_connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            return
        with self._no_busy_wait(connection.exec_driver_sql):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    @contextlib.contextmanager
    def _no_busy_wait(self, execute: Callable[[str], Any]) -> Iterator[None]:
        """SQLite's busy timeout off for the block: the writer waited `timeout` in the
        queue already, so it gets "database is locked" now, not after SQLite's own wait."""
        execute("PRAGMA busy_timeout = 0")
        try:
            yield
        finally:
            execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")

    def _acquire(self, dbapi_connection: Any) -> bool:
        """Whether the turn came within `timeout`."""
        key = (os.getpid(), id(dbapi_connection))
        fd = self._held.get(key)
        if fd is None:
            try:  # as SQLite makes its -wal and -shm files: the umask decides
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:  # not ours to open: SQLite's busy handler alone, as before
                _say_once(
                    f"SQLite's writers wait in its busy handler: their lock file "
                    f"{self.path} cannot be opened ({exc.strerror})"
                )
                return True
            self._held[key] = fd
        deadline = time.monotonic() + self.timeout
        pause = 0.0002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(pause)
                pause = min(pause * 2, 0.001)

    def _release(self, dbapi_connection: Any, close: bool = False) -> None:
        # do_commit and do_rollback get the pool's proxy, the close event the connection
        raw = getattr(dbapi_connection, "dbapi_connection", dbapi_connection)
        key = (os.getpid(), id(raw))
        fd = self._held.pop(key, None) if close else self._held.get(key)
        if fd is None:
            return
        fcntl.flock(fd, fcntl.LOCK_UN)
        if close:
            os.close(fd)
