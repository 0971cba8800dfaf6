"""Engines and sessions, and the deadlines that bound a database call.

An engine given a `timeout` takes its deadlines from the driver and the server:
PostgreSQL ends a statement or a lock wait past `statement_timeout`/`lock_timeout`, a dead
network past `tcp_user_timeout`, and a handshake past `connect_timeout`; SQLite stops
waiting for the write lock past its busy timeout. Given `idle_in_transaction`, the server
also ends a session silent inside a transaction (a client the network cut off), freeing
its locks. One case none of them covers: a
PostgreSQL server that is stopped (SIGSTOP, a frozen VM) while its kernel still
acknowledges every packet. For that the web also arms a SIGALRM (`deadline`).

SQLite runs in WAL mode and takes its write lock at BEGIN, so two processes never
deadlock upgrading a read to a write; its writers queue on a lock file first
(sqlite_writers.py), so a freed write lock is taken again at once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT = 30.0  # seconds a worker or the CLI waits for SQLite's write lock


def make_engine(
    url: str,
    *,
    sqlite_synchronous: str = "FULL",
    pool_pre_ping: bool = True,
    timeout: float | None = None,
    idle_in_transaction: float | None = None,
    **kwargs: Any,
) -> Engine:
    """An engine for `url` with the settings the pipeline relies on.

    `timeout`: seconds a statement, a lock wait or a connection attempt may take.
    `idle_in_transaction` (PostgreSQL): seconds a session may sit silent inside a
    transaction before the server ends it and frees its locks (see _postgresql_deadlines).
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
        busy = timeout if timeout is not None else SQLITE_BUSY_TIMEOUT
        engine = create_engine(url, connect_args={"timeout": busy}, **kwargs)
        on_connect = functools.partial(_sqlite_on_connect, sqlite_synchronous, busy)
        event.listen(engine, "connect", on_connect)
        if parsed.database and parsed.database != ":memory:":
            from pipeline.sqlite_writers import WriterQueue  # it needs READ_ONLY from here

            WriterQueue(Path(f"{parsed.database}-writers"), busy).install(engine)
        else:
            event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    if parsed.get_backend_name() == "postgresql":
        kwargs.setdefault("connect_args", _postgresql_deadlines(timeout, idle_in_transaction))
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 10)
    return create_engine(url, pool_pre_ping=pool_pre_ping, **kwargs)


def _postgresql_deadlines(timeout: float | None, idle: float | None) -> dict[str, Any]:
    """A client cut off by the network mid-transaction looks to the server like one that
    is thinking: its session stays idle in the transaction, holding its row locks (an
    owner's media clock, which every change of that owner's media takes) until the
    kernel gives up on the peer, hours later. `idle` bounds that: the server ends the
    session, and whoever waits on its locks goes on. Our transactions never wait on
    the network (Context.outside_transaction), so a live one is never idle that long."""
    settings: dict[str, int] = {}
    args: dict[str, Any] = {"connect_timeout": 3}
    if timeout is not None:
        ms = max(1, int(timeout * 1000))
        settings.update(statement_timeout=ms, lock_timeout=ms)
        # libpq's connect_timeout is 2 s at least
        args.update(connect_timeout=max(2, math.ceil(timeout)), tcp_user_timeout=ms)
    if idle is not None:
        settings["idle_in_transaction_session_timeout"] = max(1, int(idle * 1000))
    if settings:
        args["options"] = " ".join(f"-c {name}={value}" for name, value in settings.items())
    return args


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def ping(engine: Engine, timeout: float | None) -> None:
    """SELECT 1 on a pooled connection, within `timeout` seconds (DeadlineExceeded)."""
    with engine.connect() as conn:
        try:
            with deadline(timeout):
                conn.execute(text("SELECT 1"))
        except DeadlineExceeded:
            conn.invalidate()
            raise


class DeadlineExceeded(Exception):
    """Raised by SIGALRM inside a database call that passed its deadline."""


def _raise_deadline(_signum: int, _frame: object) -> None:
    raise DeadlineExceeded


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Interrupt the block with DeadlineExceeded after `seconds` (psycopg's wait lets a
    Python signal handler run). Only in the main thread (gunicorn's sync workers serve
    requests there), and only while nobody else owns SIGALRM: otherwise the block runs
    without it, which is logged once. A connection interrupted this way is
    mid-statement: invalidate it, never reuse it.
    """
    if not seconds:
        yield
        return
    reason = _cannot_arm()
    if reason:
        _warn_once(reason)
        yield
        return
    # The handler is ours only while armed: nothing of it outlives the block.
    previous = signal.signal(signal.SIGALRM, _raise_deadline)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _cannot_arm() -> str:
    if not hasattr(signal, "setitimer"):
        return "this platform has no setitimer"
    if threading.current_thread() is not threading.main_thread():
        return "requests are served outside the main thread (a threaded worker class)"
    if signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL:
        return "SIGALRM belongs to someone else"
    return ""


@functools.cache
def _warn_once(reason: str) -> None:
    log.warning(
        "no SIGALRM deadline on database writes: %s; a stopped database server is then "
        "noticed only by the server's own timeouts",
        reason,
    )


def _sqlite_on_connect(synchronous: str, busy: float, dbapi_connection: Any, _: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {int(busy * 1000)}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute(f"PRAGMA synchronous = {synchronous}")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


READ_ONLY = "pipeline_read_only"


def read_only(engine: Engine) -> Engine:
    """`engine` for reads only: on SQLite its transactions begin deferred, so they never
    wait for the write lock nor hold it (WAL readers see the last commit)."""
    return engine.execution_options(**{READ_ONLY: True})


def _sqlite_begin_immediate(connection: Any) -> None:
    # A deferred transaction that reads, then writes after another process committed,
    # fails at once with SQLITE_BUSY instead of waiting: take the write lock up front.
    reads_only = connection.get_execution_options().get(READ_ONLY)
    connection.exec_driver_sql("BEGIN" if reads_only else "BEGIN IMMEDIATE")
