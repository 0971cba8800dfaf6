"""`pipeline` commands for developing against a pipeline: a local Ittybit (emulator), a
webhook sender (send), submitting media, and the demo."""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path
from typing import Any

import click
import requests
from rich.console import Console
from werkzeug.serving import make_server

from pipeline.app.submit import submit_media
from pipeline.cli.ops import pass_runtime
from pipeline.dev import sender
from pipeline.dev.demo import run_demo
from pipeline.dev.emulator import EmulatorConfig, emulator_of
from pipeline.dev.emulator import create_app as create_emulator
from pipeline.dev.samples import SAMPLES, SHAPES, sample
from pipeline.runtime import Runtime


@click.command()
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
        runtime.sessions,
        input_url,
        kind=kind,
        email=email,
        options=job_options,
    )
    click.echo(f"media {media_id} job {job_id}")


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


DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8000/webhooks/ittybit"


@click.command()
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


@click.command()
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


@click.command()
@click.option("--dir", "workdir", default="var/demo", show_default=True, type=click.Path())
@click.option("--timeout", default=60.0, show_default=True, help="seconds to wait for the cycle")
@click.option("--serve", is_flag=True, help="then keep serving, to watch a job finish live")
def demo(workdir: str, timeout: float, serve: bool) -> None:
    """The whole cycle on embedded defaults: emulator, web, worker, relay as real processes."""
    if not run_demo(Path(workdir).resolve(), Console(), timeout=timeout, serve=serve):
        sys.exit(1)


COMMANDS = [emulator, send, submit, demo]
