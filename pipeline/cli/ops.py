"""`pipeline` commands for operating a deployment: migrations, what is registered, the
ledger (events, runs), replaying dead letters, the relay, retention, and live tokens."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import selectinload

from pipeline.cli import upkeep
from pipeline.cli.output import json_option, show
from pipeline.errors import DatabaseUnavailable
from pipeline.live import tokens
from pipeline.migrate import upgrade
from pipeline.models import ListenerRun, RunState, WebhookEvent
from pipeline.outbox import relay_once, replay, run_forever
from pipeline.runtime import Runtime

log = logging.getLogger(__name__)
pass_runtime = click.make_pass_decorator(Runtime)


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_runtime
def db_upgrade(runtime: Runtime) -> None:
    """Apply every migration (creates the tables on a new database)."""
    upgrade(runtime.settings.database_url)
    click.echo("database is up to date")


@click.command()
@json_option
@pass_runtime
def listeners(runtime: Runtime, as_json: bool) -> None:
    """What is registered: name, task, the events it wants, its retry policy."""
    rows = [
        {
            "listener": listener.name,
            "task": listener.task_name,
            "wants": listener.describe_wants(),
            "retry policy": str(listener.retry),
            "requires": " ".join(listener.requires),
            "module": type(listener).__module__,
        }
        for listener in runtime.registry
    ]
    show(["listener", "task", "wants", "retry policy", "requires", "module"], rows, as_json=as_json)


@click.command()
@click.option("--limit", default=20, show_default=True)
@click.option("--task", "task_id", help="only events about this Ittybit task")
@json_option
@pass_runtime
def events(runtime: Runtime, limit: int, task_id: str | None, as_json: bool) -> None:
    """Recent webhook deliveries, newest first, with their runs' states."""
    query = (
        select(WebhookEvent)
        .options(selectinload(WebhookEvent.runs))
        .order_by(WebhookEvent.id.desc())
        .limit(limit)
    )
    if task_id:
        query = query.where(WebhookEvent.task_id == task_id)
    with runtime.sessions() as session:
        rows = [
            {
                "id": ev.id,
                "received": ev.received_at,
                "delivery key": ev.delivery_key,
                "task": ev.task_id,
                "status": ev.status,
                "kind": ev.kind,
                "error": ev.parse_error,
                "runs": ", ".join(f"{r.listener}:{r.state}" for r in ev.runs),
            }
            for ev in session.scalars(query)
        ]
    columns = ["id", "received", "delivery key", "task", "status", "kind", "runs", "error"]
    show(columns, rows, as_json=as_json)


@click.command()
@click.option("--state", type=click.Choice([state.value for state in RunState]))
@click.option("--listener", help="only this listener's runs")
@click.option("--limit", default=50, show_default=True)
@json_option
@pass_runtime
def runs(
    runtime: Runtime, state: str | None, listener: str | None, limit: int, as_json: bool
) -> None:
    """Listener runs, newest first; `--state failed` is the dead-letter list."""
    query = select(ListenerRun).order_by(ListenerRun.id.desc()).limit(limit)
    if state:
        query = query.where(ListenerRun.state == RunState(state))
    if listener:
        query = query.where(ListenerRun.listener == listener)
    with runtime.sessions() as session:
        rows = [_run_row(run, full=as_json) for run in session.scalars(query)]
    columns = ["run", "event", "listener", "state", "attempts", "updated", "detail"]
    show(columns, rows, as_json=as_json)


def _run_row(run: ListenerRun, *, full: bool) -> dict[str, Any]:
    """A run as a row; `detail` is the last line of its error (or its result), and JSON
    carries both whole."""
    last = (run.last_error or "").strip().splitlines()[-1:]
    row: dict[str, Any] = {
        "run": run.id,
        "event": run.event_id,
        "listener": run.listener,
        "state": run.state.value,
        "attempts": run.attempts,
        "updated": run.updated_at,
        "detail": last[0] if last else ("" if run.result is None else str(run.result)),
    }
    if full:
        row.update(error=run.last_error, result=run.result, finished=run.finished_at)
    return row


@click.command("replay")
@click.argument("run_ids", nargs=-1, type=int)
@click.option(
    "--failed", "all_failed", is_flag=True, help="every failed run (narrow with the options below)"
)
@click.option("--listener", help="only this listener's runs")
@click.option("--since", type=click.DateTime(), help="only runs that ended after this (UTC)")
@pass_runtime
def replay_command(
    runtime: Runtime,
    run_ids: tuple[int, ...],
    all_failed: bool,
    listener: str | None,
    since: datetime | None,
) -> None:
    """Re-queue failed (or skipped) runs; other listeners of the event are not re-run."""
    if not run_ids and not all_failed:
        raise click.UsageError("name RUN_IDs or pass --failed")
    replayed = replay(
        runtime.engine,
        runtime.publisher,
        runtime.settings.redeliver_after,
        run_ids=run_ids,
        listener=listener,
        since=since.replace(tzinfo=UTC) if since else None,
        all_failed=all_failed,
    )
    click.echo(f"replayed {len(replayed)} run(s): {' '.join(map(str, replayed)) or '-'}")


@click.command()
@click.option("--once", is_flag=True, help="one pass, then exit")
@click.option("--interval", type=float, help="seconds between passes [RELAY_INTERVAL]")
@pass_runtime
def relay(runtime: Runtime, once: bool, interval: float | None) -> None:
    """Re-publish runs that are due (failed publishes, lost messages, dead workers)."""
    settings = runtime.settings
    if not once:
        pause = interval if interval is not None else settings.relay_interval
        run_forever(
            runtime.engine,
            runtime.publisher,
            settings.redeliver_after,
            pause,
            chores=[
                (lambda: upkeep.reconcile_quietly(runtime), settings.reconcile_interval),
                (lambda: upkeep.prune_quietly(runtime), settings.prune_interval),
            ],
        )
    try:
        published = relay_once(runtime.engine, runtime.publisher, settings.redeliver_after)
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(f"database unavailable ({type(exc).__name__})") from None
    click.echo(f"relay: published {published} run(s)")


@click.command()
@click.option("--user", "email", required=True, help="the email of the user it names")
@click.option(
    "--ttl",
    type=click.IntRange(1, tokens.MAX_TTL),
    default=tokens.DEFAULT_TTL,
    show_default=True,
    help="seconds it stays valid",
)
@pass_runtime
def token(runtime: Runtime, email: str, ttl: int) -> None:
    """Print a live-stream token naming a user (what the app mints per page view)."""
    click.echo(tokens.mint(email, runtime.settings.live_token_secrets, ttl))


COMMANDS = [
    db,
    listeners,
    events,
    runs,
    replay_command,
    relay,
    token,
]
