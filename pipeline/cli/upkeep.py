"""`pipeline` commands that keep the ledger true and small: reconciliation against
Ittybit and retention; the relay runs both on a timer too (its `chores`)."""

from __future__ import annotations

import logging
import sys

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pipeline.app.ittybit import IttybitClient
from pipeline.cli.output import show
from pipeline.prune import Cutoffs, count, old_enough, prune
from pipeline.reconcile import reconcile
from pipeline.runtime import Runtime

log = logging.getLogger(__name__)
pass_runtime = click.make_pass_decorator(Runtime)


def reconcile_quietly(runtime: Runtime) -> None:
    """The relay's periodic reconciliation: each job fed is logged by reconcile()."""
    if not runtime.settings.ittybit_api_key:
        return  # nothing can be asked (the worker refuses to start without it anyway)
    reconcile(
        runtime.engine,
        runtime.registry,
        runtime.publisher,
        IttybitClient.from_settings(runtime.settings),
        runtime.settings,
    )


@click.command("reconcile")
@click.option("--dry-run", is_flag=True, help="ask Ittybit, feed nothing")
@pass_runtime
def reconcile_command(runtime: Runtime, dry_run: bool) -> None:
    """Ask Ittybit about jobs whose webhook never came (RECONCILE_AFTER), and feed the
    ended ones through the inbox as their webhooks would have been."""
    client = IttybitClient.from_settings(runtime.settings)
    runtime.settings.require_api_key()
    report = reconcile(
        runtime.engine,
        runtime.registry,
        runtime.publisher,
        client,
        runtime.settings,
        dry_run=dry_run,
    )
    rows = [
        {"media": s.media_id, "job": s.job_id, "role": s.role.value, "outcome": said}
        for s, said in report.asked
    ]
    show(["media", "job", "role", "outcome"], rows, as_json=False)
    click.echo(f"{len(rows)} job(s) asked about; {report.count('fed')} fed", err=True)


def prune_quietly(runtime: Runtime) -> None:
    """The relay's periodic retention pass: logged, never printed."""
    settings = runtime.settings
    cutoffs = Cutoffs.of(settings.retain_succeeded_days, settings.retain_failed_days)
    done = prune(runtime.engine, cutoffs)
    if done.events:
        log.info("pruned %d event(s) and %d run(s) past retention", done.events, done.runs)


@click.command("prune")
@click.option("--dry-run", is_flag=True, help="say what would be deleted, delete nothing")
@click.option("--batch", type=click.IntRange(1, 100_000), default=500, show_default=True)
@pass_runtime
def prune_command(runtime: Runtime, dry_run: bool, batch: int) -> None:
    """Delete finished events and their runs past RETAIN_SUCCEEDED_DAYS (dead letters:
    RETAIN_FAILED_DAYS), in batches; never an event with a run still to do."""
    settings = runtime.settings
    cutoffs = Cutoffs.of(settings.retain_succeeded_days, settings.retain_failed_days)
    kept = (
        f"kept: {settings.retain_succeeded_days:g} days, "
        f"dead letters {settings.retain_failed_days:g}"
    )
    if dry_run:
        due = count(runtime.engine, cutoffs)
        click.echo(f"would delete {due.events} event(s) and {due.runs} run(s) ({kept})")
        return
    old = old_enough(runtime.engine, cutoffs)  # the bar walks these; the unfinished stay
    with Progress(
        TextColumn("pruning"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not sys.stderr.isatty() or not old,
    ) as bar:
        task = bar.add_task("events", total=old)
        done = prune(
            runtime.engine,
            cutoffs,
            batch,
            lambda so_far: bar.update(task, completed=so_far.looked_at),
        )
    click.echo(f"deleted {done.events} event(s) and {done.runs} run(s) ({kept})")


COMMANDS = [reconcile_command, prune_command]
