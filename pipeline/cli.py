"""The `pipeline` command: migrations, inspection, submission, relay and replay."""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from pipeline.errors import PipelineError
from pipeline.ittybit import IttybitClient
from pipeline.migrate import upgrade
from pipeline.models import ListenerRun, Media, User, WebhookEvent
from pipeline.relay import relay_once
from pipeline.relay import replay as replay_runs
from pipeline.runtime import Runtime

console = Console()


class PipelineGroup(click.Group):
    """Turns our own errors into one clear line and exit status 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PipelineError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(2)


@click.group(cls=PipelineGroup)
@click.pass_context
def main(ctx: click.Context) -> None:
    """ittybit-pipeline: Ittybit webhooks in, one retried Celery task per listener out."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    ctx.obj = Runtime.from_env()


pass_runtime = click.make_pass_decorator(Runtime)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_runtime
def db_upgrade(runtime: Runtime) -> None:
    """Apply every migration (creates the tables on a new database)."""
    upgrade(runtime.settings.database_url)
    click.echo("database is up to date")


@main.command()
@pass_runtime
def listeners(runtime: Runtime) -> None:
    """What is registered: name, task, the events it wants, its retry policy."""
    table = Table("listener", "task", "wants", "retry policy", "module")
    for listener in runtime.registry:
        table.add_row(
            listener.name,
            listener.task_name,
            listener.describe_wants(),
            str(listener.retry),
            type(listener).__module__,
        )
    console.print(table)


@main.command()
@click.option("--limit", default=20, show_default=True)
@click.option("--task", "task_id", help="only events about this Ittybit task")
@pass_runtime
def events(runtime: Runtime, limit: int, task_id: str | None) -> None:
    """Recent webhook deliveries, newest first, with their runs' states."""
    query = select(WebhookEvent).order_by(WebhookEvent.id.desc()).limit(limit)
    if task_id:
        query = query.where(WebhookEvent.task_id == task_id)
    table = Table("id", "received", "delivery key", "task", "status", "kind", "runs / error")
    with runtime.runner.sessions() as session:
        for ev in session.scalars(query):
            runs = ", ".join(f"{r.listener}:{r.state}" for r in ev.runs)
            table.add_row(
                str(ev.id),
                _when(ev.received_at),
                ev.delivery_key,
                ev.task_id or "",
                ev.status or "",
                ev.kind or "",
                ev.parse_error or runs,
            )
    console.print(table)


@main.command()
@click.option(
    "--state",
    type=click.Choice(["pending", "running", "retrying", "succeeded", "failed", "skipped"]),
)
@click.option("--listener", help="only this listener's runs")
@click.option("--limit", default=50, show_default=True)
@pass_runtime
def runs(runtime: Runtime, state: str | None, listener: str | None, limit: int) -> None:
    """Listener runs, newest first; `--state failed` is the dead-letter list."""
    query = select(ListenerRun).order_by(ListenerRun.id.desc()).limit(limit)
    if state:
        query = query.where(ListenerRun.state == state)
    if listener:
        query = query.where(ListenerRun.listener == listener)
    table = Table("run", "event", "listener", "state", "attempts", "updated", "last error / result")
    with runtime.runner.sessions() as session:
        for run in session.scalars(query):
            detail = (run.last_error or "").strip().splitlines()[-1:] or [str(run.result or "")]
            table.add_row(
                str(run.id),
                str(run.event_id),
                run.listener,
                run.state,
                str(run.attempts),
                _when(run.updated_at),
                detail[0][:160],
            )
    console.print(table)


@main.command()
@click.argument("input_url")
@click.option(
    "--kind",
    default="video",
    show_default=True,
    type=click.Choice(["video", "audio", "image", "animation", "adaptive_video"]),
)
@click.option("--user", "email", required=True, help="owner's email (created if new)")
@click.option(
    "--option", "options", multiple=True, metavar="KEY=VALUE", help="job option, repeatable"
)
@pass_runtime
def submit(
    runtime: Runtime, input_url: str, kind: str, email: str, options: tuple[str, ...]
) -> None:
    """Create a media row and its Ittybit job, delivering to our webhook."""
    job_options = dict(_parse_option(o) for o in options)
    webhook_url = runtime.settings.webhook_url
    client = IttybitClient.from_settings(runtime.settings)
    with runtime.runner.sessions.begin() as session:
        user = session.scalar(select(User).where(User.email == email)) or User(email=email)
        media = Media(owner=user, kind=kind, input_url=input_url, status="submitting")
        session.add(media)
        session.flush()
        media_id = media.id
    try:
        job = client.create_job(
            input=input_url,
            kind=kind,
            options=job_options,
            webhook_url=webhook_url,
            metadata={"media_id": media_id},
            idempotency_key=f"submit-media-{media_id}",
        )
    except PipelineError as exc:
        with runtime.runner.sessions.begin() as session:
            failed = session.get_one(Media, media_id)
            failed.status, failed.error = "failed", f"submit failed: {exc.message}"
        raise
    with runtime.runner.sessions.begin() as session:
        media = session.get_one(Media, media_id)
        media.task_id = str(job["id"])
        if media.status == "submitting":  # the webhook may already have landed
            media.status = "queued"
    click.echo(f"media {media_id} job {job['id']}")


@main.command()
@click.option("--once", is_flag=True, help="one pass, then exit")
@click.option("--interval", type=float, help="seconds between passes [RELAY_INTERVAL]")
@pass_runtime
def relay(runtime: Runtime, once: bool, interval: float | None) -> None:
    """Re-publish runs that are due (failed publishes, lost messages, dead workers)."""
    pause = interval if interval is not None else runtime.settings.relay_interval
    while True:
        published = relay_once(runtime.engine, runtime.celery, runtime.settings.redeliver_after)
        if published or once:
            click.echo(f"relay: published {published} run(s)")
        if once:
            return
        time.sleep(pause)


@main.command()
@click.argument("run_ids", nargs=-1, type=int)
@click.option(
    "--failed", "all_failed", is_flag=True, help="every failed run (narrow with the options below)"
)
@click.option("--listener", help="only this listener's runs")
@click.option("--since", type=click.DateTime(), help="only runs that ended after this (UTC)")
@pass_runtime
def replay(
    runtime: Runtime,
    run_ids: tuple[int, ...],
    all_failed: bool,
    listener: str | None,
    since: datetime | None,
) -> None:
    """Re-queue failed (or skipped) runs; other listeners of the event are not re-run."""
    if not run_ids and not all_failed:
        raise click.UsageError("name RUN_IDs or pass --failed")
    replayed = replay_runs(
        runtime.engine,
        runtime.celery,
        runtime.settings.redeliver_after,
        run_ids=run_ids,
        listener=listener,
        since=since.replace(tzinfo=UTC) if since else None,
        all_failed=all_failed,
    )
    click.echo(f"replayed {len(replayed)} run(s): {' '.join(map(str, replayed)) or '-'}")


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="--option")
    for convert in (int, float):
        try:
            return key, convert(value)
        except ValueError:
            pass
    return key, value


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""
