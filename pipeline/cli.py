"""The `pipeline` command: migrations, inspection, submission, relay and replay."""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import requests
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.serving import make_server

from pipeline import sender
from pipeline.demo import run_demo
from pipeline.emulator import EmulatorConfig, emulator_of
from pipeline.emulator import create_app as create_emulator
from pipeline.errors import ConfigError, DatabaseUnavailable, PipelineError
from pipeline.migrate import upgrade
from pipeline.models import ListenerRun, WebhookEvent
from pipeline.relay import relay_once
from pipeline.relay import replay as replay_runs
from pipeline.runtime import Runtime
from pipeline.samples import SAMPLES, SHAPES, sample
from pipeline.submit import submit_media

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
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
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
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="job option, repeatable; dotted keys nest (emulator.fail=reason)",
)
@pass_runtime
def submit(
    runtime: Runtime, input_url: str, kind: str, email: str, options: tuple[str, ...]
) -> None:
    """Create a media row and its Ittybit job, delivering to our webhook."""
    job_options: dict[str, Any] = {}
    for text in options:
        _set_option(job_options, text)
    media_id, job_id = submit_media(
        runtime.settings,
        runtime.runner.sessions,
        input_url,
        kind=kind,
        email=email,
        options=job_options,
    )
    click.echo(f"media {media_id} job {job_id}")


@main.command()
@click.option("--once", is_flag=True, help="one pass, then exit")
@click.option("--interval", type=float, help="seconds between passes [RELAY_INTERVAL]")
@pass_runtime
def relay(runtime: Runtime, once: bool, interval: float | None) -> None:
    """Re-publish runs that are due (failed publishes, lost messages, dead workers)."""
    pause = interval if interval is not None else runtime.settings.relay_interval
    while True:
        try:
            published = relay_once(
                runtime.engine, runtime.publisher, runtime.settings.redeliver_after
            )
        except SQLAlchemyError as exc:
            if once:
                raise DatabaseUnavailable(f"database unavailable ({type(exc).__name__})") from None
            # The runs wait in the database; the next pass after it is back publishes them.
            click.echo(f"relay: database unavailable ({type(exc).__name__}); trying again")
            time.sleep(pause)
            continue
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
        runtime.publisher,
        runtime.settings.redeliver_after,
        run_ids=run_ids,
        listener=listener,
        since=since.replace(tzinfo=UTC) if since else None,
        all_failed=all_failed,
    )
    click.echo(f"replayed {len(replayed)} run(s): {' '.join(map(str, replayed)) or '-'}")


def _set_option(options: dict[str, Any], text: str) -> None:
    """Apply one `KEY=VALUE`; a dotted key nests (`emulator.fail=reason`)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="--option")
    *parents, leaf = key.split(".")
    target = options
    for part in parents:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise click.BadParameter(f"{key!r} nests under a plain value", param_hint="--option")
    value: Any = raw
    for convert in (int, float):
        try:
            value = convert(raw)
            break
        except ValueError:
            pass
    target[leaf] = value


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


# --- a local Ittybit and a webhook sender ----------------------------------------------------

DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8000/webhooks/ittybit"


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, help="0 picks a free port")
@click.option("--api-key", help="the only Bearer key accepted [ITTYBIT_API_KEY; unset: any]")
@click.option("--secret", help="signs deliveries [ITTYBIT_WEBHOOK_SECRET, its first secret]")
@click.option("--shape", type=click.Choice(SHAPES), default="B", show_default=True)
@click.option(
    "--delay", type=float, default=1.0, show_default=True, help="seconds from queued to done"
)
@click.option("--processing-webhook", is_flag=True, help="also deliver the processing status")
@click.option(
    "--retry-base", type=float, default=0.2, show_default=True, help="first retry pause, doubling"
)
@click.option("--max-attempts", type=int, default=6, show_default=True, help="per delivery")
@pass_runtime
def emulator(
    runtime: Runtime,
    host: str,
    port: int,
    api_key: str | None,
    secret: str | None,
    shape: str,
    delay: float,
    processing_webhook: bool,
    retry_base: float,
    max_attempts: int,
) -> None:
    """A local Ittybit: POST/GET /jobs, signed webhooks, failures on demand.

    \b
    A job that fails:       options {"emulator": {"fail": "reason"}}
    Deliveries that fail:   options {"emulator": {"delivery_failures": N}}
                            (N simulated network errors, then retried until it lands)
    Per-job shape / delay:  options {"emulator": {"shape": "C", "delay": 0.5}}
    API errors on demand:   POST /_emulator/faults {"status": 500, "count": 2}
                            also 429 (+ Retry-After), 400, "hang": seconds,
                            "apply": true (done, but the answer is lost)
    The next jobs fail:     POST /_emulator/faults {"fail_jobs": 1, "error": "reason"}
    Logs and reset:         GET /_emulator/requests, GET /_emulator/deliveries,
                            GET /_emulator/jobs, POST /_emulator/reset
    """
    signing = secret or next(iter(runtime.settings.webhook_secrets), "")
    if not signing:
        raise click.UsageError("no signing secret: pass --secret or set ITTYBIT_WEBHOOK_SECRET")
    config = EmulatorConfig(
        secret=signing,
        api_key=api_key or runtime.settings.ittybit_api_key or None,
        shape=shape,
        delay=delay,
        processing_webhook=processing_webhook,
        retry_base=retry_base,
        max_attempts=max_attempts,
    )
    app = create_emulator(config)
    server = make_server(host, port, app, threaded=True)
    click.echo(f"Ittybit emulator on http://{host}:{server.port} (ITTYBIT_API_URL)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        emulator_of(app).close()


@main.command()
@click.argument("url", default=DEFAULT_WEBHOOK_URL)
@click.option("--sample", "sample_name", type=click.Choice(list(SAMPLES)), help="[video.succeeded]")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="send this file byte for byte",
)
@click.option("--shape", type=click.Choice(SHAPES), default="B", show_default=True)
@click.option("--secret", help="signing secret [ITTYBIT_WEBHOOK_SECRET, its first secret]")
@click.option("--task-id", help="the sample's task id [a new one each time]")
@click.option("--media-id", type=int, help="the sample's metadata.media_id")
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="K:V",
    help="extra header, repeatable; overrides ours (e.g. Ittybit-Signature:wrong)",
)
@click.option("--timeout", type=float, default=10.0, show_default=True)
@click.option("--list", "list_samples", is_flag=True, help="list the samples and exit")
@pass_runtime
def send(
    runtime: Runtime,
    url: str,
    sample_name: str | None,
    path: Path | None,
    shape: str,
    secret: str | None,
    task_id: str | None,
    media_id: int | None,
    headers: tuple[str, ...],
    timeout: float,
    list_samples: bool,
) -> None:
    """Sign and POST a webhook to URL, like `stripe trigger`, and print the answer.

    URL defaults to http://127.0.0.1:8000/webhooks/ittybit; exit status 1 unless the
    answer is 2xx.
    """
    if list_samples:
        for name, (description, _) in SAMPLES.items():
            click.echo(f"{name:<22}{description}")
        click.echo(f"shapes: {', '.join(SHAPES)} (--shape)")
        return
    if path and (sample_name or task_id or media_id is not None):
        raise click.UsageError("--file is sent as it is: no --sample, --task-id or --media-id")
    signing = secret or next(iter(runtime.settings.webhook_secrets), "")
    if not signing:
        raise click.UsageError("no signing secret: pass --secret or set ITTYBIT_WEBHOOK_SECRET")
    if path:
        body, what = path.read_bytes(), f"file {path}"
    else:
        name, task = sample_name or "video.succeeded", task_id or f"task_{secrets.token_hex(6)}"
        payload = sample(
            name, shape, task_id=task, now_ms=int(time.time() * 1000), media_id=media_id
        )
        body, what = sender.encode(payload), f"{name}, shape {shape}, task {task}"
    extra = dict(_parse_header(h) for h in headers)
    click.echo(f"POST {url} ({what}, {len(body)} bytes)")
    try:
        response = sender.post(url, body, signing, headers=extra, timeout=timeout)
    except requests.RequestException as exc:
        raise click.ClickException(f"no answer from {url}: {type(exc).__name__}") from None
    click.echo(f"{response.status_code} {response.reason}")
    click.echo(response.text)
    if not 200 <= response.status_code < 300:
        sys.exit(1)


def _parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise click.BadParameter(f"{text!r} is not NAME:VALUE", param_hint="--header")
    return name.strip(), value.strip()


# --- the demo and Flower -------------------------------------------------------------------


@main.command()
@click.option("--dir", "workdir", default="var/demo", show_default=True, type=click.Path())
@click.option("--timeout", default=60.0, show_default=True, help="seconds to wait for the cycle")
def demo(workdir: str, timeout: float) -> None:
    """The whole cycle on embedded defaults: emulator, web, worker, relay as real processes."""
    if not run_demo(Path(workdir).resolve(), console, timeout=timeout):
        sys.exit(1)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(flower_args: tuple[str, ...]) -> None:
    """Celery Flower for this pipeline; refuses to start without FLOWER_BASIC_AUTH."""
    auth = os.environ.get("FLOWER_BASIC_AUTH", "")
    if ":" not in auth:
        raise ConfigError("FLOWER_BASIC_AUTH is not set (user:password): Flower never runs open")
    celery = Path(sys.executable).parent / "celery"
    options = _tornado_options(flower_args)
    argv = [str(celery), "-A", "pipeline.worker", "flower", f"--basic-auth={auth}", *options]
    os.execv(argv[0], argv)


def _tornado_options(args: tuple[str, ...]) -> list[str]:
    """Flower parses its options with tornado, which only reads `--port=5555`: join the
    `--port 5555` form everyone types (tornado would stop with "requires a value")."""
    joined: list[str] = []
    for arg in args:
        last = joined[-1] if joined else ""
        if last.startswith("--") and "=" not in last and not arg.startswith("-"):
            joined[-1] = f"{last}={arg}"
        else:
            joined.append(arg)
    return joined
