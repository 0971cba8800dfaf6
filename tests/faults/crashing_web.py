"""The real web app, except that its process dies (SIGKILL) right after committing a
delivery whose body contains `die-after-commit`: after the 200 became due, before any
publish. Copied beside the probe and run as `gunicorn 'crashing_web:create_app()'`."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from flask import Flask
from sqlalchemy import event

from pipeline.web import create_app as create_real_app

MARKER = b"die-after-commit"


def create_app() -> Flask:
    app = create_real_app()
    engine = app.extensions["pipeline"].engine
    marked = threading.local()

    @event.listens_for(engine, "before_cursor_execute")
    def _spot(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO WEBHOOK_EVENTS"):
            values = params.values() if isinstance(params, dict) else params
            marked.dying = any(MARKER in _blob(value) for value in values)

    commit = engine.dialect.do_commit

    def commit_then_die(dbapi_connection: Any) -> None:
        commit(dbapi_connection)
        if getattr(marked, "dying", False):
            os.kill(os.getpid(), signal.SIGKILL)

    engine.dialect.do_commit = commit_then_die  # type: ignore[method-assign]
    return app


def _blob(value: Any) -> bytes:
    """The raw body as bound: psycopg wraps bytes in `Binary`, sqlite3 in a memoryview."""
    value = getattr(value, "obj", value)
    return bytes(value) if isinstance(value, bytes | memoryview) else b""
