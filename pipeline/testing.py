"""Testing a listener: store a payload as a delivery and run the listener on it once, as
a worker would, against a real database (a migrated SQLite file by default).

    from pipeline.testing import database, make_media, run_listener

    def test_a_failed_export_is_flagged_for_its_owner(tmp_path):
        db = database(tmp_path)
        media_id = make_media(db, task_id="task_1", owner="ada@clippable.app")
        failed = {"id": "task_1", "status": "failed", "kind": "video", "error": "no audio"}
        run = run_listener(FlagForReview(), failed, db)
        assert (run.state, run.result) == ("succeeded", {"media_id": media_id})

(the README's example listener and test; tests/unit/test_listener_api.py runs them).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from pipeline.db import make_engine, make_sessionmaker
from pipeline.inbox import receive
from pipeline.listener import Listener
from pipeline.migrate import upgrade
from pipeline.models import ListenerRun, Media, RunState, User
from pipeline.registry import Registry
from pipeline.runner import Runner
from pipeline.settings import Settings


def database(folder: Path) -> str:
    """The URL of a new SQLite file in `folder`, migrated to the current schema."""
    url = f"sqlite:///{Path(folder) / 'pipeline-test.db'}"
    upgrade(url)
    return url


def make_media(
    database_url: str, *, owner: str | None = "ada@clippable.test", **values: Any
) -> int:
    """A committed Media row (owned by the user with email `owner`, created if new); its id."""
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            user = None
            if owner:
                found = session.scalar(select(User).where(User.email == owner))
                user = found or User(email=owner)
            values.setdefault("input_url", "https://clippable.test/projects/edit.mov")
            media = Media(owner=user, **values)
            session.add(media)
            session.flush()
            return media.id
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Run:
    """The run as the ledger holds it after the attempt."""

    id: int
    event_id: int
    state: RunState
    attempts: int
    result: Any
    error: str | None


def run_listener(
    listener: Listener,
    payload: dict[str, Any] | bytes,
    database_url: str,
    *,
    settings: Settings | None = None,
) -> Run:
    """Store `payload` (a dict, or the raw bytes of a delivery) and run `listener` on it
    once. A listener that does not want the event is an AssertionError."""
    settings = dataclasses.replace(settings or Settings(), database_url=database_url)
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    registry = Registry([listener])
    engine = make_engine(database_url)
    try:
        receipt = receive(engine, registry, body, settings.redeliver_after)
        if receipt.error is not None:
            raise AssertionError(f"the payload is not a readable webhook: {receipt.error}")
        if receipt.duplicate:
            raise AssertionError("this payload was stored before: use another task id")
        if not receipt.runs:
            raise AssertionError(f"{listener.name}.wants() is false for this payload")
        [(run_id, _, _)] = receipt.runs
        Runner(settings, engine, registry).execute(run_id)
        with make_sessionmaker(engine)() as session:
            run = session.get_one(ListenerRun, run_id)
            return Run(run.id, run.event_id, run.state, run.attempts, run.result, run.last_error)
    finally:
        engine.dispose()
