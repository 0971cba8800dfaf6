"""What every benchmark of one run shares: its sizes, its server settings, its folders, its
Redis and secret, and fresh databases (a SQLite file, or a PostgreSQL database dropped
afterwards)."""

from __future__ import annotations

import functools
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import psycopg
import redis
from sqlalchemy import Engine, create_engine, text

from bench.tutorial_tasks import bench_metadata
from pipeline.dev.procs import Proc
from pipeline.migrate import upgrade

PG_SERVER = "postgres@127.0.0.1:5432"
PG_ADDRESS = ("127.0.0.1", 5432)
BACKENDS = ("sqlite", "postgresql")
POOLS = ("prefork", "threads")
# The tutorial's worker: `celery worker` with Celery's defaults on this machine (prefork,
# one child per core), which is what a tutorial user runs; only ours is tuned.
TUTORIAL_POOL = ("prefork", os.cpu_count() or 2)


@dataclass(frozen=True)
class Plan:
    """How much to do: `--smoke`, `--quick` or the full run."""

    name: str
    seconds: float  # per handler and concurrency, ingest (split over `rounds`)
    events: int  # end to end, sent at once
    idle_events: int  # end to end, one at a time on an idle pipeline
    fill: int  # stored events for the table-size run
    concurrencies: tuple[int, ...] = (16, 64)
    rounds: int = 1
    warmup: float = 1.0
    # End to end, per system: sending stops and results are taken when this much time has
    # passed since the first webhook of the burst, finished or not (0: wait for all).
    window: float = 45.0
    # live: webhooks timed to the browser's DOM when idle (half as many under each load),
    # idle streams held, and the seconds of each ingest run beside them (2 rounds)
    live_samples: int = 100
    live_streams: int = 1_000
    live_ingest_seconds: float = 3.0
    # prune: old finished events stored (3 runs each) before `pipeline prune` deletes them
    prune_events: int = 1_000_000
    # ... and the most it may run (start-up, count, deleting): then it is stopped, and its
    # rate says how long all would have taken
    prune_limit: float = 60.0
    # console: events stored (a week's, 3 runs each) under its pages, on each backend
    console_events: int = 1_000_000
    # speed: webhooks per burst, each waited out (bench/speed.py)
    speed_events: int = 3_000


PLANS = {
    "full": Plan("full", seconds=8, events=10_000, idle_events=100, fill=1_000_000, rounds=2),
    "quick": Plan(
        "quick",
        seconds=2,
        events=1_000,
        idle_events=20,
        fill=100_000,
        window=10,
        live_samples=30,
        live_ingest_seconds=1.0,
        prune_events=100_000,
        console_events=20_000,
        speed_events=600,
    ),
    "smoke": Plan(
        "smoke",
        seconds=1,
        events=100,
        idle_events=10,
        fill=1_000,
        warmup=0.5,
        window=20,
        live_samples=5,
        live_streams=100,
        live_ingest_seconds=1.0,
        prune_events=5_000,
        console_events=2_000,
        speed_events=60,
    ),
}


@dataclass(frozen=True)
class Setup:
    """What the servers run on: one database backend and one gunicorn worker count for every
    contender; the pool and concurrency of OUR end-to-end worker."""

    database: str = "postgresql"
    web_workers: int = 4  # the Procfile's WEB_CONCURRENCY default
    worker_pool: str = "prefork"
    worker_concurrency: int = 4  # the Procfile's WORKER_CONCURRENCY default

    def worker(self, system: str) -> tuple[str, int]:
        """(pool, concurrency) of `system`'s Celery worker."""
        if system == "ours":
            return self.worker_pool, self.worker_concurrency
        return TUTORIAL_POOL


def postgresql_answers() -> bool:
    """Something accepts connections on PostgreSQL's address (the default backend then)."""
    try:
        with socket.create_connection(PG_ADDRESS, timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Database:
    url: str
    drop: Callable[[], None]

    @cached_property
    def engine(self) -> Engine:
        """A plain engine for the harness's own reads and writes (no BEGIN IMMEDIATE)."""
        return create_engine(self.url)

    def counters(self) -> dict[str, int]:
        """PostgreSQL's counts for this database so far (none on SQLite): connections made
        (one opened and closed during a measurement has its server's CPU missed), commits
        and rollbacks."""
        if not self.url.startswith("postgresql"):
            return {}
        query = (
            "SELECT sessions AS connections, xact_commit AS commits, xact_rollback AS rollbacks"
            " FROM pg_stat_database WHERE datname = current_database()"
        )
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            return {k: int(v) for k, v in conn.execute(text(query)).one()._asdict().items()}

    def server_pids(self) -> list[int]:
        """The PostgreSQL backends serving this database (not the harness's); none on SQLite,
        whose work is done inside the processes that use it."""
        if not self.url.startswith("postgresql"):
            return []
        query = (
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        with self.engine.connect() as conn:
            return [int(pid) for pid in conn.execute(text(query)).scalars()]


@dataclass
class Context:
    """One run's settings and the resources it made; `close()` drops its databases."""

    plan: Plan
    tmp: Path
    redis_url: str
    results: Path  # bench/results/<stamp>: what is kept (JSON, profiles)
    setup: Setup = field(default_factory=Setup)
    use_wrk: bool = True  # else the asyncio client
    profile: bool = False  # py-spy our web (an extra run) and worker (during its burst)
    broker_pid: int | None = None  # our redis-server, for the CPU it uses
    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    _databases: list[Database] = field(default_factory=list)
    _redis_db: int = 0

    @property
    def logs(self) -> Path:
        return self.tmp

    def artifact(self, name: str) -> Path:
        """A file kept beside the run's JSON: `bench/results/<stamp>-<name>`."""
        return self.results.with_name(f"{self.results.name}-{name}")

    def fresh_broker(self) -> str:
        """A Redis database nobody used yet (our own server, so flushing is ours to do)."""
        self._redis_db = (self._redis_db + 1) % 16
        url = f"{self.redis_url}/{self._redis_db}"
        redis.Redis.from_url(url).flushdb()
        return url

    def fresh_database(self, backend: str | None = None) -> Database:
        """A migrated, empty database (the run's backend unless named), with the tutorial's
        `bench_done` table too."""
        backend = backend or self.setup.database
        if backend == "sqlite":
            path = self.tmp / f"bench{len(self._databases)}.db"
            database = Database(f"sqlite:///{path}", functools.partial(_remove_sqlite, path))
        else:
            database = _postgresql_database()
        self._databases.append(database)
        upgrade(database.url)
        bench_metadata.create_all(database.engine)
        return database

    def close(self) -> None:
        """Drop every database made so far: its files or its PostgreSQL database."""
        for database in self._databases:
            if "engine" in database.__dict__:
                database.engine.dispose()
            database.drop()
        self._databases.clear()
        # Deleted files' dirty pages are dropped; what else is pending is written now,
        # not during the next measurement (a million events is ~1 GB on SQLite).
        os.sync()

    def cpu_groups(self, database: Database, procs: Mapping[str, Proc]) -> dict[str, list[int]]:
        """What a measurement's CPU time is counted over: each of `procs` with its children,
        the database's server processes, and our Redis."""
        groups = {name: proc.tree() for name, proc in procs.items()}
        groups["database"] = database.server_pids()
        groups["broker"] = [self.broker_pid] if self.broker_pid else []
        return groups

    def broker_commands(self) -> int:
        """Commands our Redis has processed so far (every system's: measure one at a time)."""
        stats = redis.Redis.from_url(self.redis_url).info("stats")
        return int(stats["total_commands_processed"])

    def env(self, database: Database, broker: str, **extra: str) -> dict[str, str]:
        """The environment of a web or worker process of ours or the tutorial's."""
        return {
            "DATABASE_URL": database.url,
            "CELERY_BROKER_URL": broker,
            "ITTYBIT_WEBHOOK_SECRET": self.secret,
            "ITTYBIT_API_KEY": "bench-key",
            "PIPELINE_VAR_DIR": str(self.tmp / "var"),
            **extra,
        }


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _postgresql_database() -> Database:
    name = f"pipeline_bench_{secrets.token_hex(6)}"
    with psycopg.connect(f"postgresql://{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(f"postgresql://{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return Database(f"postgresql+psycopg://{PG_SERVER}/{name}", drop)
