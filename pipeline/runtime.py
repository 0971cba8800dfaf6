"""Per-process state: settings, engine, listeners and the Celery app, built once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from pipeline.db import make_engine
from pipeline.dispatch import Publisher
from pipeline.registry import Registry, discover
from pipeline.runner import Runner
from pipeline.settings import Settings


def create_celery(settings: Settings) -> Celery:
    """A Celery app configured from celeryconfig.py, pointed at `settings`' broker."""
    app = Celery("pipeline")
    app.config_from_object("celeryconfig")
    app.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options=settings.broker_transport_options(),
        task_time_limit=settings.task_time_limit,
        task_soft_time_limit=settings.task_time_limit * 0.9,
    )
    return app


@dataclass
class Runtime:
    settings: Settings

    @classmethod
    def from_env(cls) -> Runtime:
        return cls(Settings.from_env())

    @cached_property
    def engine(self) -> Engine:
        """For all but the two hot paths: each pooled connection is pinged before use."""
        return self._engine(pool_pre_ping=True)

    @cached_property
    def inbox_engine(self) -> Engine:
        """The webhook endpoint's: on PostgreSQL autocommit and no pre-ping, because its one
        statement is a transaction of its own and inbox.store retries a dropped connection."""
        if not self._postgresql:
            return self.engine
        return self._engine(pool_pre_ping=False, isolation_level="AUTOCOMMIT")

    @cached_property
    def runner_engine(self) -> Engine:
        """The worker's: no pre-ping round trip per transaction; Runner.claim, a task's
        first statement, replaces a dropped connection, and SQLAlchemy then renews the
        rest of the pool."""
        if not self._postgresql:
            return self.engine
        return self._engine(pool_pre_ping=False)

    @property
    def _postgresql(self) -> bool:
        # From the URL: the web, which needs only the inbox engine, builds no other.
        return make_url(self.settings.database_url).get_backend_name() == "postgresql"

    def _engine(self, **options: Any) -> Engine:
        return make_engine(
            self.settings.database_url,
            sqlite_synchronous=self.settings.sqlite_synchronous,
            **options,
        )

    @cached_property
    def registry(self) -> Registry:
        return discover()

    @cached_property
    def celery(self) -> Celery:
        return create_celery(self.settings)

    @cached_property
    def publisher(self) -> Publisher:
        return Publisher(self.celery)

    @cached_property
    def runner(self) -> Runner:
        return Runner(self.settings, self.runner_engine, self.registry)

    def after_fork(self) -> None:
        """A forked child must not share its parent's connections (SQLAlchemy docs)."""
        for name in ("engine", "inbox_engine", "runner_engine"):
            if name in self.__dict__:
                self.__dict__[name].dispose(close=False)
