"""The console's routes (a blueprint under /console/), server-rendered from the ledger.

    GET  /console/                      overview; refreshes its panel (?part=panel)
    GET  /console/events                webhooks newest first, each with its runs
    GET  /console/events/<id>           one webhook: raw body, what we read, its runs
                                        (?part=runs: the runs alone, for its refresh)
    POST /console/runs/<id>/replay      a failed or skipped run back in line
    GET  /console/dead-letters          failed runs, filtered
    GET  /console/dead-letters/replay   how many runs "Replay all" would touch: confirm
    POST /console/dead-letters/replay   replay them
    GET  /console/media/<id>            a media's record and timeline

Off (404) unless CONSOLE_BASIC_AUTH is set; access.py checks credentials and CSRF.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import Engine
from werkzeug.wrappers import Response as BaseResponse

from pipeline.console import access, queries
from pipeline.console.charts import chart
from pipeline.console.filters import (
    MAX_ID,
    DeadLetterFilter,
    EventFilter,
    Page,
    query_string,
    row_id,
)
from pipeline.db import read_only
from pipeline.errors import NotFound
from pipeline.outbox import Publisher, replay
from pipeline.runs import REPLAYABLE
from pipeline.settings import Settings

HERE = Path(__file__).parent
REFRESH_SECONDS = 5
RUNS_REFRESH_SECONDS = 2  # an event's runs, while someone watches a replay
REPLAY_CHUNK = 500  # runs per replay transaction in a "Replay all"
SECURITY_HEADERS = {
    # Nothing but our own script and stylesheet runs or loads; no page frames ours.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NOTICES = {
    "replayed": "Run {run} is back in line.",
    "not_replayable": "Run {run} was not replayed: only failed or skipped runs are.",
    "replayed_all": "{count} run(s) are back in line.",
}

console = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    static_folder=HERE / "static",
    static_url_path="/static",
    template_folder=HERE / "templates",
)


@dataclass
class Console:
    settings: Settings
    engine: Engine  # the web's: replays write
    publisher: Publisher
    listeners: tuple[str, ...]

    @property
    def reader(self) -> Engine:
        return read_only(self.engine)


def init_app(
    app: Flask, settings: Settings, engine: Engine, publisher: Publisher, listeners: list[str]
) -> None:
    app.extensions["pipeline.console"] = Console(settings, engine, publisher, tuple(listeners))
    app.register_blueprint(console)


def _state() -> Console:
    state: Console = current_app.extensions["pipeline.console"]
    return state


@console.before_request
def _guard() -> None:
    secret = _state().settings.console_basic_auth
    if not secret:
        raise NotFound("the console is off: CONSOLE_BASIC_AUTH is not set")
    access.check_credentials(request, secret)
    if request.method == "POST":
        access.check_csrf(request, secret)


@console.after_request
def _headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = access.REALM
    return response


@console.app_template_global()
def csrf_token() -> str:
    return access.csrf_token(_state().settings.console_basic_auth)


@console.app_template_filter("when")
def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@console.app_template_filter("seconds")
def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.0f} min" if value < 7200 else f"{value / 3600:.1f} h"


def _notice() -> str | None:
    template = NOTICES.get(request.args.get("notice", ""))
    if template is None:
        return None
    return template.format(
        run=row_id(request.args, "run") or "?", count=row_id(request.args, "count") or 0
    )


@console.get("/")
def overview() -> str:
    state = _state()
    with state.reader.connect() as conn:
        seen = queries.overview(conn, state.listeners)
    seen.backlog = state.publisher.backlog()
    template = (
        "console/_panel.html" if request.args.get("part") == "panel" else "console/overview.html"
    )
    return render_template(
        template, o=seen, chart=chart(seen.minutes), refresh=REFRESH_SECONDS, page="overview"
    )


@console.get("/events")
def events() -> str:
    chosen = EventFilter.read(request.args)
    page = Page.read(request.args)
    with _state().reader.connect() as conn:
        listing = queries.events(conn, chosen, page)
    return render_template(
        "console/events.html",
        listing=listing,
        chosen=chosen,
        params=chosen.params(),
        query_string=query_string,
        page="events",
    )


@console.get("/events/<int:event_id>")
def event(event_id: int) -> str:
    with _state().reader.connect() as conn:
        detail = queries.event(conn, event_id)
    if detail is None:
        raise NotFound(f"no event {event_id}")
    part = request.args.get("part") == "runs"
    return render_template(
        "console/_event_runs.html" if part else "console/event.html",
        d=detail,
        replayable=REPLAYABLE,
        notice=_notice(),
        refresh=RUNS_REFRESH_SECONDS,
        page="events",
    )


@console.post("/runs/<int:run_id>/replay")
def replay_run(run_id: int) -> BaseResponse:
    state = _state()
    event_id = row_id(request.form, "event_id")
    done = (
        replay(state.engine, state.publisher, state.settings.redeliver_after, run_ids=[run_id])
        if run_id <= MAX_ID
        else []
    )
    notice = "replayed" if done else "not_replayable"
    if event_id is None:
        return redirect(url_for("console.dead_letters", notice=notice, run=run_id), code=303)
    return redirect(
        url_for("console.event", event_id=event_id, notice=notice, run=run_id), code=303
    )


@console.get("/dead-letters")
def dead_letters() -> str:
    state = _state()
    chosen = DeadLetterFilter.read(request.args, state.listeners)
    page = Page.read(request.args)
    with state.reader.connect() as conn:
        listing = queries.dead_letters(conn, chosen, page)
    return render_template(
        "console/dead_letters.html",
        listing=listing,
        chosen=chosen,
        params=chosen.params(),
        listeners=state.listeners,
        query_string=query_string,
        notice=_notice(),
        page="dead-letters",
    )


@console.get("/dead-letters/replay")
def confirm_replay_all() -> str:
    state = _state()
    chosen = DeadLetterFilter.read(request.args, state.listeners)
    with state.reader.connect() as conn:
        count, upto = queries.dead_letter_count(conn, chosen)
    return render_template(
        "console/confirm.html",
        count=count,
        upto=upto,
        chosen=chosen,
        params=chosen.params(),
        query_string=query_string,
        page="dead-letters",
    )


@console.post("/dead-letters/replay")
def replay_all() -> BaseResponse:
    state = _state()
    chosen = DeadLetterFilter.read(request.form, state.listeners)
    upto = row_id(request.form, "upto") or 0
    with state.reader.connect() as conn:
        ids = queries.dead_letter_ids(conn, chosen, upto)
    replayed = 0
    for first in range(0, len(ids), REPLAY_CHUNK):
        chunk = ids[first : first + REPLAY_CHUNK]
        replayed += len(
            replay(state.engine, state.publisher, state.settings.redeliver_after, run_ids=chunk)
        )
    params: dict[str, Any] = {**chosen.params(), "notice": "replayed_all", "count": replayed}
    target = url_for("console.dead_letters", **params)
    return redirect(target, code=303)


@console.get("/media/<int:media_id>")
def media(media_id: int) -> str:
    with _state().reader.connect() as conn:
        timeline = queries.media(conn, media_id)
    if timeline is None:
        raise NotFound(f"no media {media_id}")
    return render_template("console/media.html", t=timeline, items=_timeline(timeline), page="")


def _timeline(timeline: queries.Timeline) -> list[dict[str, Any]]:
    """The media's story in time order: each delivery of its jobs, then its notifications."""
    record = timeline.media
    items: list[dict[str, Any]] = []
    for row in timeline.events:
        job = "thumbnail job" if row.task_id and row.task_id == record.thumbnail_task_id else "job"
        items.append({"at": row.received_at, "kind": "webhook", "job": job, "event": row})
    for note in timeline.notifications:
        items.append({"at": note.created_at, "kind": "notification", "note": note})
    return sorted(items, key=lambda item: item["at"])
