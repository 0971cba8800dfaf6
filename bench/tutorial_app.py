"""The baselines we measure our endpoint against, each served by the same gunicorn settings.

- `create_app()`: the tutorial's receiver: verify the HMAC, then one `.delay(payload)` per
  listener (three Celery tasks), nothing stored; if Redis blinks, the event is lost.
- `create_bare_app()`: verify the HMAC and answer 200; what Flask and gunicorn cost alone.
- `noop_app`: a WSGI callable that reads the body and answers 200: the server's ceiling.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, request

from bench.tutorial_tasks import generate_thumbnail, notify_user, update_media_record


def _signature_ok() -> bool:
    secret = os.environ["ITTYBIT_WEBHOOK_SECRET"].encode()
    expected = hmac.new(secret, request.get_data(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(request.headers.get("Ittybit-Signature", ""), expected)


def create_app() -> Flask:
    """The tutorial: verify, then `.delay(payload)` for each of the three listeners."""
    app = Flask(__name__)

    @app.post("/webhooks/ittybit")
    def webhook() -> tuple[dict[str, str], int]:
        if not _signature_ok():
            return {"error": "invalid signature"}, 401
        payload = request.get_json()
        for task in (update_media_record, generate_thumbnail, notify_user):
            task.delay(payload)
        return {"status": "ok"}, 200

    return app


def create_bare_app() -> Flask:
    """Verify the HMAC and answer 200: nothing stored, nothing sent."""
    app = Flask(__name__)

    @app.post("/webhooks/ittybit")
    def webhook() -> tuple[dict[str, str], int]:
        if not _signature_ok():
            return {"error": "invalid signature"}, 401
        return {"status": "ok"}, 200

    return app


def noop_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Read the body, answer 200: gunicorn's own cost per request."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
    return [b"{}"]
