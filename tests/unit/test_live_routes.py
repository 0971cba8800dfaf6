"""The live routes, in process: the status API's fields, the stream's opening, replay
from Last-Event-ID and narrowing, who may see what, and a JSON 4xx (never a 500) for
anything malformed."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from pipeline.live.tokens import mint
from pipeline.models import Media
from pipeline.settings import Settings
from pipeline.web import create_app

LIVE_SECRET = "live_unit_secret"
FIELDS = {
    "id",
    "status",
    "kind",
    "output_url",
    "thumbnail_url",
    "error",
    "duration",
    "width",
    "height",
    "updated_at",
    "version",
}


@pytest.fixture
def live_app(settings: Settings) -> Iterator[Flask]:
    live = dataclasses.replace(settings, live_token_secrets=(LIVE_SECRET,), live_heartbeat=0.2)
    app = create_app(live)
    yield app
    state = app.extensions["pipeline.live"]
    if "hub" in state.__dict__:
        state.hub.close()
    app.extensions["pipeline"].engine.dispose()


@pytest.fixture
def live(live_app: Flask) -> FlaskClient:
    return live_app.test_client()


def token_for(media: Media, **kwargs: float) -> str:
    assert media.owner is not None
    return mint(media.owner.email, (LIVE_SECRET,), **kwargs)


def events(
    response: TestResponse, until: Callable[[list[str]], bool], timeout: float = 5
) -> list[str]:
    """The stream's lines until `until(lines)` holds (or the timeout)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for chunk in response.response:
        lines += chunk.decode().splitlines() if isinstance(chunk, bytes) else chunk.splitlines()
        if until(lines) or time.monotonic() > deadline:
            break
    response.close()
    return lines


def ids(lines: list[str]) -> list[int]:
    return [int(line[4:]) for line in lines if line.startswith("id: ")]


def test_the_status_api_gives_every_field_of_the_owners_media(
    live: FlaskClient, make_media: Callable[..., Media]
) -> None:
    media = make_media(status="ready", output_url="https://cdn.test/a.mp4", width=1920)

    answer = live.get(
        f"/api/media/{media.id}", headers={"Authorization": f"Bearer {token_for(media)}"}
    )

    assert answer.status_code == 200
    assert set(answer.json) == FIELDS
    assert answer.json["status"] == "ready" and answer.json["width"] == 1920
    assert answer.json["version"] == media.version
    assert answer.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("token", "why"),
    [(None, "a token is needed"), ("nonsense", "not one of ours"), ("expired", "expired")],
)
def test_no_token_or_a_bad_one_is_401_json(
    live: FlaskClient, make_media: Callable[..., Media], token: str | None, why: str
) -> None:
    media = make_media()
    if token == "expired":
        token = token_for(media, ttl=1, now=time.time() - 10)
    query = f"?token={token}" if token else ""

    for path in (f"/api/media/{media.id}", "/api/stream", f"/media/{media.id}"):
        answer = live.get(path + query)
        assert answer.status_code == 401, path
        assert answer.json["error"] == "invalid_token" and why in answer.json["message"]


def test_another_users_media_is_not_found(
    live: FlaskClient, make_media: Callable[..., Media]
) -> None:
    mine, theirs = make_media(), make_media()

    for path in (
        f"/api/media/{theirs.id}",
        f"/api/stream?media={theirs.id}",
        f"/media/{theirs.id}",
    ):
        separator = "&" if "?" in path else "?"
        answer = live.get(f"{path}{separator}token={token_for(mine)}")
        assert (answer.status_code, answer.json["error"]) == (404, "not_found"), path


def test_without_live_token_secret_the_live_routes_are_off(
    client: FlaskClient, make_media: Callable[..., Media]
) -> None:
    answer = client.get(f"/api/media/{make_media().id}?token=x")

    assert answer.status_code == 404
    assert "LIVE_TOKEN_SECRET" in answer.json["message"]


def test_a_stream_opens_with_a_retry_hint_and_the_media_as_it_is(
    live: FlaskClient, make_media: Callable[..., Media]
) -> None:
    media = make_media(status="processing")

    answer = live.get(f"/api/stream?media={media.id}&token={token_for(media)}", buffered=False)

    assert answer.status_code == 200
    assert answer.mimetype == "text/event-stream"
    assert answer.headers["X-Accel-Buffering"] == "no"
    lines = events(answer, lambda lines: any(line.startswith("data:") for line in lines))
    assert lines[0] == "retry: 2000"
    assert "event: media" in lines and ids(lines) == [media.version]
    assert '"status":"processing"' in next(line for line in lines if line.startswith("data:"))


def test_a_change_committed_while_watching_is_sent_after_its_commit(
    live: FlaskClient, session: Session, make_media: Callable[..., Media]
) -> None:
    media = make_media(status="processing")
    answer = live.get(f"/api/stream?token={token_for(media)}", buffered=False)

    def finish() -> None:
        time.sleep(0.2)
        media.status = "ready"
        session.commit()

    threading.Thread(target=finish).start()
    lines = events(answer, lambda lines: any('"ready"' in line for line in lines))

    assert any('"status":"ready"' in line for line in lines)
    assert ids(lines)[-1] == media.version


def test_reconnecting_with_last_event_id_replays_every_change_since(
    live: FlaskClient, session: Session, make_media: Callable[..., Media]
) -> None:
    first, second, other_users = make_media(), make_media(), make_media()
    second.owner = first.owner
    session.commit()
    cursor = second.version
    first.status = "ready"
    session.commit()
    other_users.status = "ready"
    session.commit()
    second.status = "failed"
    session.commit()

    answer = live.get(
        "/api/stream",
        headers={"Last-Event-ID": str(cursor)},
        query_string={"token": token_for(first)},
        buffered=False,
    )
    lines = events(answer, lambda lines: len(ids(lines)) >= 2)

    assert ids(lines) == [first.version, second.version]  # oldest change first
    assert f'"id":{other_users.id},' not in "".join(lines)


def test_media_narrows_the_stream_to_one_media(
    live: FlaskClient, session: Session, make_media: Callable[..., Media]
) -> None:
    watched, other = make_media(), make_media()
    other.owner = watched.owner
    session.commit()
    cursor = other.version
    other.status = "ready"
    session.commit()
    watched.status = "ready"
    session.commit()

    answer = live.get(
        f"/api/stream?media={watched.id}&after={cursor}&token={token_for(watched)}", buffered=False
    )
    lines = events(answer, lambda lines: len(ids(lines)) >= 1)

    assert ids(lines) == [watched.version]


def test_a_cursor_from_the_future_is_400(
    live: FlaskClient, make_media: Callable[..., Media]
) -> None:
    media = make_media()

    answer = live.get(
        "/api/stream",
        headers={"Last-Event-ID": str(media.version + 1)},
        query_string={"token": token_for(media)},
    )

    assert (answer.status_code, answer.json["error"]) == (400, "cursor_ahead")


def test_past_the_stream_limit_a_new_stream_is_503_with_retry_after(
    live_app: Flask, make_media: Callable[..., Media]
) -> None:
    live_app.extensions["pipeline.live"].settings = dataclasses.replace(
        live_app.extensions["pipeline.live"].settings, live_max_streams=0
    )
    live_app.extensions["pipeline.live"].__dict__.pop("hub", None)
    media = make_media()

    answer = live_app.test_client().get(f"/api/stream?token={token_for(media)}")

    assert (answer.status_code, answer.json["error"]) == (503, "too_many_streams")
    assert answer.headers["Retry-After"]


def test_the_media_page_marks_its_live_fields_and_serves_its_own_script(
    live: FlaskClient, make_media: Callable[..., Media]
) -> None:
    media = make_media(status="failed", error="<script>alert(1)</script>")

    page = live.get(f"/media/{media.id}?token={token_for(media)}")
    script = live.get("/static/live.js")

    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for field in ("status", "output", "thumbnail", "error"):
        assert f'data-field="{field}"' in html
    assert "<script>alert(1)</script>" not in html  # the payload's text is escaped
    assert (
        '<script src="/static/live.js">' in html and "//" not in html.split("<script src=")[1][:3]
    )
    assert script.status_code == 200 and b"IttybitLive" in script.data
    script.close()


ODD = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(
        ["", "0", "-1", "1e3", "0x10", " 1", "1 ", "\uff19", "NaN", "%00", "1;DROP TABLE media"]
    ),
)


@hypothesis_settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    media_id=ODD,
    cursor=ODD,
    extra=st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=3),
)
def test_odd_ids_cursors_and_query_strings_get_json_4xx_never_500(
    live: FlaskClient,
    make_media: Callable[..., Media],
    media_id: str,
    cursor: str,
    extra: dict[str, str],
) -> None:
    media = make_media()
    token = token_for(media)
    for path, query in (
        ("/api/media/" + media_id.replace("/", "%2F").replace("?", "%3F").replace("#", "%23"), {}),
        ("/api/stream", {"media": media_id, "after": cursor}),
    ):
        answer = live.get(path, query_string={**extra, **query, "token": token}, buffered=False)
        try:
            assert answer.status_code < 500, (path, answer.status_code)
            if answer.status_code != 200:
                assert answer.is_json and answer.json["error"] and answer.json["message"]
        finally:
            answer.close()
