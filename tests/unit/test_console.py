"""The console, in process: off without CONSOLE_BASIC_AUTH, 401 without its credentials,
a CSRF token on every change; the overview's numbers, search and pages of events with
their runs rolled up, the detail's raw body, replay of one run and of a confirmed filter,
a media's timeline; stored values escaped and hostile query strings answered 4xx."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from pipeline.console import access
from pipeline.errors import ConfigError
from pipeline.inbox import receive
from pipeline.models import (
    ListenerRun,
    Media,
    Notification,
    RunState,
    WebhookEvent,
    WebhookMinute,
    utcnow,
)
from pipeline.registry import discover
from pipeline.settings import Settings
from pipeline.web import create_app

from .support import API_KEY, SECRET

CREDENTIALS = "operator:console-unit-password"
AUTH = {"Authorization": "Basic " + base64.b64encode(CREDENTIALS.encode()).decode()}
HOSTILE = '<script>alert("x")</script>\'"; DROP TABLE webhook_events; --'


@pytest.fixture
def console_app(settings: Settings) -> Iterator[Flask]:
    app = create_app(dataclasses.replace(settings, console_basic_auth=CREDENTIALS))
    yield app
    app.extensions["pipeline"].engine.dispose()


@pytest.fixture
def console(console_app: Flask) -> FlaskClient:
    return console_app.test_client()


@pytest.fixture
def webhook(engine: Engine) -> Callable[..., int]:
    """Store a delivery as the endpoint would; its event id."""
    registry = discover()
    counter = iter(range(1, 1_000_000))

    def store(task_id: str | None = None, status: str = "succeeded", **extra: Any) -> int:
        n = next(counter)
        body = {"id": task_id or f"task_console_{n}", "status": status, "kind": "video"}
        body |= {"created_at": 1775212200000 + n, "metadata": {}} | extra
        receipt = receive(engine, registry, json.dumps(body).encode(), 60.0)
        assert receipt.event_id is not None
        return receipt.event_id

    return store


def get(client: FlaskClient, url: str, **kwargs: Any) -> TestResponse:
    return client.get(url, headers=AUTH, **kwargs)


def page_text(response: TestResponse) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def set_state(engine: Engine, event_id: int, state: RunState, error: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(ListenerRun)
            .where(ListenerRun.event_id == event_id)
            .values(state=state, last_error=error, finished_at=utcnow(), attempts=3)
        )


# --- access -------------------------------------------------------------------------------------


def test_the_console_is_not_there_while_console_basic_auth_is_unset(client: FlaskClient) -> None:
    response = client.get("/console/", headers=AUTH)
    assert response.status_code == 404
    assert response.json is not None and response.json["error"] == "not_found"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Basic " + base64.b64encode(b"operator:wrong").decode(),
        "Basic not-base64!!",
        "Bearer " + CREDENTIALS,
    ],
    ids=["none", "wrong password", "garbled", "another scheme"],
)
def test_wrong_or_missing_credentials_get_a_401_asking_for_basic_auth(
    console: FlaskClient, header: str | None
) -> None:
    response = console.get("/console/events", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert response.json is not None and response.json["error"] == "unauthorized"


def test_a_bad_console_basic_auth_stops_start_up_naming_it() -> None:
    for value in ("nocolon", ":password", "user:"):
        with pytest.raises(ConfigError, match="CONSOLE_BASIC_AUTH must be user:password"):
            Settings.from_env({"CONSOLE_BASIC_AUTH": value})
    assert Settings.from_env({"CONSOLE_BASIC_AUTH": "a:b:c"}).console_basic_auth == "a:b:c"
    assert "a:b:c" not in repr(Settings.from_env({"CONSOLE_BASIC_AUTH": "a:b:c"}))


def test_pages_forbid_framing_and_foreign_scripts(console: FlaskClient) -> None:
    response = get(console, "/console/")
    assert response.status_code == 200
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"


def test_no_page_shows_a_secret(
    console: FlaskClient, webhook: Callable[..., int], make_media: Callable[..., Media]
) -> None:
    media = make_media()
    event_id = webhook(media.task_id)
    for url in (
        "/console/",
        "/console/events",
        f"/console/events/{event_id}",
        "/console/dead-letters",
        f"/console/media/{media.id}",
    ):
        html = page_text(get(console, url))
        for secret in (SECRET, API_KEY, CREDENTIALS, "console-unit-password"):
            assert secret not in html, (url, secret)


# --- overview -----------------------------------------------------------------------------------


def test_the_overview_counts_runs_by_listener_and_state_and_charts_webhooks(
    console: FlaskClient, webhook: Callable[..., int], engine: Engine
) -> None:
    done, failed = webhook(), webhook()
    webhook()  # pending
    set_state(engine, done, RunState.SUCCEEDED)
    set_state(engine, failed, RunState.FAILED, "boom")
    minute = utcnow().replace(second=0, microsecond=0)
    with engine.begin() as conn:
        conn.execute(
            WebhookMinute.__table__.insert(),
            [
                {"minute": minute, "outcome": "accepted", "count": 7},
                {
                    "minute": minute - timedelta(minutes=3),
                    "outcome": "rejected_signature",
                    "count": 2,
                },
                {"minute": minute - timedelta(hours=2), "outcome": "accepted", "count": 1000},
            ],
        )
    html = page_text(get(console, "/console/"))
    row = re.search(r"<th scope=\"row\">update_media_record</th>(.*?)</tr>", html, re.S)
    assert row is not None
    cells = [
        re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", row.group(1), re.S)
    ]
    assert cells == ["1", "0", "0", "1", "1", "0"]  # pending running retrying failed succ skip
    assert "accepted: 7" in html and "rejected signature: 2" in html  # the hour only
    assert html.count("<rect ") == 2
    assert 'data-refresh="/console/?part=panel"' in html
    panel = page_text(get(console, "/console/?part=panel"))
    assert panel.startswith('<div id="panel">') and "<html" not in panel


# --- events -------------------------------------------------------------------------------------


def test_events_are_found_by_task_id_delivery_key_event_id_and_media_id(
    console: FlaskClient,
    webhook: Callable[..., int],
    make_media: Callable[..., Media],
    session: Session,
) -> None:
    media = make_media(task_id="task_wanted")
    wanted = webhook("task_wanted")
    others = [webhook() for _ in range(3)]
    key = session.scalar(select(WebhookEvent.delivery_key).where(WebhookEvent.id == others[0]))
    assert key is not None

    def found(query: str) -> list[int]:
        html = page_text(get(console, "/console/events", query_string={"q": query}))
        return [int(n) for n in re.findall(r'href="/console/events/(\d+)"', html)]

    assert found("task_wanted") == [wanted]
    assert found(key) == [others[0]]
    assert found(str(others[1])) == [others[1]]
    assert wanted in found(str(media.id))
    assert found("task_nobody") == []
    assert found(HOSTILE) == []


def test_events_come_newest_first_in_pages_with_links_both_ways(
    console: FlaskClient, webhook: Callable[..., int]
) -> None:
    ids = [webhook() for _ in range(120)]

    def page(url: str) -> tuple[list[int], str]:
        html = page_text(get(console, url))
        return [int(n) for n in re.findall(r'href="/console/events/(\d+)"', html)], html

    first, html = page("/console/events")
    assert first == ids[::-1][:50]
    assert "← Newer" not in html
    older = re.search(r'href="(/console/events\?before=\d+)">Older', html)
    assert older
    second, html = page(older.group(1))
    assert second == ids[::-1][50:100]
    third, html = page(re.search(r'href="(/console/events\?before=\d+)">Older', html).group(1))  # type: ignore[union-attr]
    assert third == ids[::-1][100:] and "Older →" not in html
    back = re.search(r'href="(/console/events\?after=\d+)">← Newer', html)
    assert back
    assert page(back.group(1).replace("&amp;", "&"))[0] == second


def test_events_filter_by_status_and_time_and_roll_their_runs_up(
    console: FlaskClient, webhook: Callable[..., int], engine: Engine
) -> None:
    done, failed, flying = webhook(), webhook(status="failed"), webhook()
    set_state(engine, done, RunState.SUCCEEDED)
    set_state(engine, failed, RunState.FAILED, "boom")
    old = webhook()
    with engine.begin() as conn:
        conn.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == old)
            .values(received_at=utcnow() - timedelta(days=3))
        )
    html = page_text(get(console, "/console/events"))
    states = dict(
        re.findall(r'href="/console/events/(\d+)".*?class="rollup[^"]*">([^<]+)<', html, re.S)
    )
    assert states[str(done)] == "all done"
    assert states[str(failed)] == "some failed"
    assert states[str(flying)] == "in flight"
    assert "update_media_record: failed \u00d73" in html

    def found(**query: str) -> set[int]:
        text = page_text(get(console, "/console/events", query_string=query))
        return {int(n) for n in re.findall(r'href="/console/events/(\d+)"', text)}

    assert found(status="failed") == {failed}
    two_days_ago = (utcnow() - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    assert found(until=two_days_ago) == {old}
    assert found(since=two_days_ago) == {done, failed, flying}
    assert found(since=two_days_ago, status="failed") == {failed}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-45"}, "until"),
        ({"before": "abc"}, "before"),
        ({"before": "99999999999999999999999"}, "before"),
        ({"after": "-1"}, "after"),
        ({"status": HOSTILE}, "status"),
        ({"q": "x" * 600}, "q"),
        ({"q": "a\x00b"}, "q"),
    ],
)
def test_malformed_filters_get_a_400_naming_the_field(
    console: FlaskClient, query: dict[str, str], field: str
) -> None:
    response = get(console, "/console/events", query_string=query)
    assert response.status_code == 400
    assert response.json is not None and response.json["error"] == "bad_filter"
    assert response.json["message"].startswith(field)


def test_a_listener_that_does_not_exist_is_a_400_on_dead_letters(console: FlaskClient) -> None:
    response = get(console, "/console/dead-letters", query_string={"listener": HOSTILE})
    assert response.status_code == 400
    assert "update_media_record" in response.json["message"]  # type: ignore[index]


@pytest.mark.parametrize(
    "url",
    [
        "/console/events/99999999999999999999999",
        "/console/events/0",
        "/console/media/99999999999999999999",
        "/console/events/abc",
    ],
)
def test_ids_that_name_nothing_are_a_404(console: FlaskClient, url: str) -> None:
    assert get(console, url).status_code == 404


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(
        ["/console/events", "/console/dead-letters", "/console/dead-letters/replay"]
    ),
    query=st.dictionaries(
        st.sampled_from(["q", "status", "since", "until", "before", "after", "listener", "error"]),
        st.text(max_size=60),
        max_size=4,
    ),
)
def test_no_query_string_makes_a_500(
    console: FlaskClient, path: str, query: dict[str, str]
) -> None:
    response = get(console, path, query_string=query)
    assert response.status_code in (200, 400), response.get_data(as_text=True)[:300]


# --- detail, escaping -----------------------------------------------------------------------------


def test_the_detail_shows_the_raw_body_the_event_read_and_each_run(
    console: FlaskClient, webhook: Callable[..., int], engine: Engine
) -> None:
    event_id = webhook("task_detail", metadata={"file_name": HOSTILE})
    set_state(engine, event_id, RunState.FAILED, f"Traceback: {HOSTILE}")
    html = page_text(get(console, f"/console/events/{event_id}"))
    assert "task_detail" in html
    assert '"file_name": ' in html.replace("&#34;", '"')  # pretty JSON, escaped
    assert "<script>" not in html.replace(
        '<script src="/console/static/console.js" defer></script>', ""
    )
    assert "&lt;script&gt;alert(" in html
    assert html.count(">Replay</button>") == 3  # every failed run
    assert '"shape": "B"' in html.replace("&#34;", '"')  # the normalised Event


def test_an_unreadable_body_is_shown_as_it_came(console: FlaskClient, engine: Engine) -> None:
    receipt = receive(engine, discover(), b"<html>" + HOSTILE.encode() + b"\xff", 60.0)
    html = page_text(get(console, f"/console/events/{receipt.event_id}"))
    assert "unreadable" in html
    assert "&lt;html&gt;&lt;script&gt;" in html and "<html><script>" not in html


# --- replay -------------------------------------------------------------------------------------


def test_replay_needs_the_pages_csrf_token(
    console: FlaskClient, webhook: Callable[..., int], engine: Engine
) -> None:
    event_id = webhook()
    set_state(engine, event_id, RunState.FAILED, "boom")
    run_id = _run_ids(engine, event_id)[0]
    url = f"/console/runs/{run_id}/replay"
    assert console.post(url, headers=AUTH).status_code == 403
    assert console.post(url, headers=AUTH, data={"csrf_token": "1.forged"}).status_code == 403
    stale = access.csrf_token(CREDENTIALS, now=utcnow().timestamp() - 13 * 3600)
    assert console.post(url, headers=AUTH, data={"csrf_token": stale}).status_code == 403
    assert console.post(url, data={"csrf_token": access.csrf_token(CREDENTIALS)}).status_code == 401
    token = csrf(page_text(get(console, f"/console/events/{event_id}")))
    foreign = {**AUTH, "Origin": "https://evil.example"}
    assert console.post(url, headers=foreign, data={"csrf_token": token}).status_code == 403
    assert _states(engine, event_id) == {RunState.FAILED}

    response = console.post(url, headers=AUTH, data={"csrf_token": token, "event_id": event_id})
    assert response.status_code == 303
    assert response.headers["Location"].startswith(f"/console/events/{event_id}?notice=replayed")
    with engine.connect() as conn:
        state = conn.scalar(select(ListenerRun.state).where(ListenerRun.id == run_id))
    assert state == RunState.PENDING
    html = page_text(get(console, response.headers["Location"]))
    assert f"Run {run_id} is back in line." in html

    again = console.post(url, headers=AUTH, data={"csrf_token": token, "event_id": event_id})
    assert "notice=not_replayable" in again.headers["Location"]  # pending: nothing to do


def test_replay_all_confirms_the_count_and_touches_only_those_runs(
    console: FlaskClient, webhook: Callable[..., int], engine: Engine
) -> None:
    events = [webhook() for _ in range(4)]
    for event_id in events[:3]:
        set_state(engine, event_id, RunState.FAILED, "Ittybit said 503")
    set_state(engine, events[3], RunState.FAILED, "another error")
    filters = {"listener": "notify_user", "error": "ittybit SAID 503"}  # case: either
    html = page_text(get(console, "/console/dead-letters/replay", query_string=filters))
    assert "<strong>3</strong> failed run(s)" in html
    token = csrf(html)
    upto = re.search(r'name="upto" value="(\d+)"', html).group(1)  # type: ignore[union-attr]
    late = webhook()  # fails after the count: not part of what was confirmed
    set_state(engine, late, RunState.FAILED, "Ittybit said 503")

    response = console.post(
        "/console/dead-letters/replay",
        headers=AUTH,
        data={**filters, "upto": upto, "csrf_token": token},
    )
    assert response.status_code == 303 and "count=3" in response.headers["Location"]
    with engine.connect() as conn:
        pending = (
            conn.execute(select(ListenerRun.event_id).where(ListenerRun.state == RunState.PENDING))
            .scalars()
            .all()
        )
    assert sorted(pending) == events[:3]
    assert "3 run(s) are back in line." in page_text(get(console, response.headers["Location"]))
    assert (
        console.post("/console/dead-letters/replay", headers=AUTH, data=filters).status_code == 403
    )


# --- media --------------------------------------------------------------------------------------


def test_a_media_timeline_shows_its_jobs_deliveries_and_its_notification(
    console: FlaskClient,
    webhook: Callable[..., int],
    make_media: Callable[..., Media],
    session: Session,
) -> None:
    media = make_media(task_id="task_main", thumbnail_task_id="task_thumb")
    main, thumb = webhook("task_main"), webhook("task_thumb")
    webhook("task_unrelated")
    assert media.user_id is not None
    session.add(
        Notification(
            media_id=media.id,
            user_id=media.user_id,
            kind="ready",
            message=f"Your export is ready {HOSTILE}",
        )
    )
    session.commit()
    html = page_text(get(console, f"/console/media/{media.id}"))
    assert f"event {main}</a>" in html and f"event {thumb}</a>" in html
    assert "Webhook for its job" in html and "Webhook for its thumbnail job" in html
    assert "Notification (ready)" in html and "&lt;script&gt;" in html
    assert html.count("Webhook for its") == 2


def _run_ids(engine: Engine, event_id: int) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.scalars(
                select(ListenerRun.id)
                .where(ListenerRun.event_id == event_id)
                .order_by(ListenerRun.id)
            )
        )


def _states(engine: Engine, event_id: int) -> set[RunState]:
    with engine.connect() as conn:
        return set(conn.scalars(select(ListenerRun.state).where(ListenerRun.event_id == event_id)))


def test_counting_queries_stay_off_the_finished_bulk(engine: Engine) -> None:
    """The overview's counts use the (state, listener, finished_at) index, not a scan:
    the runs not finished, and those finished within the hour (by named listener)."""
    queries = [
        "WHERE state IN ('pending','running','retrying','failed')",
        "WHERE state IN ('succeeded','skipped') AND listener IN ('a','b') "
        "AND finished_at >= '2026-12-01'",
    ]
    with engine.connect() as conn:
        for where in queries:
            plan = conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT listener, state, count(*) FROM listener_runs "
                f"{where} GROUP BY listener, state"
            ).all()
            used = " ".join(str(row) for row in plan)
            assert "USING COVERING INDEX ix_listener_runs_state_listener_finished_at" in used
            if "finished_at" in where:  # straight to the hour's entries
                assert "(state=? AND listener=? AND finished_at>?)" in used
        assert conn.scalar(select(func.count()).select_from(ListenerRun)) == 0
