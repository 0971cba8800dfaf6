"""The public listener API: one import, and its traps closed. `outside_transaction()`
refuses database access at once; a result that is not JSON fails the run permanently;
the README's example listener and its test run as written."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

import pipeline
from pipeline import Context, Event, Listener, find_media
from pipeline.inbox import receive
from pipeline.models import Media, RunState, User
from pipeline.registry import Registry
from pipeline.runner import Runner
from pipeline.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
BODY = b'{"id": "task_api_1", "status": "succeeded", "kind": "video"}'


def test_one_import_carries_what_a_listener_needs() -> None:
    assert set(pipeline.__all__) >= {
        "Listener",
        "Context",
        "RetryPolicy",
        "Event",
        "Output",
        "RetryableError",
        "PermanentError",
        "Skip",
        "find_media",
    }
    assert all(hasattr(pipeline, name) for name in pipeline.__all__)


class ReadsInside(Listener):
    """Reads a relationship not loaded yet inside the block: a lazy load."""

    name = "reads_inside"

    def handle(self, event: Event, ctx: Context) -> Any:
        media, _ = find_media(ctx.session, event)
        with ctx.outside_transaction():
            return media.owner.email if media.owner else None


class QueriesInside(Listener):
    name = "queries_inside"

    def handle(self, event: Event, ctx: Context) -> Any:
        with ctx.outside_transaction():
            return ctx.session.scalar(select(Media.id))


class CallsOutThenWrites(Listener):
    """The intended use: values read before, the call inside, the write after."""

    name = "calls_out_then_writes"

    def handle(self, event: Event, ctx: Context) -> Any:
        media, _ = find_media(ctx.session, event)
        with ctx.outside_transaction():
            seen = (media.id, media.status)  # loaded before the block: no database access
        media.status = "seen"  # after the block, the row reloads fresh and is written
        return {"seen": list(seen)}


class ReturnsADate(Listener):
    name = "returns_a_date"

    def handle(self, event: Event, ctx: Context) -> Any:
        return {"at": event.received_at}


LISTENERS = [ReadsInside, QueriesInside, CallsOutThenWrites, ReturnsADate]


@pytest.fixture
def run(settings: Settings, engine: Engine, make_media: Any) -> Iterator[Any]:
    make_media(task_id="task_api_1", status="processing")
    registry = Registry(cls() for cls in LISTENERS)
    runner = Runner(settings, engine, registry)
    runs = {name: run_id for run_id, name, _ in receive(engine, registry, BODY, 60).runs}

    def execute(name: str) -> Any:
        return runner.execute(runs[name])

    yield execute


@pytest.mark.parametrize("listener", ["reads_inside", "queries_inside"])
def test_database_access_inside_outside_transaction_fails_the_run_at_once_saying_why(
    run: Any, listener: str
) -> None:
    outcome = run(listener)

    assert outcome.state is RunState.FAILED
    assert outcome.detail == (
        "PermanentError: database access inside ctx.outside_transaction(): read what the "
        "call needs before the block and write its result after it"
    )


def test_values_read_before_the_block_stay_readable_and_writes_after_it_commit(
    run: Any, engine: Engine
) -> None:
    outcome = run("calls_out_then_writes")

    assert outcome.state is RunState.SUCCEEDED
    with engine.connect() as conn:
        assert conn.scalar(select(Media.status)) == "seen"


def test_a_result_that_is_not_json_fails_the_run_at_the_first_attempt(
    run: Any, engine: Engine
) -> None:
    outcome = run("returns_a_date")

    assert outcome.state is RunState.FAILED
    assert outcome.claim is not None and outcome.claim.attempt == 1
    assert outcome.detail.startswith("PermanentError: handle() must return JSON values")


def readme_block(first_line: str) -> str:
    found = re.search(
        r"```python\n" + re.escape(first_line) + r"\n(.*?)```", README.read_text(), re.S
    )
    assert found, f"README.md has no python block starting with {first_line!r}"
    return found[1]


@pytest.fixture
def readme_listener() -> Iterator[None]:
    """The README's example listener, importable as listeners.flag_for_review."""
    module = types.ModuleType("listeners.flag_for_review")
    module.__file__ = "README.md"
    sys.modules[module.__name__] = module
    exec(compile(readme_block("# listeners/flag_for_review.py"), "README.md", "exec"), vars(module))
    yield
    del sys.modules[module.__name__]


def test_the_readmes_listener_test_passes_as_written(readme_listener: None, tmp_path: Path) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(readme_block("# tests/test_flag_for_review.py"), "README.md", "exec"), namespace)

    namespace["test_a_failed_export_is_flagged_for_its_owner"](tmp_path)


def test_the_readmes_listener_dead_letters_media_without_an_owner(
    readme_listener: None, tmp_path: Path
) -> None:
    from listeners.flag_for_review import FlagForReview  # type: ignore[import-not-found]

    from pipeline.testing import database, make_media, run_listener

    db = database(tmp_path)
    media_id = make_media(db, task_id="task_2", owner=None)
    run = run_listener(FlagForReview(), {"id": "task_2", "status": "failed", "kind": "video"}, db)

    assert run.state is RunState.FAILED
    assert run.error == f"PermanentError: media {media_id} has no owner to ask for a review"
    assert FlagForReview.name == "flag_for_review"  # from its module, whatever the class


def test_users_and_media_made_for_a_test_are_committed(tmp_path: Path) -> None:
    from pipeline.db import make_engine
    from pipeline.testing import database, make_media

    db = database(tmp_path)
    first, second = make_media(db, task_id="t1"), make_media(db, task_id="t2")
    engine = make_engine(db)
    with engine.connect() as conn:
        assert conn.scalar(select(User.email)) == "ada@clippable.test"
        assert list(conn.scalars(select(Media.id))) == [first, second]
    engine.dispose()
