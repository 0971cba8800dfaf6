"""The tutorial's workers: a Celery app with three tasks taking the whole payload.

Each does the same work as our listener of that name (it calls its `handle()`) in its own
session and commit, with Celery's defaults and none of our run bookkeeping. For the
benchmark only, each task also writes when it finished into `bench_done`, in the same
commit as its work: the tutorial stores nothing else to time it by.

Run with `celery -A bench.tutorial_tasks worker` (CELERY_BROKER_URL, DATABASE_URL, ...).
"""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Any

from celery import Celery
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, insert
from sqlalchemy.orm import Session, sessionmaker

from listeners.generate_thumbnail import GenerateThumbnail
from listeners.notify_user import NotifyUser
from listeners.update_media_record import UpdateMediaRecord
from pipeline.db import make_engine, make_sessionmaker
from pipeline.errors import Skip
from pipeline.events import normalise
from pipeline.listener import Context, Listener
from pipeline.settings import Settings

app = Celery("tutorial", broker=os.environ.get("CELERY_BROKER_URL"))
app.conf.update(task_ignore_result=True)  # as in Flask's Celery example; otherwise defaults

bench_metadata = MetaData()
bench_done = Table(
    "bench_done",
    bench_metadata,
    Column("id", Integer, primary_key=True),
    Column("task_id", String(255), index=True),
    Column("task", String(64)),
    Column("finished_at", Float),  # Unix seconds
)


@cache
def _database() -> tuple[Settings, sessionmaker[Session]]:
    # Built on the first task, so inside the forked child: no connection crosses a fork.
    settings = Settings.from_env()
    # SQLAlchemy's defaults (no pool pre-ping), as a tutorial user gets them.
    return settings, make_sessionmaker(make_engine(settings.database_url, pool_pre_ping=False))


def _work(listener: Listener, payload: dict[str, Any]) -> None:
    settings, sessions = _database()
    event = normalise(payload)
    with sessions() as session:
        try:
            if listener.wants(event):
                listener.handle(event, Context(session, settings, run_id=0, attempt=1))
        except Skip:
            session.rollback()
        session.execute(
            insert(bench_done).values(
                task_id=event.task_id, task=listener.name, finished_at=time.time()
            )
        )
        session.commit()


_RETRY: dict[str, Any] = {"autoretry_for": (Exception,), "retry_backoff": True, "max_retries": 5}


@app.task(name="tutorial.update_media_record", **_RETRY)  # type: ignore[untyped-decorator]
def update_media_record(payload: dict[str, Any]) -> None:
    _work(UpdateMediaRecord(), payload)


@app.task(name="tutorial.generate_thumbnail", **_RETRY)  # type: ignore[untyped-decorator]
def generate_thumbnail(payload: dict[str, Any]) -> None:
    _work(GenerateThumbnail(), payload)


@app.task(name="tutorial.notify_user", **_RETRY)  # type: ignore[untyped-decorator]
def notify_user(payload: dict[str, Any]) -> None:
    _work(NotifyUser(), payload)
