"""gunicorn's settings for `web` (the Procfile: `gunicorn -c gunicorn.conf.py ...`).

Binds $PORT on every interface when it is set (gunicorn's own default), else
127.0.0.1:8000; `GUNICORN_CMD_ARGS` overrides anything here (the tests bind loopback).
"""

import os
import sys
import traceback

from pipeline import logs
from pipeline.errors import ConfigError
from pipeline.settings import Settings

# Sync workers: each request is a short CPU and database job (its publish runs after the
# answer is sent). They wait on the database's commit, so more than one per core. Ours
# hands each live stream to a thread of its process instead of holding it
# (pipeline/live/worker.py), so streams never take a worker from the webhooks.
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = "pipeline.live.worker.StreamingSyncWorker"
timeout = 30
graceful_timeout = 20  # below the 30 s a platform waits after SIGTERM before SIGKILL
# gunicorn's control socket has one default path per user: two gunicorns on one host
# (tests, a blue/green deploy) would take it from each other.
control_socket_disable = True
# No access log (gunicorn's default): the app logs every webhook with its event id, and a
# platform's router logs every request. `GUNICORN_CMD_ARGS=--access-logfile=-` adds one.


def on_starting(server: object) -> None:
    """In the master, before any worker: our log format, and the configuration checked
    once (a missing secret, a listener module that cannot be imported), so a problem
    stops the web here with one line instead of failing every worker's boot. The app is
    built in a forked child, so the master does not carry what the app imports."""
    try:
        _log_like_the_pipeline(Settings.from_env().log_level)
    except ConfigError as exc:
        sys.exit(f"error: {exc.message}")
    child = os.fork()
    if child == 0:
        os._exit(_app_builds())
    _, status = os.waitpid(child, 0)
    if status:
        sys.exit(1)  # the child said why


def _app_builds() -> int:
    from pipeline.web import create_app

    try:
        create_app(Settings.from_env())
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def post_worker_init(worker: object) -> None:
    _log_like_the_pipeline(os.environ.get("LOG_LEVEL") or "INFO")


def worker_exit(server: object, worker: object) -> None:
    """End the streams this worker holds (their browsers reconnect to another at once),
    and store the worker's last counts (pipeline/metrics/tally.py)."""
    from pipeline.metrics.tally import TALLY

    TALLY.flush()
    app = getattr(worker, "wsgi", None)
    live = getattr(app, "extensions", {}).get("pipeline.live")
    if live is not None and "hub" in live.__dict__:
        live.hub.close()


def _log_like_the_pipeline(level: str) -> None:
    logs.configure(level.upper())
    logs.adopt("gunicorn.error")
