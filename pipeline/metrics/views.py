"""`GET /metrics`: Prometheus' text format, for `Authorization: Bearer $METRICS_TOKEN`;
a 404 while METRICS_TOKEN is unset, as if there were no such page."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

from flask import Flask, Response, request
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from sqlalchemy import Engine

from pipeline.errors import NotFound, TokenRejected
from pipeline.metrics.exposition import Exposition
from pipeline.settings import Settings


def init_app(
    app: Flask,
    settings: Settings,
    engine: Engine,
    listeners: Sequence[str],
    backlog: Callable[[], int | None] | None = None,
) -> None:
    exposition = Exposition(engine, listeners, backlog)
    token = settings.metrics_token

    def metrics() -> Response:
        if not token:
            raise NotFound("no such page")
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            raise TokenRejected("/metrics wants Authorization: Bearer <METRICS_TOKEN>")
        return Response(exposition.page(), mimetype=None, content_type=CONTENT_TYPE_PLAIN_0_0_4)

    app.add_url_rule("/metrics", view_func=metrics, methods=["GET"])
