"""What integration tests do to a running stack: sign and send deliveries, build payloads in
each of Ittybit's shapes, insert rows, and poll the database until the work is done."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from pipeline.dev.procs import wait_for as wait_for  # the one poll loop
from pipeline.models import ListenerRun, Media, Notification, User, WebhookEvent
from pipeline.signing import SIGNATURE_HEADER, sign

T = TypeVar("T")
FINISHED = frozenset({"succeeded", "failed", "skipped"})
OUTPUT: dict[str, Any] = {
    "url": "https://cdn.ittybit.test/clippable/export.mp4",
    "format": "mp4",
    "width": 1920,
    "height": 1080,
    "duration": 124.5,
    "size": 48230912,
}


def send(url: str, body: bytes, secret: str | None, timeout: float = 10.0) -> requests.Response:
    """POST `body` as Ittybit does, signed with `secret` (unsigned when None)."""
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    return requests.post(url, data=body, headers=headers, timeout=timeout)


def timed_send(
    url: str, body: bytes, secret: str | None, timeout: float = 10.0
) -> tuple[requests.Response, float]:
    """`send`, and how many seconds the answer took."""
    started = time.monotonic()
    answer = send(url, body, secret, timeout)
    return answer, time.monotonic() - started


def new_task_id() -> str:
    return f"task_{secrets.token_hex(8)}"


def delivery(
    shape: str,
    task_id: str,
    *,
    status: str = "succeeded",
    kind: str = "video",
    metadata: dict[str, Any] | None = None,
    error: str | None = None,
    output: dict[str, Any] | None = None,
) -> bytes:
    """A webhook body in shape A (legacy task), B (guide payload) or C (event envelope)."""
    now = datetime.now(UTC)
    out = dict(OUTPUT if output is None else output) if status == "succeeded" else None
    task: dict[str, Any] = {"id": task_id, "kind": kind, "metadata": metadata or {}}
    if error is not None:
        task["error"] = error
    if shape == "A":
        task.update(
            object="task",
            status="completed" if status == "succeeded" else status,
            results={},
            project_id="proj_it",
            created=now.isoformat(),
            completed=now.isoformat(),
            output=out,
        )
        return json.dumps(task).encode()
    millis = int(now.timestamp() * 1000)
    task.update(status=status, created_at=millis, completed_at=millis)
    if shape == "B":
        task.update(input="https://clippable.test/projects/edit.mov", output=out)
        return json.dumps(task).encode()
    task.update(outputs=[out] if out else [])
    envelope = {
        "id": f"evt_{secrets.token_hex(8)}",
        "object": "event",
        "kind": f"task.{status}",
        "data": task,
        "created_at": int(now.timestamp()),
    }
    return json.dumps(envelope).encode()


def make_user(engine: Engine, email: str | None = None) -> int:
    with Session(engine) as session, session.begin():
        user = User(email=email or f"it-{secrets.token_hex(6)}@example.test")
        session.add(user)
        session.flush()
        return user.id


def make_media(engine: Engine, *, task_id: str, user_id: int | None, kind: str = "video") -> int:
    with Session(engine) as session, session.begin():
        media = Media(
            user_id=user_id,
            task_id=task_id,
            kind=kind,
            input_url="https://clippable.test/projects/edit.mov",
            status="queued",
        )
        session.add(media)
        session.flush()
        return media.id


def get_media(engine: Engine, media_id: int) -> Media:
    with Session(engine) as session:
        return session.get_one(Media, media_id)


def notifications(engine: Engine, media_id: int) -> list[Notification]:
    with Session(engine) as session:
        query = select(Notification).where(Notification.media_id == media_id)
        return list(session.scalars(query))


def events_for(engine: Engine, task_id: str) -> list[WebhookEvent]:
    with Session(engine) as session:
        query = select(WebhookEvent).where(WebhookEvent.task_id == task_id)
        return list(session.scalars(query.order_by(WebhookEvent.id)))


def runs_for(engine: Engine, task_id: str) -> list[ListenerRun]:
    """Every listener run of every event about `task_id`."""
    with Session(engine) as session:
        query = (
            select(ListenerRun)
            .join(WebhookEvent)
            .where(WebhookEvent.task_id == task_id)
            .order_by(ListenerRun.id)
        )
        return list(session.scalars(query))


def finished_runs(engine: Engine, task_id: str) -> Callable[[], dict[str, ListenerRun]]:
    """A predicate: the runs about `task_id` by listener, once there are some and all ended."""

    def check() -> dict[str, ListenerRun]:
        runs = runs_for(engine, task_id)
        if not runs or any(run.state not in FINISHED for run in runs):
            return {}
        return {run.listener: run for run in runs}

    return check


# --- the emulator playing Ittybit ----------------------------------------------------------


def emulator(base_url: str, path: str, method: str = "GET", body: Any = None) -> Any:
    """Call one of the emulator's `/_emulator/...` control endpoints; its JSON answer."""
    response = requests.request(method, f"{base_url}/_emulator/{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def jobs_requested(base_url: str, media_id: int, kind: str) -> list[dict[str, Any]]:
    """Every `POST /jobs` for a `kind` job the emulator received about media `media_id`."""
    return [
        call
        for call in emulator(base_url, "requests")
        if call["method"] == "POST"
        and call["path"] == "/jobs"
        and isinstance(call["json"], dict)
        and call["json"].get("kind") == kind
        and (call["json"].get("metadata") or {}).get("media_id") == media_id
    ]


def emulated_job(base_url: str, job_id: str) -> dict[str, Any]:
    """The job as the emulator holds it now."""
    return next(job for job in emulator(base_url, "jobs") if job["id"] == job_id)
