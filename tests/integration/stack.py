"""One running pipeline: its own Redis, a fresh database migrated by `pipeline db upgrade`,
the emulator playing Ittybit, gunicorn, a Celery worker and (for fault tests) the relay, all
on loopback; and what fault tests do to it: kill a worker, stop, restart or freeze Redis,
hold the database's write lock, restart whatever died as a supervisor would."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import psycopg
from sqlalchemy import Engine, create_engine, text

from pipeline.dev.procs import Proc, free_port, http_answers, wait_for, worker_ready
from pipeline.dev.servers import start_redis
from pipeline.live.tokens import mint
from pipeline.settings import ENVIRONMENT

from .procs import (
    RabbitMQServer,
    run_cli,
    start_emulator,
    start_gunicorn,
    start_relay,
    start_worker,
)

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
PG_SERVER = "postgres@127.0.0.1:5432"
BACKENDS = ("sqlite", "postgresql")
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672"  # the machine's; each stack has a vhost
METRICS_TOKEN = "metrics_it_token"  # what /metrics wants of a stack


def rabbitmq_answers() -> bool:
    return (
        subprocess.run(["rabbitmqctl", "-q", "status"], capture_output=True, check=False).returncode
        == 0
    )


def rabbitmqctl(*args: str) -> None:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}")


# Variables that must not leak from the developer's shell into a stack: every one
# Settings reads, and those of the Procfile and of gunicorn.
OURS = (*ENVIRONMENT, "DYNO", "PORT", "WEB_CONCURRENCY", "WORKER_CONCURRENCY", "GUNICORN_CMD_ARGS")
# Timings for fault stacks: a task past its hard limit (4 s) is killed, its run taken back
# when the lease (6 s) runs out; a run published but never claimed is re-published 2 s
# after it fell due; the relay looks twice a second.
FAULT_TIMINGS = {
    "TASK_TIME_LIMIT": "4",
    "RUN_LEASE_SECONDS": "6",
    "REDELIVER_AFTER": "2",
    "RELAY_INTERVAL": "0.5",
}
# Processes a supervisor (Heroku, systemd `Restart=always`) restarts when they die.
SUPERVISED = ("worker", "web", "relay")


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
    live_secret: str = field(default_factory=lambda: f"live_it_{secrets.token_hex(8)}")
    procs: dict[str, Proc] = field(default_factory=dict)
    engine: Engine | None = None
    # How often each process had to be restarted after it died (see `supervise`).
    restarts: Counter[str] = field(default_factory=Counter)
    vhost: str | None = None  # on RabbitMQ: this stack's own vhost of the machine's broker
    rabbit: RabbitMQServer | None = None  # or a RabbitMQ node of its own (fault tests)

    @property
    def db(self) -> Engine:
        assert self.engine is not None
        return self.engine

    @property
    def webhook_url(self) -> str:
        return f"{self.web_url}/webhooks/ittybit"

    def live_token(self, email: str, ttl: float = 600) -> str:
        """A token for the live routes naming `email`, as the app would mint it."""
        return mint(email, (self.live_secret,), ttl)

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """`pipeline ARGS...` with this stack's environment (plus `env`)."""
        return run_cli(args, {**self.env, **(env or {})}, self.logs, timeout)

    # --- the broker -------------------------------------------------------------------

    @property
    def redis_port(self) -> int:
        return urlsplit(self.env["CELERY_BROKER_URL"]).port or 6379

    def redis(self, *args: str, timeout: float = 10.0) -> str:
        """`redis-cli -p <our port> ARGS...`; what it printed."""
        done = subprocess.run(
            ["redis-cli", "-p", str(self.redis_port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return done.stdout.strip()

    def stop_broker(self) -> None:
        """Stop our broker (connections refused from now on)."""
        if self.rabbit is not None:
            self.rabbit.stop()
        else:
            self.stop_redis()

    def start_broker(self) -> None:
        if self.rabbit is not None:
            if self.rabbit.proc is None:
                self.rabbit.start()
        else:
            self.start_redis()

    @contextmanager
    def broker_frozen(self) -> Iterator[None]:
        if self.rabbit is not None:
            with self.rabbit.frozen():
                yield
        else:
            with self.redis_frozen():
                yield

    def stop_redis(self) -> None:
        """Stop our Redis (connections refused from now on); nothing is saved."""
        proc = self.procs.pop("redis", None)
        if proc is not None:
            proc.stop()

    def start_redis(self) -> None:
        """Start our Redis again on the same port: empty, as after a crash without
        persistence."""
        if "redis" not in self.procs and self.vhost is None and self.rabbit is None:
            self.procs["redis"], _ = start_redis(self.logs, self.redis_port)

    def restart_redis(self) -> None:
        self.stop_redis()
        self.start_redis()

    @contextmanager
    def redis_frozen(self) -> Iterator[None]:
        """Redis hung: it accepts connections (the kernel does) but answers nothing."""
        proc = self.procs["redis"]
        proc.signal_group(signal.SIGSTOP)
        try:
            yield
        finally:
            proc.signal_group(signal.SIGCONT)

    # --- the database -------------------------------------------------------------------

    @contextmanager
    def database_stalled(self) -> Iterator[None]:
        """Hold the lock webhook inserts need, so the endpoint answers slowly until exit."""
        with self.db.connect() as conn:
            if self.backend == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(text("LOCK TABLE webhook_events IN EXCLUSIVE MODE"))
            try:
                yield
            finally:
                conn.rollback()

    # --- processes ----------------------------------------------------------------------

    def worker_children(self) -> list[int]:
        """Pids of the worker's prefork children (the processes running tasks)."""
        return self.procs["worker"].children()

    def kill_worker_child(self, pid: int) -> None:
        """SIGKILL one prefork child of our worker, as the OOM killer would."""
        if pid not in self.worker_children():
            raise AssertionError(f"pid {pid} is not a child of {self.procs['worker']}")
        os.kill(pid, signal.SIGKILL)

    def start_relay(self, interval: float | None = None) -> Proc:
        """`pipeline relay --interval RELAY_INTERVAL` (or `interval`)."""
        pause = interval if interval is not None else float(self.env.get("RELAY_INTERVAL", 5))
        self.procs["relay"] = start_relay(self.env, self.logs, pause)
        return self.procs["relay"]

    def start_worker(self, wait: bool = True) -> Proc:
        """A new worker (the old one must be stopped); `wait` for it to be ready."""
        proc = self.procs.get("worker")
        if proc is not None and proc.alive:
            raise RuntimeError(f"{proc} is still running")
        proc = proc.again() if proc is not None else start_worker(self.env, self.logs)
        self.procs["worker"] = proc
        if wait:
            wait_for(worker_ready(proc), what="the worker", timeout=60, proc=proc)
        return proc

    def restart(self, name: str, wait: bool = True) -> Proc:
        """Stop `name` (if it runs) and start it again with the same command line."""
        old = self.procs[name]
        old.stop()
        if name == "worker":
            return self.start_worker(wait)
        self.procs[name] = old.again()
        if wait and name == "web":
            wait_for(
                http_answers(f"{self.web_url}/healthz"),
                what="gunicorn",
                timeout=30,
                proc=self.procs[name],
            )
        return self.procs[name]

    def start_web(self, name: str, app: str = "", **env: str) -> str:
        """Another gunicorn on a free port (same database and broker); its base URL."""
        port = free_port()
        self.procs[name] = start_gunicorn({**self.env, **env}, self.logs, port, name, app=app)
        url = f"http://127.0.0.1:{port}"
        wait_for(http_answers(f"{url}/healthz"), what=name, timeout=30, proc=self.procs[name])
        return url

    def supervise(self) -> list[str]:
        """Restart each supervised process that died (counted in `restarts`), like
        Heroku or systemd `Restart=always` would; the names restarted."""
        dead = [n for n in SUPERVISED if n in self.procs and not self.procs[n].alive]
        for name in dead:
            self.restarts[name] += 1
            self.restart(name, wait=False)
        return dead

    def supervising(self, check: Callable[[], T]) -> Callable[[], T]:
        """`check` for wait_for, restarting dead processes before each look."""

        def supervised() -> T:
            self.supervise()
            return check()

        return supervised

    def heal(self) -> None:
        """Undo what a fault test did: thaw and start Redis, restart what died."""
        if "redis" in self.procs:
            self.procs["redis"].signal_group(signal.SIGCONT)
        if self.rabbit is not None and self.rabbit.proc is not None:
            self.rabbit.proc.signal_group(signal.SIGCONT)
        self.start_broker()
        self.supervise()
        if "worker" in self.procs:
            wait_for(
                worker_ready(self.procs["worker"]),
                what="the worker",
                timeout=60,
                proc=self.procs["worker"],
            )

    def stop(self) -> None:
        """Stop the processes by pid (worker first: it finishes its task), drop the database."""
        for name in ("relay", "worker", "web", "emulator", "redis"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                proc.stop()
        for proc in self.procs.values():
            proc.stop()
        if self.vhost is not None:
            rabbitmqctl("delete_vhost", self.vhost)
        if self.rabbit is not None:
            self.rabbit.close()
        if self.engine is not None:
            self.engine.dispose()
        self.database.drop()


def pipeline_env(**values: str) -> dict[str, str]:
    """The parent's environment without our variables, plus `values` (upper-cased)."""
    env = {k: v for k, v in os.environ.items() if k not in OURS}
    env.update({k.upper(): v for k, v in values.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_stack(
    backend: str,
    logs: Path,
    pythonpath: str = "",
    *,
    env: Mapping[str, str] | None = None,
    relay: bool = False,
    concurrency: int = 2,
    broker: str = "redis",
) -> Stack:
    """Start everything (with the relay if asked; `env` adds variables, e.g.
    FAULT_TIMINGS); on any failure stop what was started and re-raise. `broker`: "redis"
    (its own), "rabbitmq" (a vhost of the machine's) or "own-rabbitmq" (a node of its own,
    for tests that stop or freeze it)."""
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
        vhost=f"pipeline_it_{secrets.token_hex(6)}" if broker == "rabbitmq" else None,
    )
    try:
        if broker == "own-rabbitmq":
            stack.rabbit = RabbitMQServer(logs)
        _start(stack, web_port, emulator_port, pythonpath, dict(env or {}), concurrency)
        if relay:
            stack.start_relay()
    except BaseException:
        stack.stop()
        raise
    return stack


def _start(
    stack: Stack,
    web_port: int,
    emulator_port: int,
    pythonpath: str,
    extra: dict[str, str],
    concurrency: int,
) -> None:
    if stack.rabbit is not None:
        broker_url = stack.rabbit.url
    elif stack.vhost is None:
        redis, broker_url = start_redis(stack.logs)
        stack.procs["redis"] = redis
    else:
        rabbitmqctl("add_vhost", stack.vhost)
        rabbitmqctl("set_permissions", "-p", stack.vhost, "guest", ".*", ".*", ".*")
        broker_url = f"{RABBITMQ}/{stack.vhost}"
    api_key = f"key_it_{secrets.token_hex(8)}"
    stack.env = pipeline_env(
        database_url=stack.database.url,
        celery_broker_url=broker_url,
        ittybit_webhook_secret=stack.secret,
        live_token_secret=stack.live_secret,
        metrics_token=METRICS_TOKEN,
        ittybit_api_key=api_key,
        ittybit_api_url=stack.emulator_url,
        public_url=stack.web_url,
        pipeline_var_dir=str(stack.logs / "var"),
    )
    if pythonpath:
        # The caller's PYTHONPATH stays first (a scratch copy of the core can be tried so).
        stack.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [os.getenv("PYTHONPATH"), pythonpath])
        )
    stack.env.update(extra)
    stack.procs["emulator"] = start_emulator(
        stack.env,
        stack.logs,
        emulator_port,
        api_key=api_key,
        secret=stack.secret,
        shape="B",
        delay="0.2",
    )
    upgraded = stack.cli("db", "upgrade")
    if upgraded.returncode != 0:
        raise RuntimeError(f"pipeline db upgrade failed:\n{upgraded.stdout}{upgraded.stderr}")
    stack.engine = open_engine(stack.database.url)
    stack.procs["web"] = start_gunicorn(stack.env, stack.logs, web_port)
    stack.procs["worker"] = start_worker(stack.env, stack.logs, concurrency=concurrency)
    status, health = wait_for(
        http_answers(f"{stack.web_url}/healthz"),
        what="gunicorn",
        timeout=30,
        proc=stack.procs["web"],
    )
    if status != 200:
        raise RuntimeError(f"/healthz answered {status}: {health}")
    wait_for(
        http_answers(f"{stack.emulator_url}/_emulator/requests"),
        what="the emulator",
        timeout=30,
        proc=stack.procs["emulator"],
    )
    wait_for(
        worker_ready(stack.procs["worker"]),
        what="the worker",
        timeout=60,
        proc=stack.procs["worker"],
    )
