"""Fixtures for the in-process suite (tests/unit): a real SQLite file per test, settings
built directly, row factories, and loopback HTTP servers playing Ittybit. Nothing here
starts a process or needs a server installed: this is the fast loop (`dev.py test --unit`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from pipeline.db import make_engine, make_sessionmaker
from pipeline.dev.emulator import create_app as emulator_app
from pipeline.dev.emulator import emulator_of
from pipeline.dev.emulator.jobs import EmulatorConfig
from pipeline.dev.servers import serving
from pipeline.migrate import upgrade
from pipeline.models import Media, User
from pipeline.settings import Settings
from pipeline.web import create_app

from .support import API_KEY, SECRET, FakeIttybit


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file; each test gets a copy (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "pipeline.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def database_url(tmp_path: Path, migrated_template: Path) -> str:
    path = tmp_path / "db" / "pipeline.db"
    path.parent.mkdir()
    shutil.copyfile(migrated_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        broker_url="filesystem://",
        broker_folder=str(tmp_path / "broker"),
        webhook_secrets=(SECRET,),
        ittybit_api_key=API_KEY,
        ittybit_api_url="http://127.0.0.1:9",  # tests that call Ittybit point it at a fake
        public_url="https://clippable.test",
        redeliver_after=60.0,
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session for arranging and inspecting rows; commit what you arrange."""
    with make_sessionmaker(engine)() as session:
        yield session


@pytest.fixture
def make_media(session: Session) -> Callable[..., Media]:
    """Factory: a committed Media row (with an owner unless owner=None)."""
    counter = iter(range(1, 1_000_000))

    def make(owner: bool = True, **values: Any) -> Media:
        n = next(counter)
        user = User(email=f"user{n}@clippable.test", name=f"User {n}") if owner else None
        values.setdefault("task_id", f"task_media_{n}")
        values.setdefault("input_url", f"https://clippable-app.com/projects/edit-{n}.mov")
        media = Media(owner=user, **values)
        session.add(media)
        session.commit()
        return media

    return make


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    if "engine" in app.extensions["pipeline"].__dict__:
        app.extensions["pipeline"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def ittybit() -> Iterator[FakeIttybit]:
    with FakeIttybit() as fake:
        yield fake


@pytest.fixture
def emulator() -> Iterator[tuple[str, Flask]]:
    """The project's Ittybit emulator on a loopback port: (base URL, its Flask app).

    Jobs take an hour to finish, so no webhook leaves it during a test.
    """
    app = emulator_app(EmulatorConfig(secret=SECRET, api_key=API_KEY, delay=3600.0))
    with serving(app) as url:
        yield url, app
    emulator_of(app).close()
