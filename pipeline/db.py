"""Engines and sessions. SQLite runs in WAL mode with a busy timeout and takes its write
lock at BEGIN, so two processes never deadlock upgrading a read to a write."""

from __future__ import annotations

import contextlib
import functools
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
