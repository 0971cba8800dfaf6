"""The Celery task around a run: what it says when the database does not answer."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from pipeline.runtime import Role, Runtime
from pipeline.settings import Settings
from pipeline.tasks import DatabaseUnreachable, register_listener_tasks


def test_a_run_whose_database_is_unreachable_says_so_in_one_line_and_is_left_for_the_relay(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    closed = "postgresql+psycopg://pipeline@127.0.0.1:1/pipeline"  # nothing listens there
    runtime = Runtime(dataclasses.replace(settings, database_url=closed), Role.WORKER)
    app = runtime.celery
    register_listener_tasks(app, runtime)
    task = app.tasks["listeners.update_media_record"]

    with caplog.at_level(logging.WARNING, "pipeline.tasks"), pytest.raises(DatabaseUnreachable):
        task(7)

    [line] = caplog.messages
    assert line.startswith("run 7 (update_media_record): database error (")
    assert line.endswith("the relay publishes the run again")
    assert "Traceback" not in line
