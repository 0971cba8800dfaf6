"""Engines and sessions. SQLite runs in WAL mode with a busy timeout and takes its write
lock at BEGIN, so two processes never deadlock upgrading a read to a write."""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(
    url: str, *, sqlite_synchronous: str = "FULL", pool_pre_ping: bool = True, **kwargs: Any
) -> Engine:
    """An engine for `url` with the settings the pipeline relies on.

    `sqlite_synchronous`: FULL syncs every commit to disk; NORMAL (WAL) survives any process
    crash but may lose the last commits on power loss or an OS crash.
    `pool_pre_ping` (PostgreSQL; a SQLite file has no connection to lose): test each pooled
    connection before use, one more round trip per transaction; a connection the server
    dropped is then replaced unseen.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            # If this fails, connecting fails too, as a database error the caller handles.
            with contextlib.suppress(OSError):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs
        )
        event.listen(engine, "connect", functools.partial(_sqlite_on_connect, sqlite_synchronous))
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    if parsed.get_backend_name() == "postgresql":
        kwargs.setdefault("connect_args", {"connect_timeout": 3})
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 10)
    return create_engine(url, pool_pre_ping=pool_pre_ping, **kwargs)


class TooSlow(Exception):
    """Raised by SIGALRM inside a database call that passed its deadline."""


_alarm = {"armed": False}


def _on_alarm(_signum: int, _frame: object) -> None:
    if _alarm["armed"]:
        raise TooSlow


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Interrupt the block with TooSlow after `seconds`.

    The driver waits on a hung server without a timeout of its own, and neither TCP
    keepalives nor TCP_USER_TIMEOUT notice a server process that is stopped: its kernel
    still acknowledges every packet. A SIGALRM does interrupt the wait (psycopg polls for
    signals). It only works in the main thread (gunicorn's sync workers serve requests
    there); elsewhere, or when SIGALRM already belongs to someone else, the block has
    no deadline but gunicorn's worker timeout. A connection interrupted this way is
    mid-statement: discard it (`invalidate()`), never reuse it.
    """
    if (
        not seconds
        or not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, _on_alarm)
    ):
        yield
        return
    if signal.getsignal(signal.SIGALRM) is not _on_alarm:
        signal.signal(signal.SIGALRM, _on_alarm)
    _alarm["armed"] = True
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        _alarm["armed"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)


def ping(engine: Engine, timeout: float | None) -> None:
    """SELECT 1 on a pooled connection, within `timeout` seconds (TooSlow past it)."""
    pooled = engine.raw_connection()
    try:
        with deadline(timeout):
            cursor = pooled.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            pooled.rollback()
    except TooSlow as exc:
        pooled.invalidate(exc)
        raise
    finally:
        pooled.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def _sqlite_on_connect(synchronous: str, dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute(f"PRAGMA synchronous = {synchronous}")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    # A deferred transaction that reads, then writes after another process committed,
    # fails at once with SQLITE_BUSY instead of waiting: take the write lock up front.
    connection.exec_driver_sql("BEGIN IMMEDIATE")
