"""What the demo watches for and shows: each step of the cycle as a check on the
database, the repeated delivery, the progress display and the summary tables."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from rich.console import Group
from rich.table import Table
from sqlalchemy import Engine, func, select

from pipeline.models import ListenerRun, Media, Notification, RunState, WebhookEvent
from pipeline.runs import WAITING
from pipeline.signing import sign


@dataclass
class Step:
    """One line of the progress display: done when `check` first returns true."""

    label: str
    check: Callable[[], bool]
    done_at: float | None = None


def render(steps: list[Step], started: float) -> Table:
    table = Table("", "step", "at", box=None, show_header=False)
    for step in steps:
        mark = "[green]✔[/]" if step.done_at else "[yellow]…[/]"
        at = f"+{step.done_at - started:5.2f}s" if step.done_at else ""
        table.add_row(mark, step.label, at)
    return table


def summary(engine: Engine) -> Group:
    media = Table("media", "status", "task", "output", "thumbnail", "error", title="media")
    runs = Table("run", "event", "listener", "state", "attempts", title="listener runs")
    notes = Table("notification", "media", "message", title="notifications")
    with engine.connect() as conn:
        for m in conn.execute(select(Media).order_by(Media.id)):
            cells = (m.task_id, _short(m.output_url), _short(m.thumbnail_url), m.error)
            media.add_row(str(m.id), m.status, *(cell or "" for cell in cells))
        for r in conn.execute(select(ListenerRun).order_by(ListenerRun.id)):
            runs.add_row(str(r.id), str(r.event_id), r.listener, r.state, str(r.attempts))
        for n in conn.execute(select(Notification).order_by(Notification.id)):
            notes.add_row(str(n.id), str(n.media_id), n.message)
    return Group(media, runs, notes)


def _short(url: str | None) -> str:
    return "" if not url else url.rsplit("/", 1)[-1]


def story(engine: Engine, ok_id: int, bad_id: int) -> tuple[list[Step], Step]:
    """The steps of the cycle to watch for, and the one after which a delivery is repeated."""

    def media(media_id: int) -> Any:
        with engine.connect() as conn:
            return conn.execute(select(Media).where(Media.id == media_id)).one()

    def count(model: Any, *where: Any) -> int:
        with engine.connect() as conn:
            query = select(func.count()).select_from(model).where(*where)
            return int(conn.execute(query).scalar_one())

    unfinished = ListenerRun.state.in_((*WAITING, RunState.RUNNING))
    first = Step(
        f"media {ok_id}: webhook 'succeeded' → media completed with output",
        lambda: media(ok_id).status == "completed",
    )
    return (
        [
            Step(
                f"media {ok_id}: job submitted to Ittybit (emulator)",
                lambda: bool(media(ok_id).task_id),
            ),
            first,
            Step(
                f"media {ok_id}: one thumbnail job created",
                lambda: bool(media(ok_id).thumbnail_task_id),
            ),
            Step(
                f"media {ok_id}: thumbnail webhook → thumbnail_url stored",
                lambda: media(ok_id).thumbnail_url is not None,
            ),
            Step(
                f"media {ok_id}: user notified once",
                lambda: count(Notification, Notification.media_id == ok_id) == 1,
            ),
            Step(
                f"media {bad_id}: webhook 'failed' → media failed with the error",
                lambda: media(bad_id).status == "failed",
            ),
            Step(
                "every listener run finished",
                lambda: count(ListenerRun, unfinished) == 0 and count(WebhookEvent) >= 3,
            ),
        ],
        first,
    )


def resend_first(engine: Engine, web_url: str, secret: str, media_id: int) -> bool:
    """Send the stored body of the media's first delivery again, as Ittybit's retry would."""
    with engine.connect() as conn:
        task_id = conn.execute(select(Media.task_id).where(Media.id == media_id)).scalar()
        body = conn.execute(
            select(WebhookEvent.raw_body)
            .where(WebhookEvent.task_id == task_id)
            .order_by(WebhookEvent.id)
        ).scalar()
    if body is None:
        return False
    answer = requests.post(
        f"{web_url}/webhooks/ittybit",
        data=body,
        headers={"Ittybit-Signature": sign(body, secret)},
        timeout=5,
    )
    return answer.status_code == 200 and answer.json().get("status") == "duplicate"
