"""The live routes on the web port: the status API, the stream and the media page.

    GET /api/media/<id>     the media's status, JSON
    GET /api/stream         Server-Sent Events: every change to the token's user's media
                            (?media=<id>: one of them), resumed from Last-Event-ID
    GET /media/<id>         the media page, live through the stream (static/live.js)

Each needs a token (tokens.py) as `Authorization: Bearer` or `?token=`; every refusal is
JSON with a status and a code (errors.py), never a page of ours.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from sqlalchemy import Engine

from pipeline.db import read_only
from pipeline.errors import NotFound, RequestRejected, TokenRejected, TooManyStreams
from pipeline.live import changes, tokens
from pipeline.live.hub import Hub
from pipeline.live.stream import HEARTBEAT, Stream
from pipeline.live.worker import ADOPT
from pipeline.settings import Settings

HERE = Path(__file__).parent
MAX_ID = 2**63 - 1
STREAM_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: pass each event on at once
}

live = Blueprint(
    "live",
    __name__,
    static_folder=HERE / "static",
    static_url_path="/static",
    template_folder=HERE / "templates",
)


class BadRequest(RequestRejected):
    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Live:
    """The live routes' state in one web process."""

    settings: Settings
    engine: Engine  # the web's, reading only

    @cached_property
    def hub(self) -> Hub:
        return Hub(self.engine, self.settings.live_heartbeat, self.settings.live_max_streams)


def init_app(app: Flask, settings: Settings, engine: Engine) -> None:
    app.extensions["pipeline.live"] = Live(settings, read_only(engine))
    app.register_blueprint(live)


def _live() -> Live:
    state: Live = current_app.extensions["pipeline.live"]
    if not state.settings.live_token_secrets:
        raise NotFound("live updates are off: LIVE_TOKEN_SECRET is not set")
    return state


def _viewer(state: Live) -> tuple[int, float]:
    """The token's user id and the token's expiry, or TokenRejected (401)."""
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else request.args.get("token")
    if not token:
        raise TokenRejected("a token is needed: `Authorization: Bearer <token>` or ?token=")
    email, expires = tokens.read(token, state.settings.live_token_secrets)
    with state.engine.connect() as conn:
        owner = changes.user_id(conn, email)
    if owner is None:
        raise TokenRejected("the token names a user who does not exist")
    return owner, expires


def _number(raw: str | None, code: str, what: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > MAX_ID:
        raise BadRequest(
            code, f"{what} must be a whole number from 0 to {MAX_ID}, got {raw[:40]!r}"
        )
    return int(raw)


def _media_id(raw: str) -> int:
    number = _number(raw, "invalid_media_id", "the media id")
    assert number is not None  # the route has a value
    return number


def _viewers_media(raw_id: str) -> dict[str, Any]:
    """The status of media `raw_id` if the token's user owns it; else 401, 400 or 404."""
    state = _live()
    owner, _ = _viewer(state)
    media_id = _media_id(raw_id)
    with state.engine.connect() as conn:
        row = changes.one(conn, owner, media_id)
    if row is None:
        raise NotFound(f"no media {media_id} of yours")
    return changes.status_json(row)


@live.get("/api/media/<raw_id>")
def media_status(raw_id: str) -> Response:
    response = jsonify(_viewers_media(raw_id))
    response.headers["Cache-Control"] = "no-store"
    return response


@live.get("/api/stream")
def stream() -> Response:
    state = _live()
    owner, expires = _viewer(state)
    media_id = _number(request.args.get("media"), "invalid_media_id", "?media")
    cursor = _number(
        request.headers.get("Last-Event-ID") or request.args.get("after"),
        "invalid_cursor",
        "the cursor (Last-Event-ID or ?after)",
    )
    hub = state.hub
    if hub.full():
        raise TooManyStreams(f"this web process holds {hub.max_streams} streams; retry later")
    with state.engine.connect() as conn:
        newest = changes.clock(conn, owner)
        if cursor is not None and cursor > newest:
            raise BadRequest(
                "cursor_ahead", f"the cursor {cursor} is ahead of your newest change ({newest})"
            )
        if media_id is not None and changes.one(conn, owner, media_id) is None:
            raise NotFound(f"no media {media_id} of yours")
        live_stream = Stream(owner, media_id, newest if cursor is None else cursor, expires)
        opening = live_stream.start(conn, resumed=cursor is not None)
    adopt = request.environ.get(ADOPT)
    if adopt is not None:  # our gunicorn worker: the hub writes what follows
        adopt(lambda sock, chunked: hub.adopt(sock, live_stream, chunked))
        body: Iterator[bytes] = iter([opening])
    else:
        body = _in_this_thread(hub, live_stream, opening)
    return Response(body, mimetype="text/event-stream", headers=STREAM_HEADERS)


def _in_this_thread(hub: Hub, stream: Stream, opening: bytes) -> Iterator[bytes]:
    """The stream served by the request's own thread (the test client, another worker
    class): woken by the hub like the held ones."""
    waiter = hub.waiter(stream.owner)
    try:
        yield opening
        waiter.event.set()  # a change may have committed before the waiter was there
        while time.time() < stream.expires_at:
            woken = waiter.event.wait(hub.heartbeat)
            waiter.event.clear()
            data = stream.catch_up_on(hub.engine) if woken else b""
            yield data if woken else HEARTBEAT
    finally:
        hub.forget(waiter)


@live.get("/media/<raw_id>")
def media_page(raw_id: str) -> str:
    media = _viewers_media(raw_id)
    return render_template("media.html", media=media, token=request.args.get("token", ""))
