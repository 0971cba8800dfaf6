"""Per-process state: settings, the one engine its role needs, the listeners, the Celery
app and the publisher, each built once, on first use."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db import make_engine, make_sessionmaker
from pipeline.metrics.tally import TALLY
from pipeline.outbox import Publisher
from pipeline.registry import Registry, discover
from pipeline.runner import Runner
from pipeline.settings import Settings


class Role(StrEnum):
    """What a process does, which decides how it talks to the database."""

    WEB = "web"  # one statement per request, answered within DATABASE_WRITE_TIMEOUT
    WORKER = "worker"  # runs listeners; waits as long as a listener's work takes
    OPS = "ops"  # the relay and the CLI: every transaction on a tested connection


def create_celery(settings: Settings) -> Celery:
    """A Celery app: celeryconfig.py's static settings, then those of `settings`."""
    app = Celery("pipeline")
    app.config_from_object("celeryconfig")
    if settings.uses_filesystem_broker:
        for folder in ("queue", "control", "processed"):
            (Path(settings.broker_folder) / folder).mkdir(parents=True, exist_ok=True)
    app.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options=transport_options(settings),
        task_time_limit=settings.task_time_limit,
        task_soft_time_limit=settings.task_time_limit * 0.9,
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
    )
    return app


def transport_options(settings: Settings) -> dict[str, Any]:
    """kombu transport options for the configured broker (no side effects)."""
    if settings.uses_filesystem_broker:
        folder = Path(settings.broker_folder)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "polling_interval": 0.05,
        }
    if settings.uses_amqp_broker:
        # Publisher confirms: a publish returns once RabbitMQ has the message, so the
        # relay's "published" means stored; a refused one raises and the run waits.
        return {"confirm_publish": True}
    return {"visibility_timeout": settings.visibility_timeout}


@dataclass
class Runtime:
    settings: Settings
    role: Role = Role.OPS

    @classmethod
    def from_env(cls, role: Role = Role.OPS) -> Runtime:
        return cls(Settings.from_env(), role)

    @cached_property
    def engine(self) -> Engine:
        """The web's and the worker's skip the pool's pre-ping round trip: the inbox's
        write and the worker's claim, each a process's first statement of its work, retry
        once on a connection the server dropped (and then renew the pool). The web's runs
        each statement as its own transaction on PostgreSQL (autocommit)."""
        settings = self.settings
        web = self.role is Role.WEB
        options = {"isolation_level": "AUTOCOMMIT"} if web and not settings.uses_sqlite else {}
        engine = make_engine(
            settings.database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            pool_pre_ping=self.role is Role.OPS,
            timeout=settings.database_write_timeout if web else None,
            # silent that long mid-transaction: as cut off as a worker that lost its lease
            idle_in_transaction=settings.lease_seconds,
            **options,
        )
        TALLY.bind(engine)  # the process's counts go to its database (metrics/tally.py)
        return engine

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    @cached_property
    def registry(self) -> Registry:
        return discover()

    @cached_property
    def celery(self) -> Celery:
        return create_celery(self.settings)

    @cached_property
    def publisher(self) -> Publisher:
        """The web publishes through the Redis fast path where it applies; the relay and
        the CLI always through Celery's own producer, so a fast path gone wrong is caught
        up by a path that cannot be."""
        return Publisher(self.celery, fast=self.role is Role.WEB)

    @cached_property
    def runner(self) -> Runner:
        return Runner(self.settings, self.engine, self.registry)

    def after_fork(self) -> None:
        """A forked child must not share its parent's connections (SQLAlchemy docs), nor
        its clients of Ittybit and the broker."""
        TALLY.after_fork()
        if "engine" in self.__dict__:
            self.engine.dispose(close=False)
        if "runner" in self.__dict__:
            self.runner.after_fork()
        if "publisher" in self.__dict__:
            self.publisher.after_fork()
