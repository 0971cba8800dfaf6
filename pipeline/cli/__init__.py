"""The `pipeline` command. Operating a deployment (`cli/ops.py`): db, listeners, events,
runs, replay, relay, token; keeping the ledger (`cli/upkeep.py`): reconcile, prune.
Developing against it (`cli/dev.py`): emulator, send, submit, demo."""

from __future__ import annotations

import sys
from typing import Any

import click

from pipeline import logs
from pipeline.cli import dev, ops, upkeep
from pipeline.errors import PipelineError
from pipeline.runtime import Runtime


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
    ctx.obj = Runtime.from_env()
    logs.configure(ctx.obj.settings.log_level)


for command in (*ops.COMMANDS, *upkeep.COMMANDS, *dev.COMMANDS):
    main.add_command(command)
