"""The web process: `POST /webhooks/ittybit`, `GET /healthz`, the live routes
(pipeline/live/views.py: status API, stream, media page) and `GET /metrics`
(pipeline/metrics/views.py) and the console at /console/ (pipeline/console/); errors
are JSON.

Run with `gunicorn -c gunicorn.conf.py 'pipeline.web:create_app()'` (the Procfile).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from pipeline import metrics, preflight
from pipeline.console import views as console
from pipeline.db import ping
from pipeline.errors import (
    DatabaseUnavailable,
    InvalidSignature,
    PayloadTooLarge,
    PipelineError,
    RequestRejected,
    TooManyStreams,
)
from pipeline.inbox import receive
from pipeline.live import views as live
from pipeline.metrics import views as metrics_views
from pipeline.runtime import Role, Runtime
from pipeline.settings import Settings
from pipeline.signing import SIGNATURE_HEADER, verify

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    """The Flask app. Fails at start-up, naming what is wrong, when the webhook secret is
    missing or a listener module cannot be imported: never a 500 per webhook later."""
    runtime = Runtime(settings or Settings.from_env(), Role.WEB)
    runtime.settings.require_webhook_secret()
    runtime.registry  # noqa: B018 - discover the listeners now: a broken one stops the boot
    for problem in preflight.embedded_defaults_in_production(runtime.settings):
        log.error("%s", problem)
    app = Flask(__name__, static_folder=None)  # the live blueprint serves /static
    app.config["MAX_CONTENT_LENGTH"] = runtime.settings.max_body_bytes
    # `//x` is not a page: a 404 in JSON, not werkzeug's HTML 308 to `/x`.
    app.url_map.merge_slashes = False
    app.extensions["pipeline"] = runtime
    app.add_url_rule("/webhooks/ittybit", view_func=receive_webhook, methods=["POST"])
    app.add_url_rule("/healthz", view_func=healthz, methods=["GET"])
    live.init_app(app, runtime.settings, runtime.engine)
    names = [listener.name for listener in runtime.registry]
    metrics_views.init_app(
        app, runtime.settings, runtime.engine, names, lambda: runtime.publisher.backlog()
    )
    console.init_app(app, runtime.settings, runtime.engine, runtime.publisher, names)
    app.register_error_handler(RequestRejected, _rejected)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(SQLAlchemyError, _database_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["pipeline"]
    return runtime


def receive_webhook() -> tuple[Response, int]:
    """Verify, store, answer, then publish: the 200 means the delivery is durable. Each
    answer is counted by outcome (pipeline/metrics)."""
    try:
        response, status, outcome = _receive(_runtime())
    except PayloadTooLarge:
        metrics.webhook("too_large")
        raise
    except InvalidSignature:
        metrics.webhook("rejected_signature")
        raise
    except (DatabaseUnavailable, SQLAlchemyError):
        metrics.webhook("unavailable")
        raise
    metrics.webhook(outcome)
    return response, status


def _receive(runtime: Runtime) -> tuple[Response, int, str]:
    settings = runtime.settings
    body = _read_body(settings.max_body_bytes)
    signature = request.headers.get(SIGNATURE_HEADER)
    try:
        verify(body, signature, settings.webhook_secrets)
    except InvalidSignature:
        log.warning(
            "webhook from %s refused: %s signature",
            request.remote_addr,
            "a wrong" if signature else "no",
        )
        raise
    receipt = receive(
        runtime.engine,
        runtime.registry,
        body,
        settings.redeliver_after,
        settings.database_write_timeout,
    )
    if receipt.error is not None:
        log.warning("webhook stored as event %s, unreadable: %s", receipt.event_id, receipt.error)
        error = _error_body(receipt.error, event_id=receipt.event_id)
        return error, receipt.error.status, "unreadable"
    if receipt.duplicate:
        log.debug("webhook duplicate of event %s", receipt.event_id)
        return jsonify(status="duplicate", event_id=receipt.event_id), 200, "duplicate"
    runs = [
        {"id": run_id, "listener": name, "state": state} for run_id, name, state in receipt.runs
    ]
    # DEBUG, not INFO: a line per accepted webhook costs the hot path more than its worth
    # where the platform's router logs every request already (bench/README.md).
    log.debug("webhook stored as event %s, runs %s", receipt.event_id, [r[0] for r in receipt.runs])
    response = jsonify(status="accepted", event_id=receipt.event_id, runs=runs)
    # Publish once the answer is on its way: the runs are durable already, and a slow
    # broker then delays no sender (the relay covers a publish that fails).
    response.call_on_close(lambda: runtime.publisher.publish(receipt.to_publish))
    return response, 200, "accepted"


def _read_body(cap: int) -> bytes:
    """The raw body, or PayloadTooLarge (413) past `cap`, without reading an endless one."""
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:  # werkzeug's check of Content-Length
        raise PayloadTooLarge(f"the body is larger than the {cap}-byte limit") from None
    # A chunked body has no Content-Length: werkzeug cuts it at the cap without a word.
    streamed = request.content_length is None
    if streamed and len(body) >= cap and request.environ["wsgi.input"].read(1):
        raise PayloadTooLarge(f"the body is larger than the {cap}-byte limit")
    return body


def healthz() -> tuple[Response, int]:
    """200 when the database and the broker answer; 503 naming the one that does not."""
    runtime = _runtime()
    checks: dict[str, str] = {}
    try:
        ping(runtime.engine, runtime.settings.database_write_timeout)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable ({type(exc).__name__})"
    try:
        with runtime.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unavailable ({type(exc).__name__})"
    healthy = all(v == "ok" for v in checks.values())
    if runtime.settings.uses_filesystem_broker:
        checks["broker_reach"] = "this host only (filesystem://)"
    return jsonify(status="ok" if healthy else "unavailable", **checks), 200 if healthy else 503


def _error_body(error: RequestRejected, **extra: Any) -> Response:
    return jsonify(error=error.code, message=error.message, **extra)


def _rejected(error: RequestRejected) -> tuple[Response, int]:
    response = _error_body(error)
    if isinstance(error, TooManyStreams):
        response.headers["Retry-After"] = "5"
    return response, error.status


def _http_error(error: HTTPException) -> tuple[Response, int]:
    code = (error.name or "http_error").lower().replace(" ", "_")
    return jsonify(error=code, message=error.description or error.name), error.code or 500


def _database_error(error: SQLAlchemyError) -> tuple[Response, int]:
    # Nothing was stored, so the sender must try again: 503, which Ittybit retries.
    log.error("database error while receiving: %s", type(error).__name__)
    return _rejected(DatabaseUnavailable("the database is unavailable; retry later"))


def _unexpected_error(error: Exception) -> tuple[Response, int]:
    if isinstance(error, HTTPException):
        return _http_error(error)
    if isinstance(error, PipelineError):
        log.error("%s: %s", type(error).__name__, error.message)
    else:
        log.exception("unexpected error")
    return jsonify(error="internal_error", message="unexpected error; it has been logged"), 500
