"""The real web app, except that its process dies (SIGKILL) right after committing a
delivery whose body contains `die-after-commit`: after the 200 became due, before any
publish. Copied beside the probe and run as `gunicorn 'crashing_web:create_app()'`."""

from __future__ import annotations

import os
import signal

from flask import Flask
from sqlalchemy import Engine

import pipeline.ingest
from pipeline.inbox import NewEvent, Stored
from pipeline.web import create_app as create_real_app

MARKER = b"die-after-commit"


def create_app() -> Flask:
    store = pipeline.ingest.store  # inbox.store: returns once the event is committed

    def store_then_die(engine: Engine, new: NewEvent, timeout: float | None = None) -> Stored:
        stored = store(engine, new, timeout)
        if MARKER in new.raw_body:
            os.kill(os.getpid(), signal.SIGKILL)
        return stored

    pipeline.ingest.store = store_then_die
    return create_real_app()
