"""`pipeline` commands for operating a deployment: migrations, what is registered, the
ledger (events, runs), replaying dead letters, the relay, retention, and live tokens."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import selectinload

from pipeline.cli.output import json_option, show
from pipeline.errors import DatabaseUnavailable
from pipeline.live import tokens
from pipeline.migrate import upgrade
from pipeline.models import ListenerRun, RunState, WebhookEvent
from pipeline.outbox import relay_once, replay, run_forever
from pipeline.prune import Cutoffs, count, prune
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
            housekeeping=lambda: _prune_quietly(runtime),
            housekeeping_interval=settings.prune_interval,
        )
    try:
        published = relay_once(runtime.engine, runtime.publisher, settings.redeliver_after)
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(f"database unavailable ({type(exc).__name__})") from None
    click.echo(f"relay: published {published} run(s)")


@click.command("prune")
@click.option("--dry-run", is_flag=True, help="say what would be deleted, delete nothing")
@click.option("--batch", type=click.IntRange(1, 100_000), default=500, show_default=True)
@pass_runtime
def prune_command(runtime: Runtime, dry_run: bool, batch: int) -> None:
    """Delete finished events and their runs past RETAIN_SUCCEEDED_DAYS (dead letters:
    RETAIN_FAILED_DAYS), in batches; never an event with a run still to do."""
    settings = runtime.settings
    cutoffs = Cutoffs.of(settings.retain_succeeded_days, settings.retain_failed_days)
    due = count(runtime.engine, cutoffs)
    kept = (
        f"kept: {settings.retain_succeeded_days:g} days, "
        f"dead letters {settings.retain_failed_days:g}"
    )
    if dry_run:
        click.echo(f"would delete {due.events} event(s) and {due.runs} run(s) ({kept})")
        return
    with Progress(
        TextColumn("pruning"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not sys.stderr.isatty() or not due.events,
    ) as bar:
        task = bar.add_task("events", total=due.events)
        done = prune(
            runtime.engine, cutoffs, batch, lambda so_far: bar.update(task, completed=so_far.events)
        )
    click.echo(f"deleted {done.events} event(s) and {done.runs} run(s) ({kept})")


def _prune_quietly(runtime: Runtime) -> None:
    """The relay's periodic retention pass: logged, never printed."""
    settings = runtime.settings
    cutoffs = Cutoffs.of(settings.retain_succeeded_days, settings.retain_failed_days)
    done = prune(runtime.engine, cutoffs)
    if done.events:
        log.info("pruned %d event(s) and %d run(s) past retention", done.events, done.runs)


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


COMMANDS = [db, listeners, events, runs, replay_command, relay, prune_command, token]
