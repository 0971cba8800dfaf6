"""Reconciliation: ask Ittybit about jobs whose webhook never came.

A media whose job (or thumbnail job) is not finished RECONCILE_AFTER seconds after the
media last changed, with no terminal delivery of that job stored, is looked up with
`GET /jobs/{id}`. When Ittybit says the job ended, its answer goes through the same inbox
as a webhook, with the delivery key that webhook would have (`<job id>:<status>`): a
real webhook arriving later is a duplicate, and a reconciliation after the webhook finds
nothing to do. The stored body says `"reconciled": true`. A job still running is left
alone; Ittybit unreachable or erring invents nothing, and the next pass asks again.

Media changed longer ago than RETAIN_SUCCEEDED_DAYS are not looked at: their deliveries
may have been pruned, and asking again would replay them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine, exists, select, union_all

from pipeline.app.ittybit import IttybitClient
from pipeline.app.media import Role
from pipeline.db import read_only
from pipeline.inbox import receive
from pipeline.models import Media, WebhookEvent, utcnow
from pipeline.outbox import Publisher
from pipeline.registry import Registry
from pipeline.settings import Settings

log = logging.getLogger(__name__)

TERMINAL = ("succeeded", "failed", "cancelled")
# update_media_record's statuses once a job has ended (pipeline/app's contract).
MEDIA_DONE = ("completed", "failed", "cancelled")
LIMIT = 200  # jobs asked about per pass


@dataclass(frozen=True)
class Stale:
    media_id: int
    job_id: str
    role: Role


@dataclass
class Report:
    asked: list[tuple[Stale, str]] = field(default_factory=list)  # (job, what happened)

    def count(self, outcome: str) -> int:
        return sum(1 for _, said in self.asked if said.startswith(outcome))


def _no_terminal_delivery(job_id: object) -> object:
    return ~exists().where(WebhookEvent.task_id == job_id, WebhookEvent.status.in_(TERMINAL))


def stale_jobs(engine: Engine, settings: Settings, limit: int = LIMIT) -> list[Stale]:
    """The jobs to ask Ittybit about now, oldest first."""
    now = utcnow()
    quiet = Media.updated_at < now - timedelta(seconds=settings.reconcile_after)
    recent = Media.updated_at > now - timedelta(days=settings.retain_succeeded_days)
    main = select(Media.id, Media.task_id.label("job"), Media.updated_at).where(
        Media.task_id.is_not(None),
        Media.status.not_in(MEDIA_DONE),
        quiet,
        recent,
        _no_terminal_delivery(Media.task_id),  # type: ignore[arg-type]
    )
    thumbnail = select(Media.id, Media.thumbnail_task_id.label("job"), Media.updated_at).where(
        Media.thumbnail_task_id.is_not(None),
        Media.thumbnail_url.is_(None),
        quiet,
        recent,
        _no_terminal_delivery(Media.thumbnail_task_id),  # type: ignore[arg-type]
    )
    both = union_all(main, thumbnail).subquery()
    query = select(both.c.id, both.c.job).order_by(both.c.updated_at).limit(limit)
    with read_only(engine).connect() as conn:
        rows = conn.execute(query).all()
        thumbnails = {
            row.thumbnail_task_id
            for row in conn.execute(
                select(Media.thumbnail_task_id).where(
                    Media.id.in_([r.id for r in rows]), Media.thumbnail_task_id.is_not(None)
                )
            )
        }
    return [Stale(r.id, r.job, Role.THUMBNAIL if r.job in thumbnails else Role.MAIN) for r in rows]


def reconcile(
    engine: Engine,
    registry: Registry,
    publisher: Publisher,
    ittybit: IttybitClient,
    settings: Settings,
    *,
    dry_run: bool = False,
) -> Report:
    """One pass: ask about every stale job, feed the ended ones through the inbox."""
    report = Report()
    for stale in stale_jobs(engine, settings):
        try:
            job = ittybit.get_job(stale.job_id)
        except Exception as exc:  # Ittybit down or erring: nothing invented, ask next pass
            report.asked.append((stale, f"unreachable ({type(exc).__name__}); asking again later"))
            continue
        status = job.get("status")
        if status not in TERMINAL:
            report.asked.append((stale, f"still {status}"))
            continue
        if dry_run:
            report.asked.append((stale, f"would feed its {status} outcome"))
            continue
        receipt = receive(engine, registry, _as_delivery(job), settings.redeliver_after)
        if receipt.duplicate:
            report.asked.append((stale, "duplicate: its webhook came meanwhile"))
            continue
        publisher.publish(receipt.to_publish)
        log.info(
            "reconciled job %s (media %s, %s): %s, stored as event %s",
            stale.job_id,
            stale.media_id,
            stale.role,
            status,
            receipt.event_id,
        )
        report.asked.append((stale, f"fed its {status} outcome as event {receipt.event_id}"))
    return report


def _as_delivery(job: dict[str, object]) -> bytes:
    """Ittybit's answer as the webhook it stands for (shape B: the job itself)."""
    body = {key: value for key, value in job.items() if key not in ("webhook_url", "object")}
    if job.get("status") != "failed":
        body.pop("error", None)
    body["reconciled"] = True
    return json.dumps(body, separators=(",", ":")).encode()
