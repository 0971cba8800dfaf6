"""One running pipeline: its own Redis, a fresh database migrated by `pipeline db upgrade`,
the emulator playing Ittybit, gunicorn and a Celery worker, all on loopback."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from sqlalchemy import Engine, create_engine

from .procs import (
    Proc,
    free_port,
    http_answers,
    run_cli,
    start_emulator,
    start_gunicorn,
    start_redis,
    start_worker,
    wait_for,
    worker_ready,
)

REPO = Path(__file__).resolve().parents[2]
PG_SERVER = "postgres@127.0.0.1:5432"
BACKENDS = ("sqlite", "postgresql")
# Variables of ours that must not leak from the developer's shell into the stack.
OURS = (
    "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "SMTP_URL", "PUBLIC_URL",
    "ITTYBIT_WEBHOOK_SECRET", "ITTYBIT_API_KEY", "ITTYBIT_API_URL", "PIPELINE_VAR_DIR",
)  # fmt: skip


@dataclass
class Database:
    url: str
    drop: Callable[[], None]


def create_database(backend: str, tmp: Path) -> Database:
    """A SQLite file in `tmp`, or a new PostgreSQL database `pipeline_it_<random>`."""
    if backend == "sqlite":
        return Database(f"sqlite:///{tmp / 'pipeline.db'}", lambda: None)
    name = f"pipeline_it_{secrets.token_hex(6)}"
    with psycopg.connect(f"postgresql://{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(f"postgresql://{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return Database(f"postgresql+psycopg://{PG_SERVER}/{name}", drop)


def open_engine(url: str) -> Engine:
    """The tests' own engine: plain deferred SQLite transactions, so polling takes no lock."""
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"timeout": 30})
    return create_engine(url, pool_size=2)


@dataclass
class Stack:
    backend: str
    logs: Path
    database: Database
    env: dict[str, str]
    web_url: str
    emulator_url: str
    secret: str
    procs: dict[str, Proc] = field(default_factory=dict)
    engine: Engine | None = None

    @property
    def db(self) -> Engine:
        assert self.engine is not None
        return self.engine

    @property
    def webhook_url(self) -> str:
        return f"{self.web_url}/webhooks/ittybit"

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """`pipeline ARGS...` with this stack's environment (plus `env`)."""
        return run_cli(args, {**self.env, **(env or {})}, self.logs, timeout)

    def stop(self) -> None:
        """Stop the processes by pid (worker first: it finishes its task), drop the database."""
        for name in ("worker", "web", "emulator", "redis"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                proc.stop()
        for proc in self.procs.values():
            proc.stop()
        if self.engine is not None:
            self.engine.dispose()
        self.database.drop()


def pipeline_env(**values: str) -> dict[str, str]:
    """The parent's environment without our variables, plus `values` (upper-cased)."""
    env = {k: v for k, v in os.environ.items() if k not in OURS}
    env.update({k.upper(): v for k, v in values.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_stack(backend: str, logs: Path, pythonpath: str = "") -> Stack:
    """Start everything; on any failure stop what was started and re-raise."""
    logs.mkdir(parents=True, exist_ok=True)
    web_port, emulator_port = free_port(), free_port()
    stack = Stack(
        backend=backend,
        logs=logs,
        database=create_database(backend, logs),
        env={},
        web_url=f"http://127.0.0.1:{web_port}",
        emulator_url=f"http://127.0.0.1:{emulator_port}",
        secret=f"whsec_it_{secrets.token_hex(8)}",
    )
    try:
        _start(stack, web_port, emulator_port, pythonpath)
    except BaseException:
        stack.stop()
        raise
    return stack


def _start(stack: Stack, web_port: int, emulator_port: int, pythonpath: str) -> None:
    redis, broker_url = start_redis(stack.logs)
    stack.procs["redis"] = redis
    api_key = f"key_it_{secrets.token_hex(8)}"
    stack.env = pipeline_env(
        database_url=stack.database.url,
        celery_broker_url=broker_url,
        ittybit_webhook_secret=stack.secret,
        ittybit_api_key=api_key,
        ittybit_api_url=stack.emulator_url,
        public_url=stack.web_url,
        pipeline_var_dir=str(stack.logs / "var"),
    )
    if pythonpath:
        stack.env["PYTHONPATH"] = pythonpath
    stack.procs["emulator"] = start_emulator(
        stack.env, stack.logs, emulator_port, api_key=api_key, secret=stack.secret,
        shape="B", delay="0.2",
    )  # fmt: skip
    upgraded = stack.cli("db", "upgrade")
    if upgraded.returncode != 0:
        raise RuntimeError(f"pipeline db upgrade failed:\n{upgraded.stdout}{upgraded.stderr}")
    stack.engine = open_engine(stack.database.url)
    stack.procs["web"] = start_gunicorn(stack.env, stack.logs, web_port)
    stack.procs["worker"] = start_worker(stack.env, stack.logs)
    status, health = wait_for(
        http_answers(f"{stack.web_url}/healthz"), "gunicorn", 30, stack.procs["web"]
    )
    if status != 200:
        raise RuntimeError(f"/healthz answered {status}: {health}")
    wait_for(http_answers(f"{stack.emulator_url}/_emulator/requests"), "the emulator", 30,
             stack.procs["emulator"])  # fmt: skip
    wait_for(worker_ready(stack.procs["worker"]), "the worker", 60, stack.procs["worker"])
