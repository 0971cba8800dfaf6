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

Off (404) unless CONSOLE_BASIC_AUTH is set: blueprint.py holds the guard, the headers and
the filters every page shares.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, redirect, render_template, request, url_for
from sqlalchemy import Engine
from werkzeug.wrappers import Response as BaseResponse

from pipeline.console import queries
from pipeline.console.blueprint import Console, console, current
from pipeline.console.charts import chart
from pipeline.console.filters import (
    MAX_ID,
    DeadLetterFilter,
    EventFilter,
    Page,
    query_string,
    row_id,
)
from pipeline.errors import NotFound
from pipeline.outbox import Publisher, replay
from pipeline.runs import REPLAYABLE
from pipeline.settings import Settings

REFRESH_SECONDS = 5
RUNS_REFRESH_SECONDS = 2  # an event's runs, while someone watches a replay
REPLAY_CHUNK = 500  # runs per replay transaction in a "Replay all"
NOTICES = {
    "replayed": "Run {run} is back in line.",
    "not_replayable": "Run {run} was not replayed: only failed or skipped runs are.",
    "replayed_all": "{count} run(s) are back in line.",
}


def init_app(
    app: Flask, settings: Settings, engine: Engine, publisher: Publisher, listeners: list[str]
) -> None:
    app.extensions["pipeline.console"] = Console(settings, engine, publisher, tuple(listeners))
    app.register_blueprint(console)


def _notice() -> str | None:
    template = NOTICES.get(request.args.get("notice", ""))
    if template is None:
        return None
    return template.format(
        run=row_id(request.args, "run") or "?", count=row_id(request.args, "count") or 0
    )


@console.get("/")
def overview() -> str:
    state = current()
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
    with current().reader.connect() as conn:
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
    with current().reader.connect() as conn:
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
    state = current()
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
    state = current()
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
    state = current()
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
    state = current()
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
    with current().reader.connect() as conn:
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
